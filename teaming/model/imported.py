"""Graphs trained elsewhere, run as teaming models: ONNX through ONNX Runtime, TorchScript through torch.jit.

A `GraphModel` is the model seam's second implementation. Its graph takes the float tensor its input contract
makes and gives class scores (logits, or probabilities turned back into logits), and optionally penultimate
features for the familiarity guard. Backends: the graph as given (the fp32 reference), and an int8 copy
(ONNX) or bfloat16 autocast (TorchScript), each served only after its check against the reference passed.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from teaming._validation import ModelError
from teaming.model.base import Outputs
from teaming.model.calibration import softmax
from teaming.model.familiarity import GUARD_FILE, Guard, load_guard
from teaming.model.meta import GraphSpec, ModelMeta, load_meta
from teaming.model.runtime import failed_check, onnx_session, passed
from teaming.preprocess import conform, to_input

GRAPH_FILES = {"onnx": "model.onnx", "torchscript": "model.ts"}
INT8_FILE = "model.int8.onnx"
BACKENDS_OF = {"onnx": ("onnx", "onnx-int8"), "torchscript": ("torchscript", "torchscript-bf16")}
SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}


def graph_kind(path: Path) -> str:
    """'onnx' or 'torchscript' from a model file's suffix; ModelError for anything else."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ModelError(f"{path.name}: a model file is .onnx (ONNX) or .pt / .ts (TorchScript)")
    return kind


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(err: BaseException) -> str:
    """An error's first sentence, for a one-line refusal."""
    text = str(err).strip().splitlines()
    return text[0].split(". ")[0][:200] if text else type(err).__name__


class OnnxRunner:
    """An ONNX graph in ONNX Runtime on the CPU: float N x 3 x S x S in, (scores, features or None) out."""

    def __init__(self, path: Path, spec: GraphSpec) -> None:
        try:
            self.session = onnx_session(path)
        except ImportError:
            raise ModelError("ONNX graphs run in ONNX Runtime: pip install -e '.[onnx]' in this checkout") from None
        except Exception as err:  # onnxruntime raises its own exception types for files it cannot read
            raise ModelError(f"{path.name} is not an ONNX graph ONNX Runtime can load: {_first_line(err)}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise ModelError(f"{path.name} takes {len(inputs)} inputs {names}; teaming feeds it one batch of images")
        self.input, self.shape = inputs[0].name, list(inputs[0].shape)
        names = [o.name for o in self.session.get_outputs()]
        self.logits, self.features = _outputs_named(spec, names, path.name)
        self.one_at_a_time = self.shape[:1] == [1]  # a graph exported with a fixed batch of one

    def declared_size(self) -> int | None:
        """The square side the graph's input declares, when it declares one."""
        h, w = (self.shape + [None, None, None, None])[2:4]
        return h if isinstance(h, int) and h == w else None

    def check_input(self, size: int) -> None:
        """ModelError when the graph declares an input other than N x 3 x size x size."""
        dims = self.shape[1:4]
        fixed = [d if isinstance(d, int) else None for d in dims]
        want = [3, size, size]
        if len(dims) != 3 or any(f is not None and f != w for f, w in zip(fixed, want)):
            shown = " x ".join(str(d) for d in self.shape)
            hint = f"; its side is {fixed[1]}: --preprocess size={fixed[1]}" if len(fixed) == 3 and fixed[1] else ""
            raise ModelError(f"the graph wants input {shown}, not N x 3 x {size} x {size}{hint}")

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        wanted = [self.logits] + ([self.features] if self.features else [])
        parts = x.split(1) if self.one_at_a_time else [x]
        outs = [self.session.run(wanted, {self.input: p.contiguous().numpy()}) for p in parts]
        scores = torch.from_numpy(np.concatenate([o[0] for o in outs]))
        feats = torch.from_numpy(np.concatenate([o[1] for o in outs])) if self.features else None
        return scores, feats


def _outputs_named(spec: GraphSpec, names: list[str], file: str) -> tuple[str, str | None]:
    """(scores output, features output or None) among an ONNX graph's output names."""
    for wanted in (spec.logits, spec.features):
        if wanted is not None and wanted not in names:
            raise ModelError(f"{file} has no output {wanted!r}; its outputs are {names}")
    logits = spec.logits or next((n for n in names if n != spec.features), None)
    if logits is None:
        raise ModelError(f"{file} has no output besides the features {spec.features!r}")
    return logits, spec.features


class TorchScriptRunner:
    """A TorchScript module: float N x 3 x S x S in; out a tensor of scores, or a tuple (indexed) or dict (keyed)
    holding the scores and the features."""

    def __init__(self, path: Path, spec: GraphSpec, device: torch.device, bf16: bool = False) -> None:
        try:
            with warnings.catch_warnings():  # torch.jit warns that TorchScript is deprecated; models still ship as it
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(str(path), map_location=device).eval()
        except Exception as err:  # torch.jit raises RuntimeError, ValueError or its own types for bad files
            raise ModelError(
                f"{path.name} is not a TorchScript file torch.jit.load can read: {_first_line(err)}"
            ) from None
        self.spec, self.device, self.bf16 = spec, device, bf16
        self.one_at_a_time = False

    def declared_size(self) -> int | None:
        return None  # TorchScript keeps no input shape; the contract check's forward pass tells

    def check_input(self, size: int) -> None:
        """Nothing to read off a TorchScript file: the forward pass on labelled images checks the input."""

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.module(x.to(self.device))
        scores = _pick(out, self.spec.logits, "scores")
        feats = None if self.spec.features is None else _pick(out, self.spec.features, "features")
        return scores.float().cpu(), None if feats is None else feats.float().flatten(1).cpu()


def _pick(out, key: str | None, what: str) -> torch.Tensor:
    """The tensor `key` names in a TorchScript module's output: the tensor itself, an index into a tuple or a key
    into a dict (the first entry, or 'logits', without a key)."""
    if isinstance(out, torch.Tensor):
        if key not in (None, "0"):
            raise ModelError(f"the module returns one tensor; it has no {what} output {key!r}")
        return out
    if isinstance(out, (tuple, list)):
        index = 0 if key is None else int(key) if key.isdigit() else None
        if index is None or index >= len(out):
            raise ModelError(f"the module returns {len(out)} tensors; name the {what} by index (0..{len(out) - 1})")
        return out[index]
    if isinstance(out, dict):
        key = key or ("logits" if "logits" in out else next(iter(out)))
        if key not in out:
            raise ModelError(f"the module's output has no {what} key {key!r}; its keys are {sorted(out)}")
        return out[key]
    raise ModelError(f"the module returns {type(out).__name__}, not a tensor, tuple or dict of tensors")


Runner = OnnxRunner | TorchScriptRunner


def open_runner(path: Path, kind: str, spec: GraphSpec, backend: str | None = None, device: str = "cpu") -> Runner:
    """The runner for a graph file under a backend of its kind (its reference backend by default)."""
    backend = backend or BACKENDS_OF[kind][0]
    if backend not in BACKENDS_OF[kind]:
        raise ModelError(f"a {kind} model runs as {' or '.join(BACKENDS_OF[kind])}, not {backend!r}")
    if kind == "onnx":
        return OnnxRunner(path.with_name(INT8_FILE) if backend == "onnx-int8" else path, spec)
    return TorchScriptRunner(path, spec, torch.device(device), bf16=backend.endswith("bf16"))


def as_logits(scores: torch.Tensor, outputs: str) -> torch.Tensor:
    """Class scores as logits: probabilities go back through their log (softmax of the result gives them again)."""
    return scores.double().clamp_min(1e-12).log().float() if outputs == "probabilities" else scores.float()


@dataclass
class GraphModel:
    """An imported graph with its model.json and guard: the model seam for models trained elsewhere."""

    meta: ModelMeta
    runner: Runner
    guard: Guard | None = None
    directory: Path | None = None
    figures: dict[str, bytes] = field(default_factory=dict)
    backend: str = ""
    chunk: int = 64
    device: str = field(default="cpu", repr=False)

    def __post_init__(self) -> None:
        self.backend = self.backend or BACKENDS_OF[self.meta.kind][0]

    @property
    def classes(self) -> list[str]:
        return self.meta.classes

    @property
    def contract(self):
        return self.meta.contract

    @property
    def version(self) -> str:
        return self.meta.version

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, features or None), float32 on the CPU, for uint8 images of any size (shaped by the contract)."""
        x = conform(images, self.contract)
        if len(x) == 0:
            logits, feats = self.raw(torch.zeros(1, 3, self.contract.size, self.contract.size, dtype=torch.uint8))
            return logits[:0], None if feats is None else feats[:0]
        parts = [self.runner(to_input(c, self.contract)) for c in x.split(self.chunk)]
        logits = as_logits(torch.cat([p[0] for p in parts]), self.meta.graph.outputs)
        feats = None if parts[0][1] is None else torch.cat([p[1] for p in parts])
        return logits, feats

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.raw(images)[0]

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        return softmax(self.logits(images), self.meta.temperature)

    def outputs(self, images: torch.Tensor) -> Outputs:
        logits, feats = self.raw(images)
        unfamiliarity = None
        if self.guard is not None:
            unfamiliarity = self.guard.score(feats if self.guard.reads == "features" else logits)
        return Outputs(softmax(logits, self.meta.temperature), None if feats is None else feats.numpy(), unfamiliarity)

    def use(self, backend: str, checked: bool = True) -> "GraphModel":
        """Run as `backend` ('auto' is the graph as given); a reduced one must have passed its check."""
        reference = BACKENDS_OF[self.meta.kind][0]
        backend = reference if backend in ("auto", "eager", "fp32") else backend
        if checked and backend != reference and not passed(self.meta.backends.get(backend), torch.device(self.device)):
            raise ModelError(
                f"backend {backend} {failed_check(self.meta.backends.get(backend), torch.device(self.device))}"
            )
        path = self.directory / self.meta.graph.file
        self.runner = open_runner(path, self.meta.kind, self.meta.graph, backend, self.device)
        self.backend = backend
        return self

    def warm_up(self) -> None:
        self.raw(torch.zeros(2, 3, self.contract.size, self.contract.size, dtype=torch.uint8))

    def to(self, device: str | torch.device) -> "GraphModel":
        self.device = str(torch.device(device)) if self.meta.kind == "torchscript" else "cpu"
        return self.use(self.backend, checked=False)


def load_graph_model(directory: Path, device: str | torch.device = "cpu", backend: str | None = None) -> GraphModel:
    """An imported model folder (model.json naming its graph, the graph, its guard) ready to run."""
    meta = load_meta(directory)
    path = directory / meta.graph.file
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a whole model: its graph {meta.graph.file} is missing")
    device = str(torch.device(device)) if meta.kind == "torchscript" else "cpu"
    guard = load_guard(directory / GUARD_FILE) if (directory / GUARD_FILE).exists() else None
    figures = {p.name: p.read_bytes() for p in sorted(directory.glob("*.png"))}
    runner = open_runner(path, meta.kind, meta.graph, None, device)
    model = GraphModel(meta, runner, guard, directory, figures, device=device)
    return model.use(backend) if backend else model


def check_reduced_backend(
    model: GraphModel, policy, images: torch.Tensor, labels: np.ndarray, calibration: torch.Tensor, source: Path
) -> Path | None:
    """The reduced-precision backend of the graph's kind (int8 ONNX, calibrated on `calibration`; or bfloat16
    TorchScript) against the graph as given on labelled `images`, the policy's decisions included, as `teaming
    export` checks our nets; both rows recorded in model.json. Returns the int8 graph's temporary path."""
    from teaming.model.runtime import check, device_name, quantize_onnx, verify_policy

    reference, rate = _timed(model, images)
    kind, int8 = model.meta.kind, None
    name = BACKENDS_OF[kind][1]
    try:
        if kind == "onnx":
            int8 = Path(tempfile.mkdtemp(prefix="teaming-import-")) / INT8_FILE
            batches = [to_input(b, model.contract).numpy() for b in calibration.split(64)]
            quantize_onnx(source, int8, batches, model.meta.graph.input)
            runner: Runner = OnnxRunner(int8, model.meta.graph)
        else:
            runner = TorchScriptRunner(source, model.meta.graph, torch.device("cpu"), bf16=True)
    except Exception as err:  # quantizing a graph from elsewhere can fail in many ways: record why
        model.meta.backends[name] = {"passed": False, "failed": [f"could not be built: {str(err)[:200]}"]}
        return None
    outputs, other_rate = _timed(GraphModel(model.meta, runner, model.guard), images)
    result = check(reference.probs, outputs.probs, labels) | verify_policy(policy, reference, outputs)
    result["failed"] += result.pop("policy_failed")
    where = {
        "machine": device_name(torch.device("cpu")),
        "device": "onnx-cpu" if kind == "onnx" else "cpu",
        "checked_on": f"the report split ({len(labels)} items)",
    }
    result |= {"passed": not result["failed"], "images_per_second": round(other_rate, 1), **where}
    reference_row = check(reference.probs, reference.probs, labels) | {"images_per_second": round(rate, 1), **where}
    model.meta.backends[model.backend] = reference_row  # first: what the others are measured against
    model.meta.backends[name] = result
    return int8


def _timed(model: GraphModel, images: torch.Tensor) -> tuple[Outputs, float]:
    """The model's outputs on `images` and the images per second it took (after one warm-up chunk)."""
    model.raw(images[:8])
    start = time.perf_counter()
    out = model.outputs(images)
    return out, len(images) / (time.perf_counter() - start)
