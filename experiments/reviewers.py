"""Reviewers who differ, on the shipped default's deferred items: first come first served with one answer against
skill routing, second opinions, and both (EXPERIMENTS.md section 8).

Offline, on the loop's own pure rules (ops/routing.py ranks the claims, ops/review.py decides second opinions and
final answers) over a simulated queue; no service. The policy is fitted on items 7000..8499 (one sampled
CIFAR-10H annotator as the person) and serves 8500..9999; the deferred items arrive at once, as a half of
`teaming simulate` does, and three simulated CIFAR-10N workers (teaming/crowd.py) work them at their own speed.
Routing and the posterior know each reviewer's confusion (an upper bound on what fitted Dawid-Skene skills give).
"Equal work" defers more items, lowest confidence first, one answer each, until it spends the answers the
routing-and-second-opinion arm spent.

    python experiments/reviewers.py --seeds 20
"""

from __future__ import annotations

import argparse
import heapq
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy import stats
from tqdm import tqdm

from teaming.crowd import SimReviewer, alike, answer_probs, cifar10n_workers, difficulty, spread
from teaming.datasets import load_cifar10h, load_default_test, shared_data_dir
from teaming.model import load_artifact
from teaming.ops.review import CLASS, DEFER, Answer, ItemState, LoopRules, after_answer
from teaming.ops.routing import RoutingRules, Waiting, rank
from teaming.policy import ThresholdPolicy

FIT, LIVE = np.arange(7000, 8500), np.arange(8500, 10000)


@dataclass
class Arm:
    name: str
    routing: bool
    second_below: float | None
    defer: np.ndarray | None = None  # which live items are deferred (default: the policy's)


@dataclass
class Run:
    accuracy: float  # served answers against the CIFAR-10 labels, on every live item
    answers_per_item: float
    wait_p50: float  # seconds from arrival to the deferred item's final answer
    wait_p95: float


def simulate(arm: Arm, probs, y, counts, easier, people: list[SimReviewer], defer, rng, same: bool) -> Run:
    """One run of the queue: reviewers take tasks as they come free, until none is left."""
    rules = LoopRules(audit_reviewers=1, second_opinion_below=arm.second_below, max_opinions=len(people))
    confusion = {p.name: p.confusion for p in people}
    items = {int(i): ItemState(True, False, int(probs[i].argmax()), [], [(int(i), DEFER)], None, probs[i])
             for i in np.flatnonzero(defer)}  # fmt: skip
    tasks = {int(i): int(i) for i in items}  # open task id -> item
    next_task, served, done_at, n_answers = len(probs), probs.argmax(1).copy(), {}, 0
    free = [(0.0, k) for k in range(len(people))]  # (time free, reviewer)
    while tasks and free:
        now, k = heapq.heappop(free)
        who = people[k]
        open_to = [t for t, i in tasks.items() if all(a.reviewer != who.name for a in items[i].answers)]
        if not open_to:
            continue  # nothing this reviewer may take: they stop
        if arm.routing:
            waiting = [Waiting(t, probs[tasks[t]], now) for t in open_to]
            task = rank(waiting, who.confusion, RoutingRules(max_wait_seconds=np.inf))[0]
        else:
            task = min(open_to)  # first come, first served
        i = tasks.pop(task)
        p = alike(counts[i]) if same else answer_probs(who, int(y[i]), counts[i], easier[i])
        said = Answer(who.name, DEFER, CLASS, int(rng.choice(len(p), p=p)))
        state = replace(
            items[i], answers=items[i].answers + [said], open_tasks=[(t, DEFER) for t, j in tasks.items() if j == i]
        )
        actions = after_answer(state, rules, confusion=confusion.get)
        n_answers += 1
        for t in actions.cancel:
            tasks.pop(t, None)
        for _ in actions.open:
            tasks[next_task] = i
            next_task += 1
        final = actions.final or state.final
        items[i] = replace(state, final=final, open_tasks=[(t, DEFER) for t, j in tasks.items() if j == i])
        if final is not None:
            served[i] = final.label
            if final.closed:  # one answer closes an item unless a second opinion is asked
                done_at[i] = now + who.seconds
        heapq.heappush(free, (now + who.seconds, k))
    waits = np.array(list(done_at.values())) if done_at else np.zeros(1)
    return Run(float((served == y).mean()), n_answers / len(y), *np.percentile(waits, [50, 95]).tolist())


def interval(xs: list[float]) -> str:
    a = np.asarray(xs)
    half = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else 0.0
    return f"{a.mean():.4f} ± {half:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--alike", action="store_true", help="today's identical reviewers instead of CIFAR-10N workers")
    ap.add_argument("--below", type=float, default=0.95, help="the second opinion's posterior target")
    args = ap.parse_args()
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data (CIFAR-10N's workers): absent")
    started = time.time()
    images, human = load_default_test(), load_cifar10h()
    idx = np.concatenate([FIT, LIVE])
    probs = load_artifact("models/cifar10h-default").predict_proba(images.images[torch.from_numpy(idx)])
    y_all, counts_all = images.labels[idx], human.counts[idx]
    fit, live = slice(0, len(FIT)), slice(len(FIT), None)
    people = spread(cifar10n_workers(shared / "cifar10n_labels.npz", shared / "cifar10n_side_info.csv"))
    if args.alike:  # one pooled CIFAR-10H confusion for all, each answer a draw from the item's votes
        pooled = np.stack([counts_all[y_all == c].sum(0) for c in range(counts_all.shape[1])]).astype(np.float64)
        people = [SimReviewer(f"alike-{k}", pooled / pooled.sum(1, keepdims=True), 4.0) for k in range(3)]
    easier = difficulty(counts_all, y_all)[live]
    for p in people:
        print(f"reviewer {p.name}: accuracy {p.accuracy:.3f} (classes alike), {p.seconds:.1f} s an answer")
    second = f"second opinion < {args.below}"
    arms = [Arm("first come, one answer", False, None), Arm("routing", True, None),
            Arm(second, False, args.below), Arm("routing + second opinion", True, args.below)]  # fmt: skip
    results: dict[str, list[Run]] = {a.name: [] for a in arms + [Arm("first come, equal work", False, None)]}
    for seed in tqdm(range(args.seeds), desc="seeds"):
        rng = np.random.default_rng(seed)
        sampled = human.subset(idx).sample(rng)
        policy = ThresholdPolicy(random_state=seed).fit(probs[fit], y_all[fit], sampled[fit])
        defer = policy.decide(probs[live])
        for arm in arms:
            results[arm.name].append(simulate(arm, probs[live], y_all[live], counts_all[live], easier, people, defer,
                                              np.random.default_rng(seed + 1000), args.alike))  # fmt: skip
        spent = results[arms[-1].name][-1].answers_per_item * len(easier)
        wider = np.zeros(len(easier), bool)
        wider[np.argsort(probs[live].max(1), kind="stable")[: int(round(spent))]] = True
        same_work = simulate(arms[0], probs[live], y_all[live], counts_all[live], easier, people, wider,
                             np.random.default_rng(seed + 1000), args.alike)  # fmt: skip
        results["first come, equal work"].append(same_work)
    print(f"\n{args.seeds} seeds, {len(easier)} live items, {time.time() - started:.0f} s; mean ± 95% interval")
    print(f"machine alone: {(probs[live].argmax(1) == y_all[live]).mean():.4f}\n")
    print("| arm | team accuracy | reviewer answers per item | wait p50 (s) | wait p95 (s) |\n|---|---|---|---|---|")
    for name, runs in results.items():
        cols = [
            interval([getattr(r, f) for r in runs]) for f in ("accuracy", "answers_per_item", "wait_p50", "wait_p95")
        ]
        print(f"| {name} | " + " | ".join(cols) + " |")
    pairs = [("routing + second opinion", "first come, equal work"), (second, "first come, equal work"),
             ("routing", "first come, one answer")]  # fmt: skip
    for name, against in pairs:
        ours, base = (np.array([r.accuracy for r in results[n]]) for n in (name, against))
        p = stats.ttest_rel(ours, base).pvalue
        print(f"{name} against {against}: {100 * (ours - base).mean():+.2f} points (paired t over seeds, p={p:.3g})")


if __name__ == "__main__":
    main()
