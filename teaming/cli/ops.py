"""`teaming retune`, `reviewers`, `migrate` and `simulate`: the commands that work on the service's log."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from teaming.cli._common import console, fail


def retune_cmd(
    db: str = typer.Option(..., help="database URL of the service's log, e.g. sqlite:///runs/teaming.db"),
    out: Optional[Path] = typer.Option(None, help="also write the new policy JSON here"),
    activate: bool = typer.Option(True, help="activate it when it differs significantly from the active one"),
    model_version: Optional[str] = typer.Option(None, help="the model to retune for (default: the one serving)"),
    alpha: Optional[float] = typer.Option(None, help="override the active policy's alpha"),
    max_deferral: Optional[float] = typer.Option(None, help="override the reviewer capacity"),
    min_accuracy: Optional[float] = typer.Option(None, help="override the accuracy floor"),
) -> None:
    """Refit the deferral policy on the audited items in the log, with the same paired-t-test rule."""
    from teaming.ops.retune import retune

    try:
        r = retune(
            db,
            out,
            activate=activate,
            model_version=model_version,
            alpha=alpha,
            max_deferral=max_deferral,
            min_accuracy=min_accuracy,
        )
    except ValueError as err:
        fail(err)
    p = r.policy
    for name, why in (r.unreliable or {}).items():
        console.print(
            f"[yellow]left out:[/yellow] {why}. On the {r.left_out} audited items that asked {name} first, the next "
            f'reviewer stands for "the person", and {name}\'s answers count in no reference. {name} still answers '
            "deferred items live: look at the answers (teaming reviewers), and retune again after",
            highlight=False,
        )
    console.print(
        f"policy [bold]{p.version}[/bold] for {r.model_version} from {r.audited_items} audited items: threshold "
        f"{p.threshold_:.2f} (machine {p.report_.machine_accuracy:.4f}, human {p.report_.human_accuracy:.4f})"
    )
    table = Table(title="estimated on the audited items (95% Wilson intervals), and live from the log")
    for col in ("", "deferral", "team accuracy"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("retuned policy", str(r.deferral), str(r.team_accuracy))
    if r.active_deferral is not None:
        table.add_row(f"active {r.active_version}", str(r.active_deferral), str(r.active_team_accuracy))
    if r.live_deferral is not None:
        table.add_row("active, live (every decision)", str(r.live_deferral), "")
    console.print(table)
    verdict = "activated" if r.activated else ("kept the active version" if activate else "stored, not activated")
    console.print(f"{verdict}: {r.why}")
    if set(r.view_arms) - {"blind"}:  # sets were shown: whether they help, measured on the log's own arms
        for arm in r.view_arms.values():
            console.print(f"prediction sets: {arm.line()}", highlight=False)


def reviewers_cmd(
    db: str = typer.Option(..., help="database URL of the service's log, e.g. sqlite:///runs/teaming.db"),
) -> None:
    """Each reviewer's agreement with the others' consensus (95% interval) and Dawid-Skene accuracy."""
    from teaming.ops.consensus import fit_skills, reviewer_skills, unreliable_reviewers, with_work
    from teaming.ops.store import Store

    try:
        store = Store(db, must_exist=True)
        answers, work = store.queue.class_answers(), store.queue.work_counts()
        store.dispose()
        labels = [a[2] for a in answers]
        skills = fit_skills(answers, max(labels) + 1) if labels else None
    except ValueError as err:
        fail(err)
    table = Table(title=f"{len(answers)} class answers" + ("" if skills else "; Dawid-Skene needs more overlap"))
    columns = ("reviewer", "answers", "compared", "agreement", "95% interval", "accuracy (Dawid-Skene)", "none",
               "can't tell", "skips")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col == "reviewer" else "right")
    careless = unreliable_reviewers(answers)
    rows = with_work(reviewer_skills(answers, skills), work)
    for r in rows:
        ci = "" if r.ci_low is None else f"{r.ci_low:.1%} to {r.ci_high:.1%}"
        agree = "" if r.agreement is None else f"{r.agreement:.1%}"
        accuracy = "" if r.accuracy is None else f"{r.accuracy:.1%}"
        counts = (str(r.none_answers), str(r.unsure_answers), str(r.skips))
        table.add_row(r.reviewer, str(r.answers), str(r.compared), agree, ci, accuracy, *counts)
    console.print(table)
    for r in rows:
        for flag in ([careless[r.reviewer]] if r.reviewer in careless else []) + r.flags:
            console.print(f"[yellow]{r.reviewer}:[/yellow] {flag}", highlight=False)


def migrate_cmd(
    db: str = typer.Option(..., help="database URL of the service's log, e.g. sqlite:///runs/teaming.db"),
) -> None:
    """Bring the log's database schema to this release (the service and retune also do this when they open it)."""
    from teaming.ops.schema import upgrade
    from teaming.ops.store import connect

    try:
        engine = connect(db)
    except ValueError as err:
        fail(err)
    try:
        before, after = upgrade(engine)
    except Exception as err:  # an unreachable or foreign database: say so in one line
        fail(err)
    finally:
        engine.dispose()
    console.print(f"schema at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))


def simulate_cmd(
    url: str = typer.Option("http://127.0.0.1:3000", help="the running service"),
    db: str = typer.Option(..., help="the service's database URL: a fresh one, simulate refuses real work"),
    reviewer_tokens: str = typer.Option(..., help="comma-separated reviewer tokens, one simulated reviewer each"),
    admin_token: str = typer.Option(..., help="admin token (policy reload, outcomes)"),
    classify_token: Optional[str] = typer.Option(None, help="the service's TEAMING_CLASSIFY_TOKEN, if set"),
    images: Optional[Path] = typer.Option(
        None, help="your labelled photos (class folders or a flat folder; default: the CIFAR-10 test images)"
    ),
    labels: Optional[Path] = typer.Option(None, help="their votes CSV, which the simulated reviewers answer from"),
    classes: Optional[Path] = typer.Option(None, help="class names, one per line (a flat folder needs them)"),
    items: Optional[str] = typer.Option(None, help="positions to replay (default: 7000:10000 of CIFAR-10, else all)"),
    seed: int = typer.Option(0),
    shift: Optional[str] = typer.Option(
        None, help="change the photos part-way: jpeg50, grayscale, blur, upside-down or unfamiliar:SHARE"
    ),
    at: int = typer.Option(0, help="with --shift: the first replayed photo (counted from 0) that is changed"),
    reviewers: str = typer.Option(
        "votes", help="votes: each answer a draw from the photo's votes; cifar10n: three CIFAR-10N workers who differ"
    ),
) -> None:
    """Replay labelled photos through the service with simulated reviewers who answer from their votes: retune
    on the first half, measure the retuned policy live on the second."""
    from teaming.items import parse_items
    from teaming.ops.simulate import cifar_replay, folder_replay, simulate

    try:
        if (images is None) != (labels is None):
            raise ValueError("--images and --labels go together: your photos and their votes")
        people = _people(reviewers, images)
        replay = cifar_replay() if images is None else folder_replay(images, labels, classes)
        idx = parse_items(items or ("7000:10000" if images is None else None), len(replay))
        r = simulate(
            url,
            reviewer_tokens.split(","),
            admin_token,
            db,
            idx.tolist(),
            seed,
            classify_token=classify_token,
            replay=replay,
            shift=shift,
            shift_at=at,
            people=people,
        )
    except ValueError as err:
        fail(err)
    _say_simulated(r)


def _people(reviewers: str, images: Optional[Path]):
    """The simulated reviewers `--reviewers` names."""
    from functools import partial

    from teaming.datasets import shared_data_dir
    from teaming.ops.simulate import cifar10n_people, vote_people

    if reviewers == "votes":
        return vote_people
    if reviewers != "cifar10n":
        raise ValueError(f"--reviewers is votes or cifar10n, got {reviewers!r}")
    shared = shared_data_dir()
    if images is not None or shared is None:
        raise ValueError("--reviewers cifar10n needs the CIFAR-10 test images and ../shared/data (CIFAR-10N's workers)")
    return partial(cifar10n_people, shared=shared)


def _say_simulated(r) -> None:
    """simulate's report: what the loop did, the retune, and the live half's figures."""
    from teaming.ops.simulate import wait_interval

    console.print(
        f"{r.fit_items} + {r.live_items} items classified, {r.deferred} deferred, {r.answers} answers; "
        f"stuck tasks {r.stuck_tasks}, deferred items without a human answer {r.deferred_without_answer}, "
        f"final answers changed by audits {r.changed_by_audit}"
    )
    console.print(
        f"retuned on {r.audited_items} audited items: threshold {r.threshold:.2f}, "
        f"{'activated' if r.activated else 'kept the active version'} ({r.why}); served {r.policy_version}"
    )
    console.print(
        f"live half: deferral {r.live_deferral:.1%} against the estimate {r.deferral_estimate}; served answers "
        f"{r.team_accuracy:.4f} right (audit consensus included); with one annotator per deferred item "
        f"{r.one_person_team_accuracy:.4f}, machine alone {r.machine_accuracy:.4f}, one annotator alone "
        f"{r.human_accuracy:.4f}, best threshold in hindsight {r.hindsight_accuracy:.4f} at "
        f"{r.hindsight_deferral:.1%} deferred"
    )
    p50, p95 = (wait_interval(r.waits, q) for q in (50, 95))
    console.print(
        f"reviewers {', '.join(r.reviewers)}: served answers {r.team_interval}; {r.answers_per_item:.3f} reviewer "
        f"answers per live item ({r.defer_answers_per_item:.3f} on deferred items not audited); those items "
        f"waited p50 {p50[0]:.0f} s (95% {p50[1]:.0f} to "
        f"{p50[2]:.0f}), p95 {p95[0]:.0f} s ({p95[1]:.0f} to {p95[2]:.0f}) of the reviewers' time",
        highlight=False,
    )
    for alarm in r.alarms:
        console.print(f"[yellow]alarm[/yellow] {alarm}", highlight=False)


def redeliver_cmd(
    db: str = typer.Option(..., help="database URL of the service's log, e.g. sqlite:///runs/teaming.db"),
    since: Optional[str] = typer.Option(
        None, help="only events written since: an ISO date and time (2026-12-01T09:00) or a span back (6h, 2d)"
    ),
) -> None:
    """Queue webhook events that were given up for delivery again (the service's replicas post them)."""
    from teaming.ops.store import Store

    try:
        start = _since(since)
        store = Store(db, must_exist=True)
    except ValueError as err:
        fail(err)
    try:
        n = store.outbox.redeliver(start)
    finally:
        store.dispose()
    console.print(f"queued {n} given-up event{'' if n == 1 else 's'} again; they keep their ids (idempotency keys)")


def _since(spec: str | None) -> float:
    """Unix seconds from an ISO date and time (UTC unless it says otherwise) or a span back from now (6h, 2d)."""
    import datetime as dt
    import re
    import time

    if spec is None:
        return 0.0
    span = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", spec.strip())
    if span:
        return time.time() - float(span[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[span[2]]
    try:
        when = dt.datetime.fromisoformat(spec)
    except ValueError:
        raise ValueError(f"--since {spec!r} is neither an ISO date and time nor a span like 6h or 2d") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()
