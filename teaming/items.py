"""Item selections: positions into an image set as the command line names them ('7000:10000', 'I,J,K'), and the
runs of positions that model.json and policy files record. No torch: policies and reports read these."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from teaming._validation import DataError


def parse_items(spec: str | None, n: int) -> np.ndarray:
    """Positions into a set of n items: 'START:STOP' (a slice), 'I,J,K', or None / 'all' for every item."""
    if spec is None or spec in ("", "all"):
        return np.arange(n)
    try:
        if ":" in spec:
            a, b = (int(x) if x else None for x in spec.split(":"))
            idx = np.arange(n)[slice(a, b)]
        else:
            idx = np.array([int(x) for x in spec.split(",")])
    except ValueError:
        raise DataError(f"items {spec!r} must look like 'START:STOP' or 'I,J,K'") from None
    if len(idx) == 0 or idx.min() < 0 or idx.max() >= n:
        raise DataError(f"items {spec!r} select nothing valid among {n} images")
    return idx


def item_runs(positions: Sequence[int] | np.ndarray) -> list[list[int]]:
    """Positions as sorted inclusive [first, last] runs: how artifacts and policies record the items they saw."""
    pos = np.unique(np.asarray(positions, dtype=np.int64))
    if not len(pos):
        return []
    breaks = np.flatnonzero(np.diff(pos) != 1)
    starts, ends = np.r_[pos[0], pos[breaks + 1]], np.r_[pos[breaks], pos[-1]]
    return [[int(a), int(b)] for a, b in zip(starts, ends)]


def run_positions(runs: Sequence[Sequence[int]] | None) -> np.ndarray:
    """The positions of `item_runs` output (empty for None)."""
    return np.concatenate([np.arange(a, b + 1) for a, b in runs]) if runs else np.zeros(0, np.int64)
