"""How close inference comes to this machine's physical limit, stage by stage and backend by backend, in one run.

The limit: FLOPs per served image (torch's FlopCounterMode on the net with its mirror) against the machine's
sustained peak, the best rate any of the net's own convolutions reaches alone (fp32 and bf16, at the batch sizes
served), measured in each round beside the stages. Each stage is timed in the same interleaved rounds after a
warm-up, and its images/s given as a fraction of the fp32 limit (only reduced precision may pass 1.0, and says so):
  forward   the net on float images (the model alone)
  predict   uint8 images to probabilities, features and unfamiliarity (Artifact.outputs)
  decode    base64 + JPEG decode + predict, in this process
  service   the service over HTTP at 1, 16 and 64 images per request (16 clients), and with --baseline REV the
            service as it was at that commit, in the same rounds
Also model time against batch size per backend (--plot writes both figures).
Usage: python -m bench.limit [--backends eager,fp32,bf16,onnx,onnx-int8] [--rounds 3] [--seconds 1.5]
                             [--service] [--baseline REV] [--plot bench/figures]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from teaming.datasets import load_default_test
from teaming.decode import decode_image
from teaming.model import Artifact, load_artifact
from teaming.model.predict import to_float
from teaming.model.runtime import ONNX_FILES, Served, device_name, fold
from tests.support.common import jpeg_payloads

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "cifar10h-default"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SIZES = (1, 4, 16, 64, 128, 256, 512)
REDUCED = {"bf16", "onnx-int8", "torchscript-bf16"}  # backends whose work per image is less than fp32's


def flops_per_image(net: torch.nn.Module, tta: bool) -> float:
    """FLOPs (2 per multiply-add) of one served image: the folded net on it and, with tta, on its mirror."""
    module = Served(fold(net), tta).eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(torch.rand(8, 3, 32, 32))
    return counter.get_total_flops() / 8


def conv_shapes(net: torch.nn.Module, batch: int) -> list[tuple[tuple, torch.nn.Conv2d]]:
    """(input shape, conv) of every convolution of the folded net for a batch of `batch` images."""
    shapes, hooks = [], []
    folded = fold(net)
    for m in folded.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(lambda mod, a, out: shapes.append((tuple(a[0].shape), mod))))
    with torch.inference_mode():
        folded.features(to_float(torch.zeros(batch, 3, 32, 32, dtype=torch.uint8)))
    for h in hooks:
        h.remove()
    return shapes


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def conv_rate(shape: tuple, conv: torch.nn.Conv2d, dtype: torch.dtype, seconds: float) -> float:
    """Sustained GFLOP/s of one convolution alone, channels_last, after a warm-up."""
    x = torch.randn(shape, device=DEVICE).to(dtype).contiguous(memory_format=torch.channels_last)
    w = conv.weight.detach().to(DEVICE, dtype).contiguous(memory_format=torch.channels_last)
    b = None if conv.bias is None else conv.bias.detach().to(DEVICE, dtype)
    with torch.inference_mode():
        out = F.conv2d(x, w, b, padding=conv.padding)
        flops = 2 * out.numel() * w[0].numel()
        sync()
        n, start = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - start < seconds:
            F.conv2d(x, w, b, padding=conv.padding)
            n += 1
        sync()
    return flops * n / (time.perf_counter() - start) / 1e9


def peak(net: torch.nn.Module, dtype: torch.dtype, seconds: float) -> tuple[float, str]:
    """(best GFLOP/s, which conv and batch) over the net's own convolutions at the batch sizes it is served at
    (64 images and their mirrors: 128)."""
    best, where = 0.0, ""
    for batch in (64, 128, 256):
        for i, (shape, conv) in enumerate(conv_shapes(net, batch)):
            rate = conv_rate(shape, conv, dtype, seconds)
            if rate > best:
                best, where = rate, f"conv {i} at input {shape}"
    return best, where


def rate(fn, images: int, seconds: float) -> float:
    """Images/s of `fn` (which handles `images` images a call), after one untimed call."""
    fn()
    sync()
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < seconds:
        fn()
        n += 1
    sync()
    return images * n / (time.perf_counter() - start)


def decoded(payloads: list[dict]) -> torch.Tensor:
    """base64 + JPEG decode of each payload, as the service does at intake."""
    return torch.stack([decode_image(base64.b64decode(p["data"]), 32) for p in payloads])


def stages(arts: dict[str, Artifact], payloads: list[dict], batch: int) -> dict[tuple[str, str], Callable]:
    """(stage, backend) -> a call that handles `batch` images."""
    test = decoded(payloads[:batch])
    x = to_float(test).to(DEVICE)
    out = {}
    for name, art in arts.items():
        if art.runtime.session is None:

            @torch.inference_mode()
            def forward(m=art.runtime.module, chunk=art.runtime.chunk):
                [m(c) for c in x.split(chunk)]

            out[("forward", name)] = forward
        out[("predict", name)] = lambda a=art: a.outputs(test)
        out[("decode", name)] = lambda a=art: a.outputs(decoded(payloads[:batch]))
    return out


def sweep(arts: dict[str, Artifact], seconds: float) -> dict[str, list[float]]:
    """Model time per image (ms) against batch size, per backend (Artifact.outputs on uint8 images)."""
    images = load_default_test().images[7000 : 7000 + max(SIZES)]
    out = {}
    for name, art in arts.items():
        art.runtime.chunk = max(SIZES)  # the batch as given, to see where it stops paying
        out[name] = [1000 / rate(lambda n=n, a=art: a.outputs(images[:n]), n, seconds) for n in SIZES]
        print(f"sweep    {name:<10s} " + " ".join(f"b{n}={ms:.3f}ms" for n, ms in zip(SIZES, out[name])), flush=True)
    return out


def service_rates(targets: dict, payloads: list[dict], seconds: float) -> dict[tuple, float]:
    """Images/s of each running service at 1, 16 and 64 images per request, 16 clients (answered images over
    the real elapsed time); and the p50 latency (ms) of a single image from a single client."""
    from bench.serve_load import closed_loop

    out = {}
    for label, proc in targets.items():
        for size in (1, 16, 64):
            lv = asyncio.run(closed_loop(proc.url, payloads, 16, size, seconds, 100000))
            if failed := lv.errors + lv.server_errors + sum(lv.failures.values()):
                print(f"# service/{size} {label}: {failed} requests failed; only answered images count")
            out[(f"service/{size}", label)] = lv.images_per_second(size)
        lv = asyncio.run(closed_loop(proc.url, payloads, 1, 1, seconds, 100000))
        out[("p50 ms, 1 image, 1 client", label)] = 1000 * float(np.median(lv.latencies))
    return out


def share_of_limit(images_per_s: float, limit: float, backend: str) -> str:
    """The fraction of the fp32 limit, with the reason whenever it passes 1 (no fp32 work can)."""
    share = images_per_s / limit
    if share <= 1:
        return f"of fp32 limit={share:.3f}"
    if backend in REDUCED:
        return f"of fp32 limit={share:.3f} (above 1: {backend} does less than fp32 work per image)"
    return f"of fp32 limit={share:.3f} (ABOVE 1 in fp32: the peak or this timing is wrong; do not quote it)"


def one_image_ms(art, image: torch.Tensor, seconds: float) -> float:
    """Median time (ms) of the model's own work for one image (Artifact.outputs), back to back."""
    times, start = [], time.perf_counter()
    art.outputs(image)
    while len(times) < 50 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        art.outputs(image)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def start_services(backend: str, baseline: str | None, tmp: Path) -> dict:
    from tests.support.process import ServiceProcess

    targets = {}
    trees = {backend: ROOT}
    if baseline:
        tree = tmp / f"tree-{baseline}"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), baseline], check=True)
        trees[f"service@{baseline}"] = tree
    for label, tree in trees.items():
        env = {
            "TEAMING_DB_URL": f"sqlite:///{tmp / (label.replace('@', '-') + '.db')}",
            "TEAMING_AUDIT_RATE": "0.05",
            "BENTOML_HOME": str(tmp / f"bentoml-{label.replace('@', '-')}"),
            "TEAMING_BACKEND": backend,
        }
        targets[label] = ServiceProcess(env, tmp / f"{label.replace('@', '-')}.log", tree=tree).start()
    return targets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="eager,fp32,bf16,onnx,onnx-int8")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.5, help="length of one timing")
    p.add_argument("--batch", type=int, default=256, help="images per in-process call")
    p.add_argument("--service", action="store_true", help="also load the service over HTTP")
    p.add_argument("--service-backend", default="auto", help="TEAMING_BACKEND of the service")
    p.add_argument("--baseline", help="also load the service as it was at this git commit")
    p.add_argument("--plot", type=Path, help="folder for limit.png and batch.png")
    args = p.parse_args()
    torch.manual_seed(0)
    backends = [b for b in args.backends.split(",") if b not in ONNX_FILES or (MODEL / ONNX_FILES[b]).exists()]
    if skipped := set(args.backends.split(",")) - set(backends):
        print(f"# left out {sorted(skipped)}: no ONNX graphs in {MODEL} (run `teaming export`)")
    art = load_artifact(MODEL)
    flops = flops_per_image(art.net, art.meta.tta)
    print(f"# limit on {device_name(DEVICE)}, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}")
    print(f"flops    per served image: {flops / 1e6:.1f} MFLOP (mirror included)")
    payloads = jpeg_payloads(max(args.batch, 256))
    arts = {name: load_artifact(MODEL, DEVICE).use(name, checked=False) for name in backends}  # one each: one compile
    calls = stages(arts, payloads, args.batch)
    results: dict[tuple, list[float]] = defaultdict(list)
    peaks: dict[str, list[tuple[float, str]]] = defaultdict(list)  # measured in the rounds, as the stages are
    with tempfile.TemporaryDirectory() as tmp:
        targets = start_services(args.service_backend, args.baseline, Path(tmp)) if args.service else {}
        try:
            one = decoded(payloads[:1])
            for _ in range(args.rounds):
                for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
                    gflops, where = peak(art.net, dtype, args.seconds / 3)
                    peaks[label].append((gflops, where))
                for key, fn in calls.items():
                    results[key].append(rate(fn, args.batch, args.seconds))
                for name, art_ in arts.items():
                    results[("p50 ms, 1 image, model alone", name)].append(one_image_ms(art_, one, args.seconds))
                for key, value in service_rates(targets, payloads, args.seconds * 2).items():
                    results[key].append(value)
        finally:
            for proc in targets.values():
                proc.stop()
            if args.baseline:
                tree = str(Path(tmp) / f"tree-{args.baseline}")
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tree], check=False)
    limits = {}
    for label, measured in peaks.items():
        gflops, where = sorted(measured)[len(measured) // 2]  # the median round's peak
        limits[label] = gflops * 1e9 / flops
        rounds = f"median of {len(measured)} rounds"
        print(f"peak     {label}: {gflops:.1f} GFLOP/s ({where}, {rounds}) -> limit {limits[label]:.0f} images/s")
    for (stage, name), values in results.items():
        lo, med, hi = np.min(values), np.median(values), np.max(values)
        if stage.startswith("p50"):
            print(f"{stage:<30s} {name:<18s} ms min={lo:7.3f} median={med:7.3f} max={hi:7.3f}", flush=True)
            continue
        print(
            f"{stage:<30s} {name:<18s} images/s min={lo:8.1f} median={med:8.1f} max={hi:8.1f}"
            f"  {share_of_limit(med, limits['fp32'], name)}",
            flush=True,
        )
    curves = sweep(arts, args.seconds)
    if args.plot:
        plot(results, limits, curves, args.plot)


def plot(results: dict, limits: dict, curves: dict, folder: Path) -> None:
    """limit.png: each stage's median images/s against the limits; batch.png: model time per image by batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    keys = [k for k in results if not k[0].startswith("p50")]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(keys) + 1.5))
    ax.barh([f"{s} {n}" for s, n in keys], [np.median(results[k]) for k in keys], color="tab:blue")
    for label, style in (("fp32", "--"), ("bf16", ":")):
        ax.axvline(limits[label], color="k", linestyle=style, label=f"{label} limit {limits[label]:.0f}/s")
    ax.invert_yaxis()
    ax.set_xlabel("images/s (median of rounds)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(folder / "limit.png", dpi=90)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ms in curves.items():
        ax.plot(SIZES, ms, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("images per call")
    ax.set_ylabel("model time per image (ms)")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "batch.png", dpi=90)
    print(f"wrote {folder / 'limit.png'} and {folder / 'batch.png'}")


if __name__ == "__main__":
    main()
