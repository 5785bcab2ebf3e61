"""`teaming export`: write a model's ONNX graphs (fp32 and int8) and check every backend against fp32 on held-out
items, its policy included; the results go to model.json and the card, where the service reads them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import typer
from rich.table import Table

from teaming.cli._common import console, fail
from teaming.model.artifact import save_meta


def export_cmd(
    model: Path = typer.Argument(Path("models/cifar10h-default"), help="artifact folder"),
    images: str = typer.Option("default", help="the model's images: 'default', a JPEG pack .npz, or an ImageFolder"),
    items: Optional[str] = typer.Option(
        None, help="positions with labels to check the backends on (default: every item the model did not train on)"
    ),
    calibration: int = typer.Option(1024, help="training items that calibrate the int8 graph"),
    onnx: bool = typer.Option(True, help="write model.onnx and model.int8.onnx (needs the onnx extra)"),
    backends: str = typer.Option(
        "fp32,bf16,onnx,onnx-int8", help="backends to check against eager fp32 (also: compiled, compiled-bf16)"
    ),
    device: str = typer.Option("cpu", help="where the torch backends run: cpu, cuda or auto (ONNX: the CPU)"),
    policy_path: Optional[Path] = typer.Option(
        None, "--policy", help="the policy to verify on each backend (default: the model folder's policy.json)"
    ),
) -> None:
    """Export the ONNX graphs and check each backend: top-1 agreement with fp32 >= 99.5%, accuracy and ECE
    within 0.3 points, and the model's policy deciding the same on >= 99% of items."""
    from teaming.model.runtime import ONNX_FILES

    names = [b.strip() for b in backends.split(",") if b.strip()]
    try:
        art, data, idx = _checked_inputs(model, images, items, names, device, policy_path, onnx)
    except (ValueError, FileNotFoundError) as err:
        fail(err)
    if onnx:
        _write_graphs(art, model, data, idx, calibration, device)
        for stale in set(ONNX_FILES) - set(names):  # new graphs: an earlier graph's check says nothing of them
            art.meta.backends.pop(stale, None)
    policy = _policy(policy_path or model / "policy.json")
    console.print(_check_backends(art, names, data, idx, items, policy))
    save_meta(art, model)
    console.print(f"recorded the checks in {model}/model.json and its card")


def _checked_inputs(model: Path, images: str, items: str | None, names: list[str], device: str, policy_path, onnx):
    """(artifact, images, held-out positions), refused (ValueError, FileNotFoundError) before anything is written."""
    from teaming.datasets import load_images
    from teaming.items import parse_items
    from teaming.model import load_artifact
    from teaming.model.runtime import ONNX_FILES
    from teaming.model.train import resolve_device
    from teaming.team import unused_positions

    art = load_artifact(model, resolve_device(device))
    data = load_images(images, art.meta.input_size, art.classes)
    idx = parse_items(items, len(data)) if items else unused_positions(art.meta, data)
    if data.labels is None:
        raise ValueError(f"{images} has no labels to check the backends against")
    if set(art.meta.used_positions()) & set(idx.tolist()):
        raise ValueError(f"items {items} overlap the items {model} was trained or calibrated on")
    if policy_path is not None and not policy_path.exists():
        raise FileNotFoundError(f"no policy at {policy_path}")
    if not onnx and any(b in ONNX_FILES and not (model / ONNX_FILES[b]).exists() for b in names):
        raise FileNotFoundError(f"{model} has no ONNX graphs yet: run without --no-onnx")
    return art, data, idx


def _check_backends(art, names: list[str], data, idx: np.ndarray, items: str | None, policy) -> Table:
    """Check each named backend against eager fp32 on the held-out items, record it on the artifact, and tabulate."""
    from teaming.model.recipe import describe_items

    held_out = data.images[torch.from_numpy(idx)]
    ref = art.use("eager").outputs(held_out)
    where = items or describe_items(idx)
    table = Table(title=f"backends of {art.meta.name} against fp32 on {len(idx)} items ({where})")
    table.add_column("backend", no_wrap=True)
    for col in ("top-1 same", "max |dp|", "accuracy", "ECE", "policy same", "img/s", "ok"):
        table.add_column(col, justify="right")
    for name in names:
        result = _check_backend(art, name, held_out, data.labels[idx], ref, policy)
        result["checked_on"] = f"{data.source} items {where}"
        art.meta.backends[name] = result
        table.add_row(
            name,
            f"{result['top1_agreement']:.2%}",
            f"{result['max_prob_difference']:.4f}",
            f"{result['accuracy']:.2%} ({100 * result['accuracy_change']:+.2f})",
            f"{result['ece']:.2%} ({100 * result['ece_change']:+.2f})",
            f"{result['policy_decision_agreement']:.2%}" if policy is not None else "-",
            f"{result['images_per_second']:.0f}",
            "yes" if result["passed"] else "[red]no[/red]",
        )
    return table


def _write_graphs(art, model: Path, data, idx: np.ndarray, calibration: int, device: str) -> None:
    """model.onnx from the net, and model.int8.onnx statically quantized on up to `calibration` training items."""
    from teaming.model.runtime import ONNX_FILES, export_onnx, float_batches, quantize_onnx
    from teaming.model.train import resolve_device

    try:
        export_onnx(art.net.cpu(), art.meta.tta, art.meta.input_size, model / ONNX_FILES["onnx"])
        art.net.to(resolve_device(device))
    except ImportError as err:
        fail(ValueError(f"{err}; install the onnx extra: pip install -e '.[onnx]' in this checkout"))
    used = art.meta.used_positions()  # training items; without a record, any item but the checked ones
    cal = used[:calibration] if len(used) else np.setdiff1d(np.arange(len(data)), idx)[:calibration]
    quantize_onnx(
        model / ONNX_FILES["onnx"], model / ONNX_FILES["onnx-int8"], float_batches(data.images[torch.from_numpy(cal)])
    )
    console.print(
        f"wrote {model / ONNX_FILES['onnx']} and {model / ONNX_FILES['onnx-int8']} ({len(cal)} calibration images)"
    )


def _check_backend(art, name: str, held_out: torch.Tensor, labels: np.ndarray, ref, policy) -> dict:
    """One backend's outputs against eager fp32's (`ref`) on the held-out items, its speed, and the policy's
    decisions on both."""
    from teaming.model.runtime import ONNX_FILES, check, device_name, verify_policy

    console.print(f"checking {name} on {len(labels)} items", highlight=False)
    art.use(name, checked=False)
    art.runtime.warm_up(art.meta.input_size)
    start = time.perf_counter()
    out = art.outputs(held_out)
    rate = len(labels) / (time.perf_counter() - start)
    on = art.runtime.device
    result = check(ref.probs, out.probs, labels) | {
        "images_per_second": round(rate, 1),
        "machine": device_name(on),
        "device": "onnx-cpu" if name in ONNX_FILES else on.type,
    }
    if policy is not None:
        result |= verify_policy(policy, ref, out)
        result["failed"] += result.pop("policy_failed")
        result["passed"] = not result["failed"]
    return result


def _policy(path: Path):
    """The policy the service would serve from the model folder (or the one named), None when there is none."""
    from teaming.policy import load_policy

    return load_policy(path) if path.exists() else None
