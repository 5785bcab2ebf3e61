"""Model artifacts: a folder with safetensors weights, model.json and MODEL_CARD.md, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from teaming.calibration import softmax
from teaming.data import resize
from teaming.nets import build_net
from teaming.predict import predict_logits

WEIGHTS = "model.safetensors"
META = "model.json"
CARD = "MODEL_CARD.md"


@dataclass
class ModelMeta:
    """Everything needed to rebuild, run and judge a model; stored as model.json."""

    name: str
    classes: list[str]
    arch: str
    input_size: int
    widths: list[int] | None = None
    normalization: dict = field(default_factory=dict)
    temperature: float = 1.0
    tta: bool = False
    data: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    library_version: str = ""
    created: str = ""


@dataclass
class Artifact:
    """A net with its metadata and figures (PNG bytes by file name, e.g. the held-out reliability diagram)."""

    net: nn.Module
    meta: ModelMeta
    figures: dict[str, bytes] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return self.meta.classes

    def logits(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Uncalibrated logits for uint8 images of any size (resized to the model's input)."""
        return predict_logits(self.net, resize(images, self.meta.input_size), batch_size, tta=self.meta.tta)

    def predict_proba(self, images: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
        """Calibrated class probabilities (temperature applied)."""
        return softmax(self.logits(images, batch_size), self.meta.temperature)

    def to(self, device: str | torch.device) -> "Artifact":
        self.net.to(device)
        return self


def save_artifact(artifact: Artifact, directory: str | Path, card: str | None = None) -> Path:
    """Write weights, model.json, the card and the figures to a temporary folder, then move it into place.

    An interrupted save leaves the previous artifact (or nothing) behind, never a half-written one.
    """
    from teaming import __version__
    from teaming.card import model_card

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    meta = artifact.meta
    meta.library_version = __version__
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in artifact.net.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"name": meta.name, "arch": meta.arch})
        (tmp / META).write_text(json.dumps(asdict(meta), indent=2, sort_keys=False) + "\n")
        for name, content in artifact.figures.items():
            (tmp / name).write_bytes(content)
        (tmp / CARD).write_text(card if card is not None else model_card(meta, figures=sorted(artifact.figures)))
        umask = os.umask(0)
        os.umask(umask)
        for path in (tmp, *tmp.iterdir()):  # mkdtemp makes 0700; artifacts are meant to be shared
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        old = None
        if directory.exists():
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


def load_artifact(directory: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Rebuild the net from model.json and load its weights; raises FileNotFoundError with the missing file."""
    directory = Path(directory)
    for f in (WEIGHTS, META):
        if not (directory / f).exists():
            raise FileNotFoundError(f"{directory} is not a model artifact: {f} is missing")
    raw = json.loads((directory / META).read_text())
    known = set(ModelMeta.__dataclass_fields__)
    meta = ModelMeta(**{k: v for k, v in raw.items() if k in known})
    net = build_net(meta.arch, len(meta.classes), meta.input_size, meta.widths)
    net.load_state_dict(load_file(str(directory / WEIGHTS)))
    net.eval().to(device)
    figures = {p.name: p.read_bytes() for p in sorted(directory.glob("*.png"))}
    return Artifact(net, meta, figures)
