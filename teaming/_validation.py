"""The library's errors and the input checks every layer shares (the bottom of the import graph).

Every error the library raises on purpose is a `TeamingError`, so a caller (the CLI, the service) can catch
one type; its message names the problem and what to change.
"""

from __future__ import annotations

import numpy as np


class TeamingError(ValueError):
    """Input the library cannot use; the message says what to change."""


class InputError(TeamingError):
    """Arrays or settings of the wrong shape, range or type."""


class DataError(TeamingError):
    """Data that cannot be used (a file, an image, a label); the message names the item and the problem."""


class ModelError(TeamingError):
    """A model file or graph that cannot be read or run as its contract says."""


class PolicyError(TeamingError):
    """A deferral policy that cannot be fitted, applied or loaded as asked."""


def check_probs(probs: np.ndarray, name: str = "probs") -> np.ndarray:
    """Class probabilities (N x C, or K x N x C from K models) as float64: finite, in [0, 1], rows summing to 1."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim not in (2, 3) or p.shape[-1] < 2 or p.shape[-2] == 0:
        raise InputError(f"{name} must be N x C (or K models x N x C) with C >= 2 and N >= 1, got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise InputError(f"{name} contain NaN or infinite values")
    if p.min() < 0 or p.max() > 1 + 1e-6:
        raise InputError(f"{name} must lie in [0, 1]; got values from {p.min():.3g} to {p.max():.3g}")
    sums = p.sum(-1)
    bad = np.abs(sums - 1) > 1e-3
    if bad.any():
        raise InputError(
            f"{name} rows must sum to 1 (softmax outputs); {int(bad.sum())} rows sum to e.g. {sums[bad].flat[0]:.4f}"
        )
    return p


def check_labels(labels: np.ndarray, n: int, num_classes: int, name: str) -> np.ndarray:
    """Integer class ids as int64: one per item (or N x k reviewers), each in 0..C-1."""
    a = np.asarray(labels)
    if a.ndim not in (1, 2) or len(a) != n:
        raise InputError(f"{name} must have one entry per item ({n}), got shape {a.shape}")
    if a.size == 0:
        raise InputError(f"{name} is empty")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise InputError(f"{name} must be integer class ids (found NaN or fractions)")
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise InputError(f"{name} must be integer class ids, got {a.dtype}")
    bad = (a < 0) | (a >= num_classes)
    if bad.any():
        raise InputError(f"{name} holds label {int(a[bad].flat[0])}, outside the classes 0..{num_classes - 1}")
    return a.astype(np.int64)
