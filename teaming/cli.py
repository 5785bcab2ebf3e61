"""Command line: `train` builds an artifact, `evaluate` scores it, `fit-policy` and `report` team it with people."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from teaming.data import DataError, ImageSet, load_images, load_jpeg_pack, shared_data_dir
from teaming.labels import HumanLabels, load_cifar10h, load_cifar10n

app = typer.Typer(
    help="Human-AI teaming: train calibrated classifiers on human labels, fit deferral policies, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()


def parse_items(spec: str | None, n: int) -> np.ndarray:
    """'7000:10000' (a slice), '1,5,9' (positions) or None (all) -> positions into an image set."""
    if spec is None or spec in ("", "all"):
        return np.arange(n)
    try:
        if ":" in spec:
            a, b = (int(x) if x else None for x in spec.split(":"))
            idx = np.arange(n)[slice(a, b)]
        else:
            idx = np.array([int(x) for x in spec.split(",")])
    except ValueError:
        raise DataError(f"items {spec!r} must look like 'START:STOP' or 'I,J,K'") from None
    if len(idx) == 0 or idx.min() < 0 or idx.max() >= n:
        raise DataError(f"items {spec!r} select nothing valid among {n} images")
    return idx


def resolve_labels(spec: str, images: ImageSet) -> HumanLabels | np.ndarray:
    """'hard', 'cifar10h[:PATH]', 'cifar10n[:col,col]' or a long CSV path -> targets aligned with images."""
    if spec == "hard":
        if images.labels is None:
            raise DataError("these images carry no hard labels")
        return images.labels
    if spec.startswith("cifar10h"):
        path = spec.split(":", 1)[1] if ":" in spec else None
        human = load_cifar10h(path, images.classes)
    elif spec.startswith("cifar10n"):
        cols = spec.split(":", 1)[1].split(",") if ":" in spec else ["random_label1", "random_label2", "random_label3"]
        shared = shared_data_dir()
        if shared is None:
            raise DataError("CIFAR-10N labels live in ../shared/data (or $TEAMING_DATA), which is absent")
        human = load_cifar10n(shared / "cifar10n_labels.npz", cols)
    else:
        human = HumanLabels.from_csv(spec, images.classes, ids=None)
    return human.aligned_to(images.ids)


def _fmt(value: float | int | None) -> str:
    return "" if value is None else str(value) if isinstance(value, int) else f"{value:.4f}"


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


@app.command("train")
def train_cmd(
    out: Path = typer.Option(..., help="artifact folder to write, e.g. models/my-model"),
    images: str = typer.Option(
        "default", help="'default' (embedded CIFAR-10 test), a JPEG pack .npz, or an ImageFolder"
    ),
    labels: str = typer.Option(
        "cifar10h", help="'cifar10h', 'cifar10n[:cols]', 'hard', or a CSV item_id,annotator_id,label"
    ),
    train_items: str = typer.Option("0:7000", help="positions to train and calibrate on"),
    eval_items: Optional[str] = typer.Option("7000:10000", help="held-out positions to score ('none' to skip)"),
    loss: str = typer.Option("soft", help="soft | hard | sampled"),
    epochs: float = typer.Option(8.0),
    lr: float = typer.Option(11.5, help="learning rate per 1024 examples"),
    label_smoothing: float = typer.Option(0.0),
    arch: str = typer.Option("fastnet", help="fastnet | resnet18"),
    widths: str = typer.Option("64,256,256", help="fastnet widths"),
    size: int = typer.Option(32, help="input size (images are resized to it)"),
    batch_size: int = typer.Option(1024),
    pretrain: Optional[str] = typer.Option(
        None, help="JPEG pack with hard labels to pretrain on, or 'shared' for CIFAR-10 train"
    ),
    pretrain_epochs: float = typer.Option(10.0),
    calibration_fraction: float = typer.Option(0.1, help="share of training items kept aside to fit the temperature"),
    tta: bool = typer.Option(True, help="average the image and its mirror at prediction time"),
    fgsm: bool = typer.Option(True, help="also score FGSM robustness"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    name: Optional[str] = typer.Option(None, help="model name (default: the folder name)"),
    hardware_note: str = typer.Option("", help="a sentence for the model card about where it was trained"),
) -> None:
    """Train a calibrated classifier on human labels and save it as an artifact with a model card."""
    from teaming.artifact import save_artifact
    from teaming.card import metrics_table
    from teaming.recipe import build_model
    from teaming.train import TrainConfig, finetune_config

    try:
        data = load_images(images, size)
        targets = resolve_labels(labels, data)
        tr = parse_items(train_items, len(data))
        ev = None if eval_items in (None, "none") else parse_items(eval_items, len(data))
        if ev is not None and np.intersect1d(tr, ev).size:
            raise DataError("train and eval items overlap")
        w = tuple(int(x) for x in widths.split(","))
        base = TrainConfig(
            arch=arch,
            widths=w,
            input_size=size,
            loss=loss,
            epochs=epochs,
            lr=lr,
            label_smoothing=label_smoothing,
            batch_size=batch_size,
            seed=seed,
            device=device,
        )
        pre = pcfg = None
        if pretrain:
            shared = shared_data_dir() if pretrain == "shared" else None
            path = shared / "cifar10_train_jpeg.npz" if shared else Path(pretrain)
            pre = load_jpeg_pack(path, size)
            if pretrain == "shared":
                pre.source = "CIFAR-10 train, shared/data/cifar10_train_jpeg.npz"
            pcfg = TrainConfig(**{**base.to_dict(), "loss": "hard", "label_smoothing": 0.2, "epochs": pretrain_epochs})
            base = finetune_config(base, loss=loss, epochs=epochs)
    except (DataError, ValueError, FileNotFoundError) as err:
        _fail(err)
    artifact = build_model(name or out.name, data, targets, tr, ev, base, pre, pcfg, calibration_fraction, tta, fgsm)
    artifact.meta.training["command"] = "teaming " + shlex.join(sys.argv[1:])
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
    items: Optional[str] = typer.Option("7000:10000", help="positions to score"),
    fgsm: bool = typer.Option(False, help="also score FGSM robustness at l_inf 4/255"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the metrics as JSON here"),
    plot: Optional[Path] = typer.Option(None, help="write a reliability diagram (PNG) here"),
    device: str = typer.Option("auto"),
) -> None:
    """Score a model artifact on labelled images; prints a metrics table and optionally writes JSON."""
    from teaming.artifact import load_artifact
    from teaming.recipe import evaluate_items
    from teaming.train import resolve_device

    try:
        art = load_artifact(model, resolve_device(device))
        data = load_images(images, art.meta.input_size, art.classes)
        if data.classes != art.classes:
            raise DataError(f"image classes {data.classes} differ from the model's {art.classes}")
        human = resolve_labels(labels, data) if labels not in (None, "none") else None
        idx = parse_items(items, len(data))
    except (DataError, ValueError, FileNotFoundError) as err:
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


def team_inputs(
    model: Path, images: str, labels: str, items: str | None, reviewers: int, reference: str, seed: int, device: str
):
    """(artifact, TeamData) for labelled items: calibrated probs, each item's human answer and reference label.

    The human answer is the item's single label when it has one, else the majority of `reviewers` annotators
    sampled (seeded) in proportion to the votes, as if that many people had reviewed it.
    """
    from teaming.artifact import load_artifact
    from teaming.policy import human_answers
    from teaming.report import TeamData
    from teaming.train import resolve_device

    if reviewers < 1:
        raise DataError(f"--reviewers must be at least 1, got {reviewers}")
    if reference not in ("hard", "majority"):
        raise DataError(f"--reference must be 'hard' or 'majority', got {reference!r}")
    if labels == "hard":
        raise DataError("--labels must name human labels (cifar10h, cifar10n:COL or a CSV), not 'hard'")
    art = load_artifact(model, resolve_device(device))
    data = load_images(images, art.meta.input_size, art.classes)
    if data.classes != art.classes:
        raise DataError(f"image classes {data.classes} differ from the model's {art.classes}")
    human = resolve_labels(labels, data)
    idx = parse_items(items, len(data))
    human = human.subset(idx)
    rng = np.random.default_rng(seed)
    single = bool(np.all(human.votes == 1))  # one label per item (CIFAR-10N column): that is the answer
    if single:
        answers = human.majority()
    else:
        answers = np.stack([human.sample(rng) for _ in range(reviewers)], 1)
    if reference == "hard":
        if data.labels is None:
            raise DataError("these images carry no hard labels; use --reference majority")
        y = data.labels[idx]
    else:
        y = human.majority()
    probs = art.predict_proba(data.images[torch.from_numpy(idx)])
    counts = None if single else human.counts
    return art, TeamData(probs, human_answers(answers, len(art.classes)), y, art.classes, counts)


@app.command("fit-policy")
def fit_policy_cmd(
    model: Path = typer.Argument(Path("models/cifar10h-default"), help="artifact folder"),
    out: Path = typer.Option(..., help="policy JSON to write"),
    images: str = typer.Option("default", help="'default', a JPEG pack .npz, or an ImageFolder"),
    labels: str = typer.Option("cifar10h", help="human labels: 'cifar10h', 'cifar10n:COL', or a long CSV"),
    items: Optional[str] = typer.Option("7000:10000", help="held-out positions to fit on (never the training items)"),
    reviewers: int = typer.Option(1, help="human answer = majority of this many sampled annotators"),
    reference: str = typer.Option("hard", help="'hard' (image labels) or 'majority' (of the human labels)"),
    score: str = typer.Option("max_prob", help="max_prob | margin | entropy"),
    alpha: float = typer.Option(0.05, help="significance level of the paired t-tests"),
    resample: str = typer.Option("folds", help="folds | bootstrap"),
    n_resamples: int = typer.Option(10, help="paired resamples (folds or bootstrap replicates)"),
    max_deferral: Optional[float] = typer.Option(None, help="reviewer capacity: largest share of items to defer"),
    min_accuracy: Optional[float] = typer.Option(None, help="smallest acceptable team accuracy"),
    per_class: bool = typer.Option(False, help="one threshold per predicted class"),
    certify: Optional[float] = typer.Option(
        None, help="instead: certify this accuracy on auto-answered items (Learn then Test)"
    ),
    delta: float = typer.Option(0.05, help="failure probability for --certify"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
) -> None:
    """Fit a deferral policy on held-out labelled items and save it as JSON with its report."""
    from teaming.policy import CertifiedPolicy, PolicyError, ThresholdPolicy

    try:
        if certify is not None:
            policy = CertifiedPolicy(certify, delta, score)
        else:
            policy = ThresholdPolicy(
                score, alpha, resample, n_resamples, max_deferral, min_accuracy, per_class, random_state=seed
            )
        policy.check_params()  # fail on bad settings before loading any data
        art, data = team_inputs(model, images, labels, items, reviewers, reference, seed, device)
        if certify is not None:
            policy.fit(data.probs, data.y, data.human, art.classes)
        else:
            policy.fit(data.probs, data.human, data.y, art.classes)
    except (DataError, PolicyError, ValueError, FileNotFoundError) as err:
        _fail(err)
    policy.model_ = {
        "name": art.meta.name,
        "path": str(model),
        "created": art.meta.created,
        "fitted_on": f"{labels} items {items} of {images}",
        "reviewers": reviewers,
        "command": "teaming " + shlex.join(sys.argv[1:]),
    }
    policy.save(out)
    r = policy.report_
    get = (lambda k: getattr(r, k)) if not isinstance(r, dict) else r.get
    table = Table(title=f"policy {policy.version} on {len(data.y)} items")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("threshold", f"{policy.threshold_:.2f}")
    if not isinstance(r, dict):
        table.add_row("best threshold by mean", f"{r.best_threshold:.2f}")
    for key in ("machine_accuracy", "human_accuracy", "team_accuracy", "deferral_rate"):
        table.add_row(key.replace("_", " "), _fmt(get(key)))
    console.print(table)
    console.print(f"wrote {out}")


@app.command("report")
def report_cmd(
    model: Path = typer.Argument(Path("models/cifar10h-default"), help="artifact folder"),
    policy: Path = typer.Option(..., help="policy JSON from fit-policy"),
    out: Path = typer.Option(Path("reports/teaming.html"), help="report path, .html (self-contained) or .md"),
    images: str = typer.Option("default"),
    labels: str = typer.Option("cifar10h"),
    items: Optional[str] = typer.Option("7000:10000"),
    reviewers: int = typer.Option(1),
    reference: str = typer.Option("hard"),
    seed: int = typer.Option(1, help="seed of the sampled human answers (differs from fit-policy's by default)"),
    device: str = typer.Option("auto"),
) -> None:
    """Write a teaming report: gain table, threshold curve, reliability, accuracy by bins, error confusions."""
    from teaming.policy import PolicyError, load_policy
    from teaming.report import build_report, write_report

    try:
        pol = load_policy(policy)
        art, data = team_inputs(model, images, labels, items, reviewers, reference, seed, device)
        if pol.classes_ is not None and pol.classes_ != art.classes:
            raise PolicyError(f"the policy was fitted for classes {pol.classes_}, the model has {art.classes}")
        rep = build_report(data, pol, f"Teaming report: {art.meta.name} with policy {pol.version}")
        path = write_report(rep, out)
    except (DataError, PolicyError, ValueError, FileNotFoundError) as err:
        _fail(err)
    console.print(f"wrote {path}")


@app.command("retune")
def retune_cmd(
    db: str = typer.Option(..., help="database URL of the service's log, e.g. sqlite:///runs/teaming.db"),
    out: Optional[Path] = typer.Option(None, help="also write the new policy JSON here"),
    activate: bool = typer.Option(True, help="make it the active policy (the service picks it up on reload)"),
    audit_reviewers: int = typer.Option(3, help="reviewers per audited item, as the service is configured"),
    alpha: Optional[float] = typer.Option(None, help="override the active policy's alpha"),
    max_deferral: Optional[float] = typer.Option(None, help="override the reviewer capacity"),
    min_accuracy: Optional[float] = typer.Option(None, help="override the accuracy floor"),
) -> None:
    """Refit the deferral policy from audited outcomes in the log, with the same paired-t-test rule."""
    from teaming.loop import retune
    from teaming.policy import PolicyError

    try:
        policy = retune(
            db, out, activate, audit_reviewers, alpha=alpha, max_deferral=max_deferral, min_accuracy=min_accuracy
        )
    except (PolicyError, ValueError) as err:
        _fail(err)
    r = policy.report_
    console.print(
        f"policy [bold]{policy.version}[/bold] from {r.n_items} audited items: threshold "
        f"{policy.threshold_:.2f}, team {r.team_accuracy:.4f} at {r.deferral_rate:.1%} deferred "
        f"(machine {r.machine_accuracy:.4f}, human {r.human_accuracy:.4f})" + (" [active]" if activate else "")
    )


@app.command("simulate")
def simulate_cmd(
    url: str = typer.Option("http://127.0.0.1:3000", help="the running service"),
    db: str = typer.Option(..., help="the service's database URL (to retune from)"),
    reviewer_tokens: str = typer.Option(..., help="comma-separated reviewer tokens, one simulated reviewer each"),
    admin_token: str = typer.Option(..., help="admin token (policy reload)"),
    items: str = typer.Option("7000:10000", help="CIFAR-10 test positions to replay"),
    audit_reviewers: int = typer.Option(3),
    seed: int = typer.Option(0),
) -> None:
    """Replay held-out CIFAR-10H images through the service with simulated reviewers, retune, and score it."""
    from teaming.loop import simulate
    from teaming.policy import PolicyError

    try:
        idx = parse_items(items, 10000)
        res = simulate(
            url, reviewer_tokens.split(","), admin_token, db, idx.tolist(), seed, audit_reviewers=audit_reviewers
        )
    except (PolicyError, ValueError, DataError) as err:
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
