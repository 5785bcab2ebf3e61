"""Model artifacts: a folder with safetensors weights, model.json, figures and MODEL_CARD.md, written atomically.

The model card is rendered here from the same metadata that model.json stores, so the two never disagree.
"""

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

from teaming import __version__
from teaming.data import resize, run_positions
from teaming.model.calibration import softmax
from teaming.model.familiarity import FamiliarityGuard
from teaming.model.nets import build_net
from teaming.model.runtime import REDUCED, Runtime, failed_check, passed

WEIGHTS = "model.safetensors"
GUARD = "familiarity.safetensors"
RENAMED_METRICS = {"human_majority_accuracy": "accuracy_vs_majority"}  # model.json files before 0.2
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
    backends: dict = field(default_factory=dict)  # backend -> its check against fp32 (`teaming export`)
    library_version: str = ""
    created: str = ""

    @property
    def version(self) -> str:
        """'name@created': what decisions, policies and the service call this model."""
        return f"{self.name}@{self.created}"

    def used_positions(self) -> np.ndarray:
        """Positions in its own image set the model was trained or calibrated on (empty when not recorded)."""
        return run_positions(self.data.get("used_positions"))


@dataclass
class Outputs:
    """What the model says of a batch of images: what policies decide on."""

    probs: np.ndarray
    features: np.ndarray
    unfamiliarity: np.ndarray | None


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

    def _outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.runtime is None:  # fp32 on any device (training's predict_outputs autocasts on GPUs)
            self.use("eager")
        return self.runtime(resize(images, self.meta.input_size))

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


def save_artifact(artifact: Artifact, directory: str | Path, card: str | None = None) -> Path:
    """Write weights, model.json, the card and the figures to a temporary folder, then move it into place.

    An interrupted save leaves the previous artifact (or nothing) behind, never a half-written one. Other files in
    the folder (a policy.json) are kept.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    meta = artifact.meta
    meta.library_version = __version__
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in artifact.net.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"name": meta.name, "arch": meta.arch})
        if artifact.guard is not None:
            save_file(artifact.guard.tensors(), str(tmp / GUARD))
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
    if card is None:
        card = model_card(meta, figures=sorted(artifact.figures), guard=artifact.guard is not None)
    return {META: json.dumps(asdict(meta), indent=2, sort_keys=False) + "\n", CARD: card}


def save_meta(artifact: Artifact, directory: str | Path) -> None:
    """Rewrite only model.json and the card (each replaced atomically): new facts about the same weights."""
    directory = Path(directory)
    for name, text in _meta_texts(artifact).items():
        tmp = directory / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, directory / name)


def load_meta(directory: str | Path) -> ModelMeta:
    """An artifact's model.json alone (no weights): what it is, its classes, its version."""
    path = Path(directory) / META
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a model artifact: {META} is missing")
    raw = json.loads(path.read_text())
    known = set(ModelMeta.__dataclass_fields__)
    for evaluation in raw.get("metrics", {}).values():
        for old, new in RENAMED_METRICS.items():
            if old in evaluation:
                evaluation[new] = evaluation.pop(old)
    return ModelMeta(**{k: v for k, v in raw.items() if k in known})


def load_artifact(directory: str | Path, device: str | torch.device = "cpu", backend: str | None = None) -> Artifact:
    """Rebuild the net from model.json and load its weights (raises FileNotFoundError with the missing file);
    `backend` (see `Artifact.use`) sets how it predicts, eager fp32 by default."""
    directory = Path(directory)
    for f in (WEIGHTS, META):
        if not (directory / f).exists():
            raise FileNotFoundError(f"{directory} is not a model artifact: {f} is missing")
    meta = load_meta(directory)
    net = build_net(meta.arch, len(meta.classes), meta.input_size, meta.widths)
    net.load_state_dict(load_file(str(directory / WEIGHTS)))
    net.eval().to(device)
    figures = {p.name: p.read_bytes() for p in sorted(directory.glob("*.png"))}
    guard = FamiliarityGuard.from_tensors(load_file(str(directory / GUARD))) if (directory / GUARD).exists() else None
    art = Artifact(net, meta, figures, guard, directory=directory)
    return art.use(backend) if backend else art


METRIC_NAMES = {
    "accuracy": "Accuracy (CIFAR-10 labels)",
    "accuracy_vs_majority": "Accuracy against the human majority label",
    "human_ce": "Cross-entropy to human labels (nats)",
    "nll": "NLL of the hard label (nats)",
    "ece": "ECE (15 bins)",
    "second_best_accuracy": "Second-best accuracy",
    "multilabel_accuracy": "Multi-label accuracy",
    "fgsm_accuracy": "FGSM accuracy (l_inf 4/255)",
    "fgsm_loss": "FGSM loss (l_inf 4/255)",
}


def metrics_table(metrics: dict[str, dict]) -> str:
    """A Markdown table, one column per evaluation (e.g. before/after temperature)."""
    cols = list(metrics)
    keys = [k for k in METRIC_NAMES if any(k in metrics[c] for c in cols)]
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for k in keys:
        vals = [f"{metrics[c][k]:.4f}" if k in metrics[c] else "" for c in cols]
        lines.append(f"| {METRIC_NAMES[k]} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def backends_table(backends: dict[str, dict]) -> str:
    """How each inference backend compares with eager fp32 (`teaming export`): the service serves only those
    that passed."""
    lines = [
        "| backend | top-1 same as fp32 | accuracy (change) | ECE (change) "
        "| policy decisions same | images/s | on | passed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in backends.items():
        same = f"{r['policy_decision_agreement']:.2%}" if "policy_decision_agreement" in r else "-"
        lines.append(
            f"| {name} | {r['top1_agreement']:.2%} | {r['accuracy']:.2%} ({100 * r['accuracy_change']:+.2f}) "
            f"| {r['ece']:.2%} ({100 * r['ece_change']:+.2f}) | {same} | {r['images_per_second']:.0f} "
            f"| {r.get('machine', '?')} | {'yes' if r['passed'] else 'no: ' + '; '.join(r.get('failed', []))} |"
        )
    first = next(iter(backends.values()))
    lines += ["", f"Checked on {first.get('checked_on', 'held-out items')}."]
    return "\n".join(lines)


def model_card(meta: ModelMeta, figures: list[str] | None = None, guard: bool = False) -> str:
    data, train = meta.data, meta.training
    held = data.get("held_out_items")
    parts = [
        f"# Model card: {meta.name}",
        "",
        f"{meta.arch} image classifier over {len(meta.classes)} classes ({', '.join(meta.classes)}), "
        f"input {meta.input_size}x{meta.input_size} RGB, calibrated by temperature scaling "
        f"(T = {meta.temperature:.4f}){', mirror test-time augmentation' if meta.tta else ''}.",
        "",
        "## Training",
        "",
    ]
    for stage in train.get("stages", []):
        parts.append(f"- **{stage['name']}**: {stage['description']}; {stage['seconds']:.0f} s on {stage['device']}.")
    if train.get("command"):
        earlier, start = [], train.get("init") or {}
        while start.get("command"):
            earlier.insert(0, f"`{start['command']}` builds the starting model {start['name']}; then ")
            start = start.get("init") or {}
        parts += ["", f"Reproduce: {''.join(earlier)}`{train['command']}`"]
    if train.get("hardware_note"):
        parts += ["", train["hardware_note"]]
    parts += [
        "",
        "## Data and splits",
        "",
        f"- Images: {data.get('images', 'unknown')}",
        f"- Human labels: {data.get('labels', 'unknown')}",
        f"- Training items: {data.get('train_items', 'unknown')}",
        f"- Temperature fitted on: {data.get('calibration_items', 'unknown')}",
    ]
    if held:
        parts.append(
            f"- **Held out**: {held}. Never seen in training or calibration; "
            "keep them for policy fitting and evaluation."
        )
    if meta.metrics:
        parts += ["", f"## Metrics on {data.get('eval_items', 'the held-out items')}", "", metrics_table(meta.metrics)]
    if meta.backends:
        parts += ["", "## Backends", "", backends_table(meta.backends)]
    for fig in figures or []:
        parts += ["", f"![{fig}]({fig})"]
    parts += [
        "",
        "## Intended use and limits",
        "",
        "Answers automatically only where its calibrated confidence clears a fitted deferral policy; the rest goes",
        "to people. It was trained on small natural images; confidences on other kinds of images are not calibrated.",
        *(
            [
                "",
                "A familiarity guard (`familiarity.safetensors`, fitted on the training features) scores how",
                "unlike its training images an image is; policies defer images past their limit as `unfamiliar`.",
                "EXPERIMENTS.md reports how many unfamiliar and shifted images it catches.",
            ]
            if guard
            else []
        ),
        "",
        f"teaming {meta.library_version}, created {meta.created}.",
        "",
    ]
    return "\n".join(parts)
