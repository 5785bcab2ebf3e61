"""Command line: parse, call the library, print. Every default lives in the library (its config dataclasses and
estimators); the options only restate it for the help text."""

from __future__ import annotations

import inspect
import json
import shlex
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from teaming.model.train import TrainConfig, finetune_config, pretrain_config
from teaming.ops.review import AUDIT_REVIEWERS
from teaming.policy import CertifiedPolicy, ThresholdPolicy

app = typer.Typer(
    help="Human-AI teaming: train calibrated classifiers on human labels, fit deferral policies, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
HELD_OUT = "7000:10000"  # the default model's held-out CIFAR-10 test items


def _default(func: Callable, name: str):
    """The default of parameter `name` of `func` (an estimator's __init__ or a config function)."""
    return inspect.signature(func).parameters[name].default


def _fmt(value: float | int | None) -> str:
    return "" if value is None else str(value) if isinstance(value, int) else f"{value:.4f}"


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def _command(ctx: typer.Context) -> str:
    """The running command as a user would type it: its name and every option not left at its default."""
    parts = ["teaming", ctx.info_name or ""]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name == "DEFAULT":
            continue
        value = ctx.params.get(param.name)
        if param.param_type_name == "argument":
            parts.append(str(value))
        elif getattr(param, "is_flag", False):
            parts.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            parts += [param.opts[0], str(value)]
    return shlex.join(parts)


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., help="artifact folder to write, e.g. models/my-model"),
    images: str = typer.Option(
        "default", help="'default' (embedded CIFAR-10 test), a JPEG pack .npz, or an ImageFolder"
    ),
    labels: str = typer.Option(
        "cifar10h", help="'cifar10h', 'cifar10n[:cols]', 'hard', or a CSV item_id,annotator_id,label"
    ),
    train_items: str = typer.Option("0:7000", help="positions to train and calibrate on"),
    eval_items: Optional[str] = typer.Option(HELD_OUT, help="held-out positions to score ('none' to skip)"),
    loss: str = typer.Option(TrainConfig.loss, help="soft | hard | sampled"),
    epochs: float = typer.Option(_default(finetune_config, "epochs"), help="epochs on the human labels"),
    lr: float = typer.Option(TrainConfig.lr, help="learning rate per 1024 examples"),
    label_smoothing: float = typer.Option(TrainConfig.label_smoothing),
    arch: str = typer.Option(TrainConfig.arch, help="fastnet | resnet18"),
    widths: str = typer.Option(",".join(map(str, TrainConfig.widths)), help="fastnet widths"),
    size: int = typer.Option(TrainConfig.input_size, help="input size (images are resized to it)"),
    batch_size: int = typer.Option(TrainConfig.batch_size),
    pretrain: Optional[str] = typer.Option(
        None, help="JPEG pack with hard labels to pretrain on, or 'shared' for CIFAR-10 train"
    ),
    pretrain_epochs: float = typer.Option(_default(pretrain_config, "epochs")),
    calibration_fraction: float = typer.Option(0.1, help="share of training items kept aside to fit the temperature"),
    tta: bool = typer.Option(True, help="average the image and its mirror at prediction time"),
    fgsm: bool = typer.Option(True, help="also score FGSM robustness"),
    seed: int = typer.Option(TrainConfig.seed),
    device: str = typer.Option(TrainConfig.device),
    name: Optional[str] = typer.Option(None, help="model name (default: the folder name)"),
    hardware_note: str = typer.Option("", help="a sentence for the model card about where it was trained"),
) -> None:
    """Train a calibrated classifier on human labels and save it as an artifact with a model card."""
    from teaming.data import load_jpeg_pack, parse_items
    from teaming.datasets import cifar10_train_pack, load_images, resolve_labels
    from teaming.model import build_model, save_artifact
    from teaming.model.artifact import metrics_table

    try:
        data = load_images(images, size)
        targets = resolve_labels(labels, data)
        tr = parse_items(train_items, len(data))
        ev = None if eval_items in (None, "none") else parse_items(eval_items, len(data))
        if ev is not None and np.intersect1d(tr, ev).size:
            raise ValueError("train and eval items overlap")
        w = tuple(int(x) for x in widths.split(","))
        base = TrainConfig(
            arch=arch,
            widths=w,
            input_size=size,
            loss=loss,
            label_smoothing=label_smoothing,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
        )
        pre = pcfg = None
        if pretrain:
            pre = load_jpeg_pack(cifar10_train_pack() if pretrain == "shared" else Path(pretrain), size)
            if pretrain == "shared":
                pre.source = "CIFAR-10 train, shared/data/cifar10_train_jpeg.npz"
            pcfg = pretrain_config(base, epochs=pretrain_epochs)
            base = finetune_config(base, loss=loss, epochs=epochs)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    artifact = build_model(name or out.name, data, targets, tr, ev, base, pre, pcfg, calibration_fraction, tta, fgsm)
    artifact.meta.training["command"] = _command(ctx)
    if hardware_note:
        artifact.meta.training["hardware_note"] = hardware_note
    save_artifact(artifact, out)
    console.print(f"saved [bold]{out}[/bold] (T = {artifact.meta.temperature:.3f})")
    if artifact.meta.metrics:
        console.print(metrics_table(artifact.meta.metrics))


@app.command("evaluate")
def evaluate_cmd(
    model: Path = typer.Argument(Path("models/cifar10h-default"), help="artifact folder"),
    images: str = typer.Option("default", help="'default', a JPEG pack .npz, or an ImageFolder"),
    labels: Optional[str] = typer.Option(
        "cifar10h", help="human labels to score against ('none' for hard labels only)"
    ),
    items: Optional[str] = typer.Option(HELD_OUT, help="positions to score"),
    fgsm: bool = typer.Option(False, help="also score FGSM robustness at l_inf 4/255"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the metrics as JSON here"),
    plot: Optional[Path] = typer.Option(None, help="write a reliability diagram (PNG) here"),
    device: str = typer.Option(TrainConfig.device),
) -> None:
    """Score a model artifact on labelled images; prints a metrics table and optionally writes JSON."""
    from teaming._validation import DataError
    from teaming.data import parse_items
    from teaming.datasets import load_images, resolve_labels
    from teaming.labels import HumanLabels
    from teaming.model import load_artifact
    from teaming.model.recipe import evaluate_items
    from teaming.model.train import resolve_device

    try:
        art = load_artifact(model, resolve_device(device))
        data = load_images(images, art.meta.input_size, art.classes)
        if data.classes != art.classes:
            raise DataError(f"image classes {data.classes} differ from the model's {art.classes}")
        human = resolve_labels(labels, data) if labels not in (None, "none") else None
        idx = parse_items(items, len(data))
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    evaluation = evaluate_items(
        art.net, data, human if isinstance(human, HumanLabels) else None, idx, art.meta.temperature, art.meta.tta, fgsm
    )
    result = evaluation.metrics
    table = Table(title=f"{art.meta.name} on {len(idx)} items of {data.source}")
    table.add_column("metric")
    for col in result:
        table.add_column(col, justify="right")
    for key in result["calibrated"]:
        table.add_row(key, *[_fmt(result[c].get(key)) for c in result])
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps({"model": art.meta.name, "items": items, "metrics": result}, indent=2) + "\n")
        console.print(f"wrote {json_out}")
    if plot and evaluation.labels is not None:
        plot.write_bytes(evaluation.reliability_png(f"{art.meta.name} on {len(idx)} items"))
        console.print(f"wrote {plot}")


@app.command("fit-policy")
def fit_policy_cmd(
    ctx: typer.Context,
    model: Path = typer.Argument(Path("models/cifar10h-default"), help="artifact folder"),
    out: Path = typer.Option(..., help="policy JSON to write"),
    images: str = typer.Option("default", help="'default', a JPEG pack .npz, or an ImageFolder"),
    labels: str = typer.Option("cifar10h", help="human labels: 'cifar10h', 'cifar10n:COL', or a long CSV"),
    items: Optional[str] = typer.Option(HELD_OUT, help="held-out positions to fit on (never the training items)"),
    reviewers: int = typer.Option(1, help="human answer = majority of this many sampled annotators"),
    reference: str = typer.Option("hard", help="'hard' (image labels) or 'majority' (of the human labels)"),
    score: str = typer.Option(_default(ThresholdPolicy, "score"), help="max_prob | margin | entropy"),
    alpha: float = typer.Option(_default(ThresholdPolicy, "alpha"), help="significance level of the paired t-tests"),
    resample: str = typer.Option(_default(ThresholdPolicy, "resample"), help="folds | bootstrap"),
    n_resamples: int = typer.Option(_default(ThresholdPolicy, "n_resamples"), help="paired resamples"),
    max_deferral: Optional[float] = typer.Option(None, help="reviewer capacity: largest share of items to defer"),
    min_accuracy: Optional[float] = typer.Option(None, help="smallest acceptable team accuracy"),
    per_class: bool = typer.Option(_default(ThresholdPolicy, "per_class"), help="one threshold per predicted class"),
    certify: Optional[float] = typer.Option(
        None, help="instead: certify this accuracy on auto-answered items (Learn then Test)"
    ),
    delta: float = typer.Option(_default(CertifiedPolicy, "delta"), help="failure probability for --certify"),
    seed: int = typer.Option(_default(ThresholdPolicy, "random_state")),
    device: str = typer.Option(TrainConfig.device),
) -> None:
    """Fit a deferral policy on held-out labelled items and save it as JSON with its report."""
    from teaming.policy import save_policy
    from teaming.team import load_team

    try:
        if certify is not None:
            policy = CertifiedPolicy(certify, delta, score)
        else:
            policy = ThresholdPolicy(
                score, alpha, resample, n_resamples, max_deferral, min_accuracy, per_class, random_state=seed
            )
        policy.check_params()  # fail on bad settings before loading any data
        art, data = load_team(model, images, labels, items, reviewers, reference, seed, device)
        policy.fit(data.probs, data.y, data.human, art.classes)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    policy.model_ = {
        "name": art.meta.name,
        "path": str(model),
        "created": art.meta.created,
        "fitted_on": f"{labels} items {items} of {images}",
        "reviewers": reviewers,
        "command": _command(ctx),
    }
    save_policy(policy, out)
    r = policy.report_
    table = Table(title=f"policy {policy.version} on {r.n_items} items")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("threshold", f"{policy.threshold_:.2f}")
    if r.best_threshold is not None:
        table.add_row("best threshold by mean", f"{r.best_threshold:.2f}")
    for key in ("machine_accuracy", "human_accuracy", "team_accuracy", "deferral_rate"):
        table.add_row(key.replace("_", " "), _fmt(getattr(r, key)))
    console.print(table)
    console.print(f"wrote {out}")


@app.command("report")
def report_cmd(
    model: Path = typer.Argument(Path("models/cifar10h-default"), help="artifact folder"),
    policy: Path = typer.Option(..., help="policy JSON from fit-policy"),
    out: Path = typer.Option(Path("reports/teaming.html"), help="report path, .html (self-contained) or .md"),
    images: str = typer.Option("default"),
    labels: str = typer.Option("cifar10h"),
    items: Optional[str] = typer.Option(HELD_OUT),
    reviewers: int = typer.Option(1),
    reference: str = typer.Option("hard"),
    seed: int = typer.Option(1, help="seed of the sampled human answers (differs from fit-policy's by default)"),
    device: str = typer.Option(TrainConfig.device),
) -> None:
    """Write a teaming report: gain table, threshold curve, reliability, accuracy by bins, error confusions."""
    from teaming._validation import PolicyError
    from teaming.policy import load_policy
    from teaming.report import build_report, check_report_path, summarize, write_report
    from teaming.team import load_team

    try:
        check_report_path(out)
        pol = load_policy(policy)
        art, data = load_team(model, images, labels, items, reviewers, reference, seed, device)
        if pol.classes_ is not None and pol.classes_ != art.classes:
            raise PolicyError(f"the policy was fitted for classes {pol.classes_}, the model has {art.classes}")
        summary = summarize(data, pol, f"Teaming report: {art.meta.name} with policy {pol.version}")
        path = write_report(build_report(summary), out)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    console.print(f"wrote {path}")


@app.command("retune")
def retune_cmd(
    db: str = typer.Option(..., help="database URL of the service's log, e.g. sqlite:///runs/teaming.db"),
    out: Optional[Path] = typer.Option(None, help="also write the new policy JSON here"),
    activate: bool = typer.Option(True, help="make it the active policy (the service picks it up on reload)"),
    audit_reviewers: int = typer.Option(AUDIT_REVIEWERS, help="reviewers per audited item, as the service is set"),
    alpha: Optional[float] = typer.Option(None, help="override the active policy's alpha"),
    max_deferral: Optional[float] = typer.Option(None, help="override the reviewer capacity"),
    min_accuracy: Optional[float] = typer.Option(None, help="override the accuracy floor"),
) -> None:
    """Refit the deferral policy from audited outcomes in the log, with the same paired-t-test rule."""
    from teaming.ops.retune import retune

    try:
        policy = retune(
            db, out, activate, audit_reviewers, alpha=alpha, max_deferral=max_deferral, min_accuracy=min_accuracy
        )
    except ValueError as err:
        _fail(err)
    r = policy.report_
    console.print(
        f"policy [bold]{policy.version}[/bold] from {r.n_items} audited items: threshold "
        f"{policy.threshold_:.2f}, team {r.team_accuracy:.4f} at {r.deferral_rate:.1%} deferred "
        f"(machine {r.machine_accuracy:.4f}, human {r.human_accuracy:.4f})" + (" [active]" if activate else "")
    )


@app.command("migrate")
def migrate_cmd(
    db: str = typer.Option(..., help="database URL of the service's log, e.g. sqlite:///runs/teaming.db"),
) -> None:
    """Bring the log's database schema to this release (the service and retune also do this when they open it)."""
    from teaming.ops.schema import upgrade
    from teaming.ops.store import connect

    engine = connect(db)
    try:
        before, after = upgrade(engine)
    except Exception as err:  # an unreachable or foreign database: say so in one line
        _fail(err)
    finally:
        engine.dispose()
    console.print(f"schema at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))


@app.command("simulate")
def simulate_cmd(
    url: str = typer.Option("http://127.0.0.1:3000", help="the running service"),
    db: str = typer.Option(..., help="the service's database URL (to retune from)"),
    reviewer_tokens: str = typer.Option(..., help="comma-separated reviewer tokens, one simulated reviewer each"),
    admin_token: str = typer.Option(..., help="admin token (policy reload)"),
    items: str = typer.Option(HELD_OUT, help="CIFAR-10 test positions to replay"),
    audit_reviewers: int = typer.Option(AUDIT_REVIEWERS),
    seed: int = typer.Option(0),
) -> None:
    """Replay held-out CIFAR-10H images through the service with simulated reviewers, retune, and score it."""
    from teaming.data import parse_items
    from teaming.ops.simulate import simulate

    try:
        idx = parse_items(items, 10000)
        res = simulate(
            url, reviewer_tokens.split(","), admin_token, db, idx.tolist(), seed, audit_reviewers=audit_reviewers
        )
    except ValueError as err:
        _fail(err)
    console.print(
        f"{res.items} items classified, {res.deferred} deferred, {res.reviews} reviews, "
        f"{res.audited_items} audited items used to retune"
    )
    console.print(
        f"retuned policy {res.policy_version}: threshold {res.threshold:.2f}, team accuracy "
        f"{res.team_accuracy:.4f} at {res.deferral_rate:.1%} deferred"
    )
    console.print(
        f"best threshold in hindsight: {res.hindsight_accuracy:.4f} at {res.hindsight_deferral:.1%} "
        f"deferred (threshold {res.hindsight_threshold:.2f}); gap "
        f"{100 * (res.hindsight_accuracy - res.team_accuracy):.2f} points; best at the same deferral "
        f"budget {res.hindsight_same_budget:.4f}"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
