"""Liu et al.'s seed table on CIFAR-10N: machines, humans, their teams, and how their mistakes differ.

Reads the probabilities written by `experiments/cifar10n_models.py` (train[40000:50000]) and scores them
against the clean labels, with humans = CIFAR-10N random_label1..3 and aggre_label on the same images.
The realistic team's threshold is fitted (paired t-tests, 10 folds) on a random half and scored on the
other half, over 20 splits. Prints Markdown tables; writes OUT/table.json.
Usage: python experiments/cifar10n_table.py [--runs runs/cifar10n]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from teaming.analysis import (
    accuracy_by_bins,
    best_in_hindsight,
    compare_confusions,
    cross_fitted_team,
    group_confusions,
    matching_percentage,
    oracle_accuracy,
)
from teaming.confidence import confidence
from teaming.datasets import shared_data_dir
from teaming.policy import ThresholdPolicy

HUMANS = ["random_label1", "random_label2", "random_label3", "aggre_label"]


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/cifar10n")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data (or $TEAMING_DATA) with cifar10n_labels.npz")
    runs = Path(args.runs)
    machines = {}
    for f in sorted(runs.glob("*.npz")):
        with np.load(f) as z:
            machines[f.stem] = z["probs"].astype(np.float64)
            items = z["items"]
    if len(machines) < 2:
        raise SystemExit(f"need at least two models' probabilities in {runs}; run experiments/cifar10n_models.py")
    with np.load(shared / "cifar10n_labels.npz") as z:
        y = z["clean_label"][items].astype(np.int64)
        humans = {h: z[h][items].astype(np.int64) for h in HUMANS}
    preds = {m: pr.argmax(1) for m, pr in machines.items()}

    fit = ThresholdPolicy(n_resamples=10).fit

    ai_ai = {
        m: max((best_in_hindsight(machines[m], preds[o], y) for o in machines if o != m), key=lambda t: t.accuracy)
        for m in machines
    }
    best_ai_ai = max(t.accuracy for t in ai_ai.values())
    print(f"# CIFAR-10N seed table: {len(y)} items (train[{items[0]}:{items[-1] + 1}]), clean labels as truth\n")
    print(
        "| machine | human | machine % | human % | oracle % | team (fitted) % | deferred % | threshold | "
        "team (hindsight) % | best AI-AI team % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for m, pr in machines.items():
        for h, ans in humans.items():
            team, splits = cross_fitted_team(fit, pr, ans, y, repeats=args.repeats)
            hind = best_in_hindsight(pr, ans, y)
            row = dict(
                machine=m,
                human=h,
                machine_acc=float((preds[m] == y).mean()),
                human_acc=float((ans == y).mean()),
                oracle=oracle_accuracy(preds[m], ans, y),
                team=asdict(team),
                team_sd=float(splits[:, 1].std()),
                hindsight=asdict(hind),
                best_ai_ai=asdict(ai_ai[m]),
            )
            rows.append(row)
            print(
                f"| {m} | {h} | {pct(row['machine_acc'])} | {pct(row['human_acc'])} | {pct(row['oracle'])} | "
                f"{pct(team.accuracy)} ± {pct(row['team_sd'])} | {pct(team.deferral_rate)} | {team.threshold:.2f} | "
                f"{pct(hind.accuracy)} | {pct(ai_ai[m].accuracy)} |"
            )
    single = [r for r in rows if r["human"] != "aggre_label"]
    worst_hai = min(r["team"]["accuracy"] for r in single)
    best_single = max(r["team"]["accuracy"] for r in single)
    print(
        f"\nworst single-human team (fitted) {pct(worst_hai)}%, best AI-AI team (hindsight) {pct(best_ai_ai)}%: "
        f"every human-AI team beats every AI-AI team: {worst_hai > best_ai_ai}"
    )
    print(f"best single-human team (fitted threshold) {pct(best_single)}%")

    # Liu et al. Table 2: paired t-tests of thresholds 0.1..0.9 against the best, 10 folds of all items.
    first = next(iter(machines))
    grid = np.round(np.arange(0.1, 1.0, 0.1), 2)
    pol = ThresholdPolicy(candidates=grid, n_resamples=10).fit(machines[first], y, humans["random_label2"])
    r = pol.report_
    print(f"\n## Paired t-tests: {first} + random_label2, best {r.best_threshold:.1f}, chosen {r.threshold:.1f}\n")
    print("| threshold | deferred % | team % | t | p |")
    print("|---|---|---|---|---|")
    for c in r.candidates:
        print(f"| {c.threshold:.1f} | {pct(c.deferral_rate)} | {pct(c.mean_accuracy)} | {c.t:.2f} | {c.p:.4f} |")

    # How mistakes differ: error confusions by pair type, matching on a balanced set, accuracy by confidence.
    single_humans = {h: humans[h] for h in HUMANS[:3]}
    groups = group_confusions(single_humans, preds, y, 10)
    tests = [
        compare_confusions(groups[a], groups[b], a, b)
        for a, b in (
            ("machine-machine", "human-machine"),
            ("human-human", "human-machine"),
            ("machine-machine", "human-human"),
        )
    ]
    print("\n## Shared mistakes: error confusion diagonals (same wrong answer when both are wrong)\n")
    print("| x | y | diagonal x | diagonal y | diag t | diag p | off-diag t | off-diag p |")
    print("|---|---|---|---|---|---|---|---|")
    for t in tests:
        print(
            f"| {t.label_x} | {t.label_y} | {pct(t.diag_x)} | {pct(t.diag_y)} | {t.diag_t:.2f} | {t.diag_p:.4f} | "
            f"{t.off_t:.2f} | {t.off_p:.4f} |"
        )
    ms = list(preds)
    match = {
        "machine-machine": [matching_percentage(preds[a], preds[b], y) for i, a in enumerate(ms) for b in ms[i + 1 :]],
        "human-machine": [matching_percentage(preds[m], single_humans[h], y) for m in ms for h in single_humans],
        "human-human": [
            matching_percentage(single_humans[a], single_humans[b], y)
            for i, a in enumerate(HUMANS[:3])
            for b in HUMANS[i + 1 : 3]
        ],
    }
    print("\n## Matching on a class-balanced set (mean over pairs)\n")
    print("| pairs | both wrong % | same wrong answer % |")
    print("|---|---|---|")
    for k, v in match.items():
        print(f"| {k} | {pct(np.mean([x.both_wrong for x in v]))} | {pct(np.mean([x.same_wrong_answer for x in v]))} |")
    conf = confidence(machines[first])
    edges = np.linspace(0.1, 1.0, 10)
    bins = {"machine " + first: accuracy_by_bins(preds[first] == y, conf, edges)}
    bins.update({h: accuracy_by_bins(humans[h] == y, conf, edges) for h in HUMANS[:3]})
    print(f"\n## Accuracy by {first}'s confidence (OLS slope per unit of confidence)\n")
    print("| answerer | " + " | ".join(f"{a:.1f}-{b:.1f}" for a, b in zip(edges[:-1], edges[1:])) + " | slope |")
    print("|---|" + "---|" * (len(edges) - 1) + "---|")
    for k, b in bins.items():
        print(f"| {k} | " + " | ".join(pct(a) for a in b.accuracy) + f" | {b.slope:+.3f} |")
    out = dict(
        rows=rows,
        ttest=r.to_dict(),
        confusion_tests=[asdict(t) for t in tests],
        matching={k: [asdict(x) for x in v] for k, v in match.items()},
        slopes={k: b.slope for k, b in bins.items()},
    )
    (runs / "table.json").write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
