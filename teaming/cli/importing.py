"""`teaming import`: bring a classifier trained elsewhere (ONNX or TorchScript), calibrate it, guard it and fit
its deferral policy on the user's labelled photos, ready to serve."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from teaming.cli._common import command_line, console, fail

VOTES_HELP = (
    "votes CSV, one row per vote, columns item_id, annotator_id, label (a class name or id), seconds (optional)"
)


def import_cmd(
    ctx: typer.Context,
    model_file: Path = typer.Argument(..., help="the trained classifier: .onnx, or .pt / .ts (TorchScript)"),
    out: Path = typer.Option(..., help="model folder to write (graph, model.json, card, guard, policy.json)"),
    images: Path = typer.Option(
        ..., help="labelled photos: class folders (ids '<class>/<file>') or one flat folder (ids: file stems)"
    ),
    labels: Path = typer.Option(..., help=VOTES_HELP),
    classes: Optional[Path] = typer.Option(
        None, help="one class name per line, in the order of the model's outputs (default: the sorted folders)"
    ),
    preprocess: Optional[str] = typer.Option(
        None,
        help="'torchvision' (shorter side 256, centre 224, ImageNet mean and std), or keys joined by commas: "
        "size=N resize=stretch|crop|letterbox crop_pct=F interp=bilinear|bicubic mean=R/G/B std=R/G/B "
        "(default: the size the graph declares, stretch, floats in [0, 1])",
    ),
    features: Optional[str] = typer.Option(
        None, help="the graph output holding penultimate features, for the familiarity guard"
    ),
    name: Optional[str] = typer.Option(None, help="model name (default: the folder name)"),
    certify: Optional[float] = typer.Option(
        None, help="without a separate person in the votes: the accuracy to certify on auto-answered items"
    ),
    seed: int = typer.Option(0, help="seed of the splits, the sampled answers and the synthetic outliers"),
    force: bool = typer.Option(False, help="import even a model at chance or with an absurd temperature"),
) -> None:
    """Import a trained classifier: check its contract, calibrate it, fit its familiarity guard and its deferral
    policy on your labelled photos (each on items of its own), check its backends, and write a servable folder."""
    from teaming.importer import ImportConfig, import_model

    cfg = ImportConfig(**ctx.params, command=command_line(ctx))
    try:
        done = import_model(cfg, say=lambda line: console.print(line, highlight=False))
    except (ValueError, FileNotFoundError) as err:
        fail(err)
    _write_folder(done, model_file, out)
    for name_, result in done.model.meta.backends.items():
        state = "passed" if result.get("passed") else "failed: " + "; ".join(result.get("failed", []))
        console.print(f"backend {name_}: {state}", highlight=False)
    for warning in done.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"wrote [bold]{out}[/bold]: serve it with TEAMING_MODEL_DIR={out} (its card: {out}/MODEL_CARD.md)")


def _write_folder(done, model_file: Path, out: Path) -> None:
    """The servable folder: the user's graph (and its int8 copy), model.json, the card, the guard, policy.json."""
    from teaming.model import save_artifact
    from teaming.model.imported import INT8_FILE
    from teaming.policy import save_policy

    tmp = out.parent / f".{out.name}.policy.json"
    save_policy(done.policy, tmp)
    files: dict[str, bytes | Path] = {done.model.meta.graph.file: model_file, "policy.json": tmp.read_bytes()}
    tmp.unlink()
    if done.int8 is not None:
        files[INT8_FILE] = done.int8
    save_artifact(done.model, out, files=files)
