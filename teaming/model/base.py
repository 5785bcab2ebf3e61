"""The model seam: what the service, teams, reports and policies need of any model, whoever trained it.

A model has classes, an input contract, a version and `outputs(images)`: calibrated probabilities, penultimate
features where it exposes them, and an unfamiliarity score where it has a guard. Our own nets
(`teaming.model.artifact`) and graphs imported from ONNX or TorchScript (`teaming.model.imported`) implement it;
`teaming.model.loader.load_model` picks the implementation from model.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from teaming.model.meta import ModelMeta
from teaming.preprocess import InputContract


@dataclass
class Outputs:
    """What the model says of a batch of images: what policies decide on."""

    probs: np.ndarray
    features: np.ndarray | None
    unfamiliarity: np.ndarray | None


@runtime_checkable
class Model(Protocol):
    """Any classifier teaming can calibrate, guard, fit a policy for and serve."""

    meta: ModelMeta
    directory: Path | None

    @property
    def classes(self) -> list[str]: ...

    @property
    def contract(self) -> InputContract: ...

    @property
    def version(self) -> str: ...

    @property
    def backend(self) -> str:
        """How it runs now (one of its kind's backends)."""
        ...

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Uncalibrated class scores for uint8 N x 3 x H x W images (shaped by the input contract)."""
        ...

    def outputs(self, images: torch.Tensor) -> Outputs:
        """Calibrated probabilities, features (or None) and unfamiliarity (or None) in one pass."""
        ...

    def use(self, backend: str, checked: bool = True) -> "Model":
        """Run with `backend`; with `checked`, a reduced-precision one must have passed its check against fp32."""
        ...

    def warm_up(self) -> None:
        """Run once at the input size (set-up cost is not a caller's)."""
        ...


def outputs_in_chunks(model: Model, images: torch.Tensor, desc: str | None = None, chunk: int = 512) -> Outputs:
    """`model.outputs` over many images a chunk at a time, with a progress bar named `desc` on a terminal."""
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(images), desc=desc, unit="img", disable=None if desc else True) as bar:
        for c in images.split(chunk):
            parts.append(model.outputs(c))
            bar.update(len(c))
    if not parts:
        return model.outputs(images)

    def cat(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        return None if arrays[0] is None else np.concatenate(arrays)

    return Outputs(cat("probs"), cat("features"), cat("unfamiliarity"))
