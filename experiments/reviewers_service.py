"""Reviewers who differ, through the service: `teaming simulate` on 3,000 held-out items with three CIFAR-10N
workers, under first come first served, skill routing, second opinions, and both (EXPERIMENTS.md section 8).

Each arm starts the real service (the README's tokens and simulate settings, a fresh SQLite log) with its
TEAMING_ROUTING and TEAMING_SECOND_OPINION_BELOW, and runs teaming.ops.simulate against it with the same seed:
the same photos, the same first-half retune rule, the same reviewers (teaming/crowd.py) on a simulated clock.
Each arm is compared with first come first served on the same live items (exact McNemar on the served answers).

    python -m experiments.reviewers_service [--items 7000:10000] [--below 0.95]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from teaming.datasets import shared_data_dir
from teaming.items import parse_items
from teaming.ops.simulate import SimulationResult, cifar10n_people, simulate, wait_interval
from tests.support.process import ServiceProcess

TOKENS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
ADMIN = "admin-secret"


def run_arm(tmp: Path, name: str, env: dict[str, str], items: list[int], seed: int) -> SimulationResult:
    db = f"sqlite:///{tmp / (name + '.db')}"
    settings = {
        "TEAMING_REVIEWER_TOKENS": ",".join(f"{k}:{v}" for k, v in TOKENS.items()),
        "TEAMING_ADMIN_TOKEN": ADMIN,
        "TEAMING_AUDIT_RATE": "0.25",
        "TEAMING_DB_URL": db,
        "TEAMING_SEED": str(seed),
        # three reviewers right 71-78% of the time make the audits' consensus disagree with a model that has not
        # changed: the harm alarm fires; alert-only keeps the arms comparable (its line is printed below)
        "TEAMING_ON_HARM": "alert",
        "BENTOML_HOME": str(tmp / f"bentoml-{name}"),
        **env,
    }
    proc = ServiceProcess(settings, tmp / f"{name}.log").start()
    try:
        people = partial(cifar10n_people, shared=shared_data_dir())
        return simulate(proc.url, list(TOKENS.values()), ADMIN, db, items, seed, people=people)
    finally:
        proc.stop()


def mcnemar(ours: np.ndarray, base: np.ndarray) -> str:
    b, c = int((ours & ~base).sum()), int((~ours & base).sum())
    p = binomtest(b, b + c).pvalue if b + c else 1.0
    return f"{100 * (ours.mean() - base.mean()):+.2f} points ({b} items right only here, {c} only there; p = {p:.2g})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", default="7000:10000")
    ap.add_argument("--below", default="0.95", help="the second opinion's posterior target")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if shared_data_dir() is None:
        raise SystemExit("needs ../shared/data (CIFAR-10N's workers): absent")
    items = parse_items(args.items, 10000).tolist()
    arms = {
        "first come, one answer": {"TEAMING_ROUTING": "fifo"},
        "routing": {"TEAMING_ROUTING": "skill"},
        f"second opinion < {args.below}": {"TEAMING_ROUTING": "fifo", "TEAMING_SECOND_OPINION_BELOW": args.below},
        "routing + second opinion": {"TEAMING_ROUTING": "skill", "TEAMING_SECOND_OPINION_BELOW": args.below},
    }
    results: dict[str, SimulationResult] = {}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, env) in enumerate(arms.items()):
            results[name] = run_arm(Path(tmp), f"arm{k}", env, items, args.seed)
            print(f"{name}: done at {time.time() - started:.0f} s", flush=True)
    first = next(iter(results.values()))
    took = time.time() - started
    print(f"\n{len(items)} items, seed {args.seed}, {took:.0f} s; reviewers: {', '.join(first.reviewers)}")
    print("| arm | served answers right (95% Wilson) | answers per live item (deferred, not audited) | wait p50 (s) "
          "| wait p95 (s) | live deferral | audit estimate |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for name, r in results.items():
        p50, p95 = (wait_interval(r.waits, q) for q in (50, 95))
        within = r.deferral_estimate.low <= r.live_deferral <= r.deferral_estimate.high
        print(f"| {name} | {r.team_interval} | {r.answers_per_item:.3f} ({r.defer_answers_per_item:.3f}) | "
              f"{p50[0]:.0f} ({p50[1]:.0f} to {p50[2]:.0f}) | {p95[0]:.0f} ({p95[1]:.0f} to {p95[2]:.0f}) | "
              f"{r.live_deferral:.1%} | {r.deferral_estimate} {'holds' if within else 'MISSES'} |")  # fmt: skip
    for name, r in list(results.items())[1:]:
        print(f"{name} against first come: {mcnemar(r.served_right, first.served_right)}")
    for name, r in results.items():
        print(f"{name}: retune {'activated' if r.activated else 'kept'} threshold {r.threshold:.2f} ({r.why})")
        for alarm in r.alarms:
            print(f"{name}: alarm {alarm}")


if __name__ == "__main__":
    main()
