"""Inference backends: one trained net run the way that is fastest on the machine at hand, each one checked against
plain fp32 on held-out items before it may serve (`teaming export`, model.json's `backends`).

- `eager`: the net as trained, fp32 (the reference every other backend is checked against).
- `fp32`: batch norm and input normalisation folded into the convolutions, the image and its mirror in one
  forward, chunks sized to the CPU's cache; the same arithmetic as eager up to rounding.
- `bf16`: `fp32` under bfloat16 autocast, for CPUs with AVX512-BF16 or AMX and for GPUs.
- `compiled`, `compiled-bf16`: `fp32` and `bf16` through `torch.compile` with weight freezing. Shapes stay
  static: a batch runs as pieces of 64, 32, ... 1 images, each compiled once by `warm_up` (about 25 s at start,
  and a C++ compiler on the machine), never at a caller's expense.
- `onnx`, `onnx-int8`: the same graph exported to ONNX (`model.onnx`, `model.int8.onnx`, int8 by static
  quantization calibrated on training items), run by ONNX Runtime.
"""

from __future__ import annotations

import copy
import platform
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from teaming.model.nets import FastNet
from teaming.model.predict import to_float

BACKENDS = ("eager", "fp32", "bf16", "compiled", "compiled-bf16", "onnx", "onnx-int8")
REDUCED = ("bf16", "compiled-bf16", "onnx-int8")  # backends whose numbers differ from fp32 by more than rounding
PIECES = (64, 32, 16, 8, 4, 2, 1)  # the static batch sizes of compiled backends
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
CPU_CHUNK = 64  # images per forward on a CPU (x2 with the mirror): past 128 activations spill out of L3


class Served(nn.Module):
    """Float images in [0, 1] -> (logits, penultimate features); with tta the image and its mirror go through the
    net as one batch and their features are averaged (the head is linear, so the logits are too). With bf16 the
    body runs under bfloat16 autocast; the stem and the head stay fp32 (their rounding flips answers)."""

    def __init__(self, net: nn.Module, tta: bool, bf16: bool = False) -> None:
        super().__init__()
        self.net, self.tta, self.bf16 = net, tta, bf16

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tta:
            x = torch.cat([x, x.flip(-1)])
        h = self.net.stem(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            f = self.net.body(h).float()
        if self.tta:
            f = f.unflatten(0, (2, -1)).mean(0)
        return self.net.classify(f).float(), f


def fold(net: nn.Module) -> nn.Module:
    """A copy of `net` for inference with batch norm folded into the convolution before it and the input
    normalisation into the first convolution. In a FastNet group the first norm follows a max-pool, which an
    affine map with a positive scale commutes with (airbench's norms have unit weight), so it folds too."""
    net = copy.deepcopy(net).eval()
    if not isinstance(net, FastNet):
        return net
    mean, std = net.normalize.mean.flatten(), net.normalize.std.flatten()
    w = net.whiten.weight.detach() / std.view(1, -1, 1, 1)
    net.whiten.bias.data = net.whiten.bias.detach() - (w * mean.view(1, -1, 1, 1)).sum((1, 2, 3))
    net.whiten.weight.data = w
    net.normalize = nn.Identity()
    for group in net.layers:
        if not hasattr(group, "norm1"):
            continue
        scale = group.norm1.weight / torch.sqrt(group.norm1.running_var + group.norm1.eps)
        if (scale <= 0).any():
            raise ValueError("a batch norm with a non-positive scale does not commute with max-pooling")
        group.conv1, group.norm1 = fuse_conv_bn_eval(group.conv1, group.norm1), nn.Identity()
        group.conv2, group.norm2 = fuse_conv_bn_eval(group.conv2, group.norm2), nn.Identity()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 pays rather than costs."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def choose(setting: str, device: torch.device, checks: dict[str, dict]) -> tuple[str, str]:
    """(backend, why) for a setting: 'auto' is bf16 on GPUs and on CPUs that compute it natively, where its check
    against fp32 passed (model.json's `backends`), and folded fp32 otherwise; any other setting is taken as is."""
    if setting != "auto":
        return setting, "as set"
    if not (device.type == "cuda" or cpu_has_bf16()):
        return "fp32", "auto: this CPU has no native bf16"
    if not passed(checks.get("bf16"), device):
        return "fp32", f"auto: bf16 has no passed check on {device.type} in model.json (run `teaming export`)"
    return "bf16", f"auto: native bf16, agreeing with fp32 on {checks['bf16']['top1_agreement']:.2%} of answers"


def _checked_on(result: dict | None, device: torch.device) -> bool:
    """Whether a recorded check was taken on this kind of device (checks before devices were recorded were taken
    on the CPU; ONNX always runs there)."""
    return bool(result) and result.get("device", "cpu") in (device.type, "onnx-cpu")


def passed(result: dict | None, device: torch.device) -> bool:
    """Whether a backend's recorded check passed on this kind of device."""
    return _checked_on(result, device) and bool(result.get("passed"))


def failed_check(result: dict | None, device: torch.device) -> str:
    """Why a backend may not serve here: never checked on this kind of device, or what its check found."""
    if not _checked_on(result, device):
        return f"has no check against fp32 on {device.type}: run `teaming export --device ... --backends ...`"
    reasons = result.get("failed") or ["its check failed"]
    return "failed its check against fp32: " + "; ".join(reasons)


class Runtime:
    """uint8 N x 3 x H x W images (already at the model's input size) -> (logits, features), float32 on the CPU."""

    def __init__(self, net: nn.Module, tta: bool, backend: str = "eager", model_dir: Path | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        self.backend = backend
        self.compiled = backend.startswith("compiled")
        on_gpu = next(net.parameters()).device.type != "cpu"
        self.chunk = 1024 if on_gpu and not self.compiled else CPU_CHUNK
        self.session = None
        if backend in ONNX_FILES:
            path = Path(model_dir or ".") / ONNX_FILES[backend]
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run `teaming export {model_dir}` first")
            self.session = onnx_session(path)
            return
        bf16 = backend.endswith("bf16")
        self.module = Served(net if backend == "eager" else fold(net), tta, bf16=bf16).eval()
        if self.compiled:
            import torch._inductor.config as inductor

            inductor.freezing = True
            # one compile cache is shared by every Served module: room for each runtime's PIECES (8 by default)
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            self.module = torch.compile(self.module, dynamic=False)

    @property
    def device(self) -> torch.device:
        """Where the backend computes: its module's device; ONNX Runtime runs on the CPU."""
        return torch.device("cpu") if self.session is not None else next(self.module.parameters()).device

    def pieces(self, n: int) -> list[int]:
        """The chunk sizes a batch of n runs as: chunks of `chunk` images, and for compiled backends the
        remainder split into the static sizes of PIECES (37 = 32 + 4 + 1)."""
        sizes = [self.chunk] * (n // self.chunk) + ([n % self.chunk] if n % self.chunk else [])
        if not self.compiled or not sizes or sizes[-1] == self.chunk:
            return sizes
        rest, tail = sizes.pop(), []
        for p in PIECES:
            while rest >= p:
                tail.append(p)
                rest -= p
        return sizes + tail

    def warm_up(self, size: int) -> None:
        """Run every batch size the backend will see once (compiled backends compile them here)."""
        for n in PIECES if self.compiled else (2,):
            self(torch.zeros(n, 3, size, size, dtype=torch.uint8))

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(images) == 0:  # the shapes of an answer, for none
            out, f = self(torch.zeros(1, *images.shape[1:], dtype=torch.uint8))
            return out[:0], f[:0]
        logits, feats = [], []
        for chunk in images.split(self.pieces(len(images))):
            if self.session is not None:  # ONNX Runtime runs on the CPU
                out, f = self.session.run(None, {"images": to_float(chunk.cpu()).contiguous().numpy()})
                out, f = torch.from_numpy(out), torch.from_numpy(f)
            else:
                out, f = self.module(to_float(chunk.to(self.device, non_blocking=True)))  # where the net is now
            logits.append(out.float().cpu())
            feats.append(f.float().cpu())
        return torch.cat(logits), torch.cat(feats)


def device_name(device: torch.device) -> str:
    """The device figures were taken on, as a reader of a card or a bench line needs it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.machine()
    return f"{cpu}, {torch.get_num_threads()} threads"


def onnx_session(path: Path):
    """An ONNX Runtime session on the CPU with as many threads as torch uses."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_onnx(net: nn.Module, tta: bool, input_size: int, path: Path) -> Path:
    """The folded net with its mirror averaging as an ONNX graph: input `images` (N x 3 x H x W float in [0, 1]),
    outputs `logits` and `features`, any batch size."""
    module = Served(fold(net).cpu(), tta).eval()
    example = torch.rand(4, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        module,
        (example,),
        input_names=["images"],
        output_names=["logits", "features"],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        verbose=False,
    )
    program.save(str(path))
    return path


def quantize_onnx(source: Path, target: Path, batches: list[np.ndarray], input_name: str = "images") -> Path:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on `batches` (float inputs as the graph
    takes them); the first convolution and the head stay fp32 (quantizing them flipped 2.3% of answers, keeping
    them 0.7%)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_suffix(".prepared.onnx")
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)  # folds constants, infers shapes
        _quantize(prepared, target, batches, input_name)
    finally:
        prepared.unlink(missing_ok=True)
    return target


def float_batches(images: torch.Tensor, size: int = 64) -> list[np.ndarray]:
    """uint8 images as the float [0, 1] batches our graphs take (int8 calibration)."""
    return [to_float(c).contiguous().numpy() for c in images.split(size)]


def _quantize(prepared: Path, target: Path, batches: list[np.ndarray], input_name: str) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {input_name: x}

    nodes = onnx.load(str(prepared)).graph.node
    first_conv = next((n.name for n in nodes if n.op_type == "Conv"), None)
    keep = [*([first_conv] if first_conv else []), *(n.name for n in nodes if n.op_type in ("Gemm", "MatMul"))]
    quantize_static(
        str(prepared),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=keep,
    )


MIN_AGREEMENT, MAX_CHANGE = 0.995, 0.003
# a policy keeps its meaning on a backend when nearly every decision (answer or defer) stays the same
MIN_DECISION_AGREEMENT, MAX_DEFERRAL_CHANGE = 0.99, 0.005


def check(reference: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> dict:
    """A backend's calibrated probabilities against fp32's on the same labelled items. Passed when at least 99.5%
    of top-1 answers agree and accuracy and ECE move by at most 0.3 points; `failed` names what did not hold."""
    from teaming.model.metrics import accuracy, ece

    acc, acc_ref, cal, cal_ref = (
        accuracy(probs, labels),
        accuracy(reference, labels),
        ece(probs, labels),
        ece(reference, labels),
    )
    out = {
        "items": len(labels),
        "top1_agreement": float((reference.argmax(1) == probs.argmax(1)).mean()),
        "max_prob_difference": float(np.abs(reference - probs).max()),
        "accuracy": acc,
        "accuracy_change": acc - acc_ref,
        "ece": cal,
        "ece_change": cal - cal_ref,
    }
    failed = []
    if out["top1_agreement"] < MIN_AGREEMENT:
        failed.append(f"top-1 agreement {out['top1_agreement']:.2%} < {MIN_AGREEMENT:.1%}")
    for key, name in (("accuracy_change", "accuracy"), ("ece_change", "ECE")):
        if abs(out[key]) > MAX_CHANGE:
            failed.append(f"{name} moved {100 * out[key]:+.2f} points (limit {100 * MAX_CHANGE:.1f})")
    out["failed"], out["passed"] = failed, not failed
    return out


def verify_policy(policy, reference, outputs) -> dict:
    """A fitted policy's decisions on a backend's outputs against its decisions on fp32's (both `Outputs`): its
    threshold was chosen on fp32 probabilities, so it keeps its meaning only if nearly every decision stays."""
    a = policy.decide(
        reference.probs.astype(np.float64), unfamiliarity=reference.unfamiliarity, features=reference.features
    )
    b = policy.decide(outputs.probs.astype(np.float64), unfamiliarity=outputs.unfamiliarity, features=outputs.features)
    same, change = float((a == b).mean()), float(b.mean() - a.mean())
    verified = same >= MIN_DECISION_AGREEMENT and abs(change) <= MAX_DEFERRAL_CHANGE
    return {
        "policy": policy.version,
        "policy_decision_agreement": same,
        "deferral_rate": float(b.mean()),
        "deferral_rate_change": change,
        "policy_verified": verified,
        "policy_failed": []
        if verified
        else [
            f"the policy decided the same on {same:.2%} of items (limit {MIN_DECISION_AGREEMENT:.0%}) and deferred "
            f"{100 * abs(change):.2f} points {'more' if change > 0 else 'fewer'} "
            f"(limit {100 * MAX_DEFERRAL_CHANGE:.1f})"
        ],
    }
