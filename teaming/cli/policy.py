"""`teaming fit-policy` and `teaming report`: a deferral policy fitted on held-out items, and its report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.table import Table

from teaming.cli._common import HELD_OUT_HELP, command_line, console, default, fail, fmt
from teaming.model.train import TrainConfig
from teaming.policy import CertifiedPolicy, RejectorPolicy, ThresholdPolicy


def fit_policy_cmd(
    ctx: typer.Context,
    model: Path = typer.Argument(Path("models/cifar10h-default"), help="artifact folder"),
    out: Path = typer.Option(..., help="policy JSON to write"),
    images: str = typer.Option("default", help="'default', a JPEG pack .npz, or an ImageFolder"),
    labels: str = typer.Option("cifar10h", help="human labels: 'cifar10h', 'cifar10n:COL', or a long CSV"),
    items: Optional[str] = typer.Option(
        None, help="positions to fit on (default: every item the model was not trained, calibrated or guarded on)"
    ),
    reviewers: int = typer.Option(1, help="human answer = majority of this many sampled annotators"),
    reference: str = typer.Option("hard", help="'hard' (image labels) or 'majority' (of the human labels)"),
    score: str = typer.Option(default(ThresholdPolicy, "score"), help="max_prob | margin | entropy"),
    alpha: float = typer.Option(default(ThresholdPolicy, "alpha"), help="significance level of the paired t-tests"),
    resample: str = typer.Option(default(ThresholdPolicy, "resample"), help="folds | bootstrap"),
    n_resamples: int = typer.Option(default(ThresholdPolicy, "n_resamples"), help="paired resamples"),
    max_deferral: Optional[float] = typer.Option(None, help="reviewer capacity: largest share of items to defer"),
    min_accuracy: Optional[float] = typer.Option(None, help="smallest acceptable team accuracy"),
    per_class: bool = typer.Option(default(ThresholdPolicy, "per_class"), help="one threshold per predicted class"),
    kind: str = typer.Option("threshold", help="threshold | rejector (a learned score; see EXPERIMENTS.md)"),
    certify: Optional[float] = typer.Option(
        None, help="instead: certify this accuracy on auto-answered items (Learn then Test)"
    ),
    delta: float = typer.Option(default(CertifiedPolicy, "delta"), help="failure probability for --certify"),
    unfamiliar_quantile: float = typer.Option(
        default(ThresholdPolicy, "unfamiliar_quantile"),
        help="the familiarity guard's limit: this quantile of the items' unfamiliarity (lower defers more)",
    ),
    set_coverage: float = typer.Option(0.9, help="coverage of the sets reviewers of deferred items may see; 0: none"),
    seed: int = typer.Option(default(ThresholdPolicy, "random_state")),
    device: str = typer.Option(TrainConfig.device),
) -> None:
    """Fit a deferral policy on held-out labelled items and save it as JSON with its report."""
    from teaming.policy import save_policy
    from teaming.team import load_team, team_warnings

    try:
        policy = _new_policy(**ctx.params)
        policy.check_params()  # fail on bad settings before loading any data
        if not 0 <= set_coverage < 1:
            raise ValueError(f"--set-coverage must lie in [0, 1), got {set_coverage}")
        art, data = load_team(model, images, labels, items, reviewers, reference, seed, device, progress=True)
        hacc = data.human_accuracy_per_item() if kind == "rejector" and reviewers == 1 else None
        extra = dict(unfamiliarity=data.unfamiliarity, features=data.features, human_accuracy=hacc)
        policy.fit(data.probs, data.y, data.human, art.classes, **extra)
        if set_coverage:
            policy.fit_sets(data.probs, data.y, set_coverage, unfamiliarity=data.unfamiliarity, features=data.features)
    except (ValueError, FileNotFoundError) as err:
        fail(err)
    policy.model_ = {**data.provenance(art, model, images, labels, items, reviewers), "command": command_line(ctx)}
    save_policy(policy, out)
    console.print(_fit_table(policy, data))
    for warning in team_warnings(data, policy):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(
        "fitted on these items: score it on others (teaming report leaves them out) or cross-fit (EXPERIMENTS.md)"
    )
    console.print(f"wrote {out}")


def _new_policy(
    *, kind, certify, delta, score, alpha, resample, n_resamples, max_deferral, min_accuracy, per_class, **options
):
    """The policy `fit-policy`'s options (all of them, by name) ask for: certified with --certify, else a threshold
    or learned-rejector rule."""
    if certify is not None:
        quantile = options["unfamiliar_quantile"]
        return CertifiedPolicy(target_accuracy=certify, delta=delta, score=score, unfamiliar_quantile=quantile)
    if kind not in ("threshold", "rejector"):
        raise ValueError(f"--kind must be threshold or rejector, got {kind!r} (--certify fits a certified policy)")
    common = dict(
        alpha=alpha,
        resample=resample,
        n_resamples=n_resamples,
        max_deferral=max_deferral,
        min_accuracy=min_accuracy,
        random_state=options["seed"],
        unfamiliar_quantile=options["unfamiliar_quantile"],
    )
    if kind == "rejector":
        return RejectorPolicy(**common)
    return ThresholdPolicy(score=score, per_class=per_class, **common)


def _fit_table(policy, data) -> Table:
    """The fitted policy's figures on the items it was fitted on."""
    r = policy.report_
    table = Table(title=f"policy {policy.version} on {r.n_items} items")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("threshold", f"{policy.threshold_:.2f}")
    if r.best_threshold is not None:
        table.add_row("best threshold by mean", f"{r.best_threshold:.2f}")
    reasons = policy.reasons(data.probs, unfamiliarity=data.unfamiliarity, features=data.features)
    defer, unsure = reasons != "", reasons == "unsure"
    table.add_row("machine accuracy", fmt(r.machine_accuracy))
    table.add_row("human accuracy", str(data.human_accuracy()))
    table.add_row("team accuracy", str(data.human_accuracy(defer)))
    table.add_row("deferral rate", fmt(r.deferral_rate))
    if r.unfamiliar_limit is not None:
        table.add_row("deferred as unfamiliar only", fmt(r.unfamiliar_rate))
    if (sets := policy.prediction_sets_) is not None and unsure.any():  # where reviewers may be shown them
        shown = sets.members(data.probs[unsure])
        held = np.mean([y in s for y, s in zip(data.y[unsure], shown)])
        size = np.mean([len(s) for s in shown])
        said = f"{held:.1%} hold the label, {size:.2f} classes"
        table.add_row(f"sets on items deferred as unsure ({sets.coverage:.0%} stated)", said)
    return table


def report_cmd(
    model: Path = typer.Argument(Path("models/cifar10h-default"), help="artifact folder"),
    policy: Path = typer.Option(..., help="policy JSON from fit-policy"),
    out: Path = typer.Option(Path("reports/teaming.html"), help="report path, .html (self-contained) or .md"),
    images: str = typer.Option("default"),
    labels: str = typer.Option("cifar10h"),
    items: Optional[str] = typer.Option(None, help=HELD_OUT_HELP),
    reviewers: int = typer.Option(1),
    reference: str = typer.Option("hard"),
    seed: int = typer.Option(default(ThresholdPolicy, "random_state"), help="first seed of the sampled human answers"),
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
        art, data = load_team(model, images, labels, items, reviewers, reference, seed, device, progress=True)
        data, left_out = data.without_fitted(pol, images)
        if pol.classes_ is not None and pol.classes_ != art.classes:
            raise PolicyError(f"the policy was fitted for classes {pol.classes_}, the model has {art.classes}")
        title = f"Teaming report: {art.meta.name} with policy {pol.version}"
        summary = summarize(data, pol, title, left_out, progress=True)
        path = write_report(build_report(summary), out)
    except (ValueError, FileNotFoundError) as err:
        fail(err)
    console.print(f"wrote {path}")
