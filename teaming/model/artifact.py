"""Our nets as model artifacts: a folder with safetensors weights, model.json, figures, the familiarity guard and
MODEL_CARD.md, written atomically; one implementation of the model seam (`teaming.model.base.Model`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from teaming import __version__
from teaming.model.base import Outputs
from teaming.model.calibration import softmax
from teaming.model.card import model_card
from teaming.model.familiarity import GUARD_FILE, FamiliarityGuard, load_guard, save_guard
from teaming.model.meta import CARD, META, ModelMeta, load_meta
from teaming.model.nets import build_net
from teaming.model.runtime import REDUCED, Runtime, failed_check, passed
from teaming.preprocess import InputContract, conform

WEIGHTS = "model.safetensors"


@dataclass
class Artifact:
    """A net with its metadata, figures (PNG bytes by file name, e.g. the held-out reliability diagram) and the
    familiarity guard fitted on its training features (None for artifacts from before the guard)."""

    net: nn.Module
    meta: ModelMeta
    figures: dict[str, bytes] = field(default_factory=dict)
    guard: FamiliarityGuard | None = None
    runtime: Runtime | None = field(default=None, repr=False)  # how it predicts: eager fp32 until `use`
    directory: Path | None = None

    def use(self, backend: str, checked: bool = True) -> "Artifact":
        """Predict with `backend` (teaming.model.runtime.BACKENDS). With `checked`, a reduced-precision backend
        must have passed its check against fp32 (`teaming export`), recorded in model.json."""
        device = next(self.net.parameters()).device
        if checked and backend in REDUCED and not passed(self.meta.backends.get(backend), device):
            raise ValueError(f"backend {backend} {failed_check(self.meta.backends.get(backend), device)}")
        self.runtime = Runtime(self.net, self.meta.tta, backend, self.directory)
        return self

    @property
    def backend(self) -> str:
        return self.runtime.backend if self.runtime is not None else "eager"

    @property
    def classes(self) -> list[str]:
        return self.meta.classes

    @property
    def contract(self) -> InputContract:
        return self.meta.contract

    @property
    def version(self) -> str:
        return self.meta.version

    def warm_up(self) -> None:
        if self.runtime is None:
            self.use("eager")
        self.runtime.warm_up(self.meta.input_size)

    def _outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.runtime is None:  # fp32 on any device (training's predict_outputs autocasts on GPUs)
            self.use("eager")
        return self.runtime(conform(images, self.contract))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits for uint8 images of any size (resized to the model's input)."""
        return self._outputs(images)[0]

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        """Calibrated class probabilities (temperature applied)."""
        return softmax(self.logits(images), self.meta.temperature)

    def outputs(self, images: torch.Tensor) -> Outputs:
        """Calibrated probabilities, penultimate features and unfamiliarity (None without a guard), in one pass."""
        logits, features = self._outputs(images)
        unfamiliarity = None if self.guard is None else self.guard.score(features)
        return Outputs(softmax(logits, self.meta.temperature), features.numpy(), unfamiliarity)

    def to(self, device: str | torch.device) -> "Artifact":
        """Move the net, and rebuild its backend there (a folded or compiled copy stays where it was built)."""
        self.net.to(device)
        if self.runtime is not None:
            self.use(self.runtime.backend, checked=False)
        return self


def save_artifact(
    artifact: Artifact, directory: str | Path, card: str | None = None, files: dict[str, bytes | Path] | None = None
) -> Path:
    """Write weights (a net's) or the graph and any other `files` (an imported model's, by name: bytes, or a file
    to copy), the guard, model.json, the card and the figures to a temporary folder, then move it into place.

    An interrupted save leaves the previous artifact (or nothing) behind, never a half-written one. Other files in
    the folder (a policy.json) are kept.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    meta = artifact.meta
    meta.library_version = __version__
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        if getattr(artifact, "net", None) is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in artifact.net.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS), metadata={"name": meta.name, "arch": meta.arch or meta.kind})
        for name, content in (files or {}).items():
            if isinstance(content, bytes):
                (tmp / name).write_bytes(content)
            else:
                shutil.copyfile(content, tmp / name)
        if artifact.guard is not None:
            save_guard(artifact.guard, tmp / GUARD_FILE)
        for name, content in artifact.figures.items():
            (tmp / name).write_bytes(content)
        for name, text in _meta_texts(artifact, card).items():
            (tmp / name).write_text(text)
        umask = os.umask(0)
        os.umask(umask)
        for path in (tmp, *tmp.iterdir()):  # mkdtemp makes 0700; artifacts are meant to be shared
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        old = None
        if directory.exists():
            for path in directory.iterdir():  # what the artifact does not write (a policy.json) stays
                if path.is_file() and not (tmp / path.name).exists():
                    shutil.copy2(path, tmp / path.name)
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _meta_texts(artifact: Artifact, card: str | None = None) -> dict[str, str]:
    """model.json and the card (rendered from the same metadata unless given), by file name."""
    meta = artifact.meta
    meta.guard = None if artifact.guard is None else artifact.guard.kind
    if card is None:
        card = model_card(meta, figures=sorted(artifact.figures), guard=artifact.guard is not None)
    return {META: meta.to_json(), CARD: card}


def save_meta(artifact: Artifact, directory: str | Path) -> None:
    """Rewrite only model.json and the card (each replaced atomically): new facts about the same weights."""
    directory = Path(directory)
    for name, text in _meta_texts(artifact).items():
        tmp = directory / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, directory / name)


def load_artifact(directory: str | Path, device: str | torch.device = "cpu", backend: str | None = None) -> Artifact:
    """Rebuild the net from model.json and load its weights (raises FileNotFoundError with the missing file);
    `backend` (see `Artifact.use`) sets how it predicts, eager fp32 by default."""
    directory = Path(directory)
    meta = load_meta(directory)
    if meta.kind != "teaming":
        raise ValueError(f"{directory} holds an imported {meta.kind} graph, not a net teaming trained (load_model)")
    if not (directory / WEIGHTS).exists():
        raise FileNotFoundError(f"{directory} is not a model artifact: {WEIGHTS} is missing")
    net = build_net(meta.arch, len(meta.classes), meta.input_size, meta.widths)
    net.load_state_dict(load_file(str(directory / WEIGHTS)))
    net.eval().to(device)
    figures = {p.name: p.read_bytes() for p in sorted(directory.glob("*.png"))}
    guard = load_guard(directory / GUARD_FILE) if (directory / GUARD_FILE).exists() else None
    art = Artifact(net, meta, figures, guard, directory=directory)
    return art.use(backend) if backend else art
