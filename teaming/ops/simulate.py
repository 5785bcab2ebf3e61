"""A simulated run of the whole loop against a running service, on items it creates itself.

Labelled photos (held-out CIFAR-10 test images with their CIFAR-10H votes, or a folder of one's own with its
votes CSV) are classified in two halves. Simulated reviewers (one per reviewer token) work the queue after each
half, on a simulated clock: each takes the next task when they come free and spends their own seconds on it, so
the waits of deferred items are those of people at that pace (the service itself answers at once). They answer
from the photo's votes (`votes`: today's reviewers, all alike), or as three CIFAR-10N workers who differ in skill
and speed (`cifar10n`, teaming/crowd.py). After the first half the policy is retuned from the audits and
reloaded; the second half then measures it live: its deferral against the retune's estimate, and the team's
served answers against the reference labels. It talks to the service only through teaming.client, and reads the
log only to check that it holds nothing but simulated items and to get the logged probabilities for the best
threshold in hindsight.
"""

from __future__ import annotations

import heapq
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from teaming.analysis import best_in_hindsight
from teaming.api import Decision, OutcomeOut
from teaming.client import TeamingClient
from teaming.data import list_image_folder
from teaming.datasets import default_test_jpegs, load_cifar10h, load_default_test
from teaming.labels import HumanLabels, read_classes
from teaming.ops.alarmbook import alarm_line
from teaming.ops.retune import Estimate, Retuned, retune
from teaming.ops.store import Store

PREFIX = "sim/"  # every item a simulation creates: sim/<run>/<position among the replayed photos>


@dataclass
class Replay:
    """The labelled photos a simulation sends: their encoded bytes (read when sent), people's votes, the
    reference label of each and the class names."""

    photos: Callable[[Sequence[int]], list[bytes]]
    counts: np.ndarray
    truth: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.truth)


def cifar_replay() -> Replay:
    """The embedded CIFAR-10 test images with their CIFAR-10H votes and CIFAR-10 labels."""
    images = load_default_test()
    return Replay(default_test_jpegs, load_cifar10h().counts, images.labels, images.classes)


def folder_replay(images: Path, labels: Path, classes: Path | None = None) -> Replay:
    """A folder of one's own photos with its votes CSV: the class folders are the reference (a flat folder's
    is the majority vote)."""
    listing = list_image_folder(images, read_classes(classes) if classes else None)
    votes = HumanLabels.from_csv(labels, listing.classes, ids=listing.ids)
    truth = listing.labels if listing.labels is not None else votes.majority()
    return Replay(lambda idx: [listing.files[i].read_bytes() for i in idx], votes.counts, truth, listing.classes)


VOTE_SECONDS = 4.0  # a `votes` reviewer's seconds per answer


@dataclass
class People:
    """Who works the queue in a simulation: one per reviewer token, each with an answer rule and a speed."""

    names: list[str]
    seconds: list[float]
    answer: Callable[[int, int, np.random.Generator], int]  # (reviewer, photo position, rng) -> class id


def vote_people(replay: Replay, n: int) -> People:
    """Today's simulated reviewers: each answer a draw from the photo's votes, whoever answers."""

    def answer(k: int, i: int, rng: np.random.Generator) -> int:
        votes = replay.counts[i]
        return int(rng.choice(len(votes), p=votes / votes.sum()))

    return People([f"votes-{k}" for k in range(n)], [VOTE_SECONDS] * n, answer)


def cifar10n_people(replay: Replay, n: int, shared: Path) -> People:
    """Three real CIFAR-10N workers who differ (the 10th, 50th and 90th percentiles of accuracy), in turn per
    reviewer token: their confusions and speeds, moved by each photo's difficulty."""
    from teaming.crowd import answer_probs, cifar10n_workers, difficulty, spread

    workers = spread(cifar10n_workers(shared / "cifar10n_labels.npz", shared / "cifar10n_side_info.csv"))
    who = [workers[k % len(workers)] for k in range(n)]
    easier = difficulty(replay.counts, replay.truth)

    def answer(k: int, i: int, rng: np.random.Generator) -> int:
        p = answer_probs(who[k], int(replay.truth[i]), replay.counts[i], easier[i])
        return int(rng.choice(len(p), p=p))

    return People([w.name for w in who], [w.seconds for w in who], answer)


@dataclass
class SimulationResult:
    fit_items: int
    live_items: int
    deferred: int
    answers: int
    stuck_tasks: int  # tasks still open or claimed once the reviewers ran out of work
    deferred_without_answer: int
    changed_by_audit: int  # audited items whose final answer is not the first one they were given
    audited_items: int  # fully audited items the retune used
    policy_version: str
    activated: bool
    why: str
    threshold: float
    deferral_estimate: Estimate  # the served policy's deferral, estimated on the first half's audits
    live_deferral: float
    team_accuracy: float  # the served answers on the live half against the CIFAR-10 labels (audits included)
    one_person_team_accuracy: float  # the live half's deferrals answered by one sampled annotator instead
    machine_accuracy: float
    human_accuracy: float  # one sampled CIFAR-10H annotator per live item
    hindsight_accuracy: float  # the best threshold on the live half in hindsight, with that annotator
    hindsight_deferral: float
    alarms: list[str] = field(default_factory=list)  # alarms open at the end, with what the service did
    reviewers: list[str] = field(default_factory=list)  # who the simulated reviewers were, with their pace
    answers_per_item: float = 0.0  # reviewer answers on the live half's items, audits included, per item
    defer_answers_per_item: float = 0.0  # of those, the answers to deferred items that are not audited
    waits: np.ndarray = field(default_factory=lambda: np.zeros(0))  # simulated seconds each deferred live item
    # that is not audited waited for its last answer, from the half's start
    served_right: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per live item, in replay order

    @property
    def team_interval(self) -> Estimate:
        """The served answers' accuracy on the live half with its 95% Wilson interval."""
        return Estimate.of(self.served_right)


def simulate(
    url: str,
    reviewer_tokens: Sequence[str],
    admin_token: str,
    db_url: str,
    items: Sequence[int],
    seed: int = 0,
    batch: int = 64,
    progress: bool = True,
    classify_token: str | None = None,
    replay: Replay | None = None,
    shift: str | None = None,
    shift_at: int = 0,
    people: Callable[[Replay, int], People] = vote_people,
) -> SimulationResult:
    """Replay photos `items` (positions in `replay`, CIFAR-10 test images by default) through the service at
    `url` in two halves, worked by `people(replay, len(reviewer_tokens))`; see the module doc."""
    _check_fresh(db_url)
    replay = replay or cifar_replay()
    crowd = people(replay, len(reviewer_tokens))
    order = list(items)
    if shift is not None:
        replay = shifted(replay, shift, set(order[shift_at:]), seed)
    run = f"{PREFIX}{uuid.uuid4().hex[:8]}/"
    half = len(order) // 2
    with TeamingClient(url, classify_token, timeout=120) as caller:
        fitted = _classify(caller, run, replay, order[:half], batch, progress)
        answers = _review(url, reviewer_tokens, run, crowd, seed, progress).answers
        tuned = retune(db_url)
        with TeamingClient(url, admin_token) as admin:
            policy_version = admin.reload_policy().policy_version
        live = _classify(caller, run, replay, order[half:], batch, progress)
    worked = _review(url, reviewer_tokens, run, crowd, seed + 1, progress)
    done = _Run(fitted, live, answers + worked.answers, tuned, policy_version, worked.last_answer)
    result = _score(url, admin_token, db_url, replay, order[half:], seed, done)
    result.reviewers = [f"{name} ({sec:.1f} s an answer)" for name, sec in zip(crowd.names, crowd.seconds)]
    return result


@dataclass
class _Run:
    """What a simulated run did: the decisions of each half, the answers given, and the retune between them."""

    fitted: list[Decision]
    live: list[Decision]
    answers: int
    tuned: Retuned
    policy_version: str
    last_answer: dict[str, float]  # live item -> simulated seconds from the half's start to its last answer


def _score(
    url: str, admin_token: str, db_url: str, replay: Replay, live_items: list[int], seed: int, r: _Run
) -> SimulationResult:
    """The run's figures: what the service served on the live half against the truth, and the loop's counts."""
    fitted, live, answers, tuned, policy_version = r.fitted, r.live, r.answers, r.tuned, r.policy_version
    with TeamingClient(url, admin_token) as admin:
        stats = admin.stats()
        finals = {o.decision_id: o for o in admin.all_outcomes()}
        raised = [alarm_line(a) for a in admin.alarms().open]
    plain = [d for d in live if d.decision == "deferred" and not finals[d.decision_id].audit]  # no audit answers
    waits = [r.last_answer[d.item_id] for d in plain if d.item_id in r.last_answer]
    live_idx = np.array(live_items)
    truth = replay.truth[live_idx]
    served = [-1 if (f := finals[d.decision_id].final_label) is None else replay.classes.index(f) for d in live]
    probs = _logged_probs(db_url, [d.item_id for d in live])
    sampled = HumanLabels.from_counts(replay.counts[live_idx], replay.classes).sample(np.random.default_rng(seed))
    deferred = np.array([d.decision == "deferred" for d in live])
    best = best_in_hindsight(probs, sampled, truth)
    everything = fitted + live
    return SimulationResult(
        fit_items=len(fitted),
        live_items=len(live),
        deferred=sum(d.decision == "deferred" for d in everything),
        answers=answers,
        stuck_tasks=stats.queue_open + stats.queue_claimed,
        deferred_without_answer=sum(
            d.decision == "deferred" and finals[d.decision_id].final_label is None for d in everything
        ),
        changed_by_audit=sum(_changed_by_audit(o) for o in finals.values()),
        audited_items=tuned.audited_items,
        policy_version=policy_version,
        activated=tuned.activated,
        why=tuned.why,
        threshold=tuned.policy.threshold_,
        deferral_estimate=tuned.deferral if tuned.activated or tuned.active_deferral is None else tuned.active_deferral,
        live_deferral=float(deferred.mean()),
        team_accuracy=float(np.mean(np.array(served) == truth)),
        served_right=np.array(served) == truth,
        waits=np.array(waits, dtype=np.float64),
        answers_per_item=_answers(finals, live) / len(live),
        defer_answers_per_item=_answers(finals, plain) / len(live),
        one_person_team_accuracy=float(np.where(deferred, sampled == truth, probs.argmax(1) == truth).mean()),
        machine_accuracy=float((probs.argmax(1) == truth).mean()),
        human_accuracy=float((sampled == truth).mean()),
        hindsight_accuracy=best.accuracy,
        hindsight_deferral=best.deferral_rate,
        alarms=raised,
    )


def _answers(finals: dict[int, OutcomeOut], decided: Sequence[Decision]) -> int:
    """Reviewer answers the service holds on these decisions' items."""
    return sum(len(finals[d.decision_id].reviews or []) for d in decided)


def wait_interval(waits: np.ndarray, q: float) -> tuple[float, float, float]:
    """The q-th percentile of the waits with its 95% bootstrap interval (scipy's percentile method)."""
    from scipy.stats import bootstrap

    if len(waits) < 2:
        value = float(waits[0]) if len(waits) else float("nan")
        return value, value, value
    ci = bootstrap((waits,), lambda a, axis: np.percentile(a, q, axis=axis), method="percentile", random_state=0)
    return float(np.percentile(waits, q)), float(ci.confidence_interval.low), float(ci.confidence_interval.high)


def shifted(replay: Replay, kind: str, items: set[int], seed: int = 0) -> Replay:
    """The replay with the photos of `items` changed as a drifting world would change them: `jpeg50`,
    `grayscale`, `blur`, `upside-down`, or `unfamiliar:SHARE` (that share replaced by images of no class)."""
    from teaming.probes import photo_shift, shift_photos

    if kind.startswith("unfamiliar:"):
        share = float(kind.split(":", 1)[1])
        if not 0 < share <= 1:
            raise ValueError(f"unfamiliar:SHARE takes a share in (0, 1], got {share}")
        return Replay(
            _unfamiliar_photos(replay.photos, items, share, seed), replay.counts, replay.truth, replay.classes
        )
    photo_shift(kind)  # refused now, not at the first photo it would change

    def photos(idx: Sequence[int]) -> list[bytes]:
        data = replay.photos(idx)
        moved = [k for k, i in enumerate(idx) if i in items]
        for k, changed in zip(moved, shift_photos(kind, [data[k] for k in moved])):
            data[k] = changed
        return data

    return Replay(photos, replay.counts, replay.truth, replay.classes)


def _unfamiliar_photos(photos: Callable, items: set[int], share: float, seed: int) -> Callable:
    """Photos of which `share` of `items` (drawn by seed) are swapped for images of none of the classes."""
    import io

    from PIL import Image

    from teaming.probes import unfamiliar_sets

    rng = np.random.default_rng(seed)
    swapped = {i for i in sorted(items) if rng.random() < share}
    pool = None

    def read(idx: Sequence[int]) -> list[bytes]:
        nonlocal pool
        data = photos(idx)
        for k, i in enumerate(idx):
            if i in swapped:
                if pool is None:  # made once, on the first swap
                    import torch

                    sets = unfamiliar_sets(torch.zeros(8, 3, 32, 32, dtype=torch.uint8))
                    pool = torch.cat(list(sets.values())).permute(0, 2, 3, 1).numpy()
                buf = io.BytesIO()
                Image.fromarray(pool[i % len(pool)]).save(buf, "PNG")
                data[k] = buf.getvalue()
        return data

    return read


def _check_fresh(db_url: str) -> None:
    """Refuse a log with decisions that simulate did not make: it runs only on a fresh database."""
    store = Store(db_url, must_exist=True)  # the service made it; another file is a typo
    foreign = store.log.count_items(exclude_prefix=PREFIX)
    store.dispose()
    if foreign:
        raise ValueError(
            f"the log at {db_url.split('@')[-1]} holds {foreign} decisions that teaming simulate did not make; "
            "it runs only on a fresh database (serve with e.g. TEAMING_DB_URL=sqlite:///runs/simulate.db)"
        )


def _logged_probs(db_url: str, item_ids: list[str]) -> np.ndarray:
    """The probabilities the log holds for these items, renormalised (the log keeps them rounded)."""
    store = Store(db_url)
    logged = store.log.decisions_for(item_ids)
    store.dispose()
    probs = np.array([logged[i][0] for i in item_ids], dtype=np.float64)
    return probs / probs.sum(1, keepdims=True)


def _bar(iterable=None, **kwargs) -> tqdm:
    """A progress bar that redraws every 0.1 s on a terminal and every 15 s into a log file."""
    return tqdm(iterable, mininterval=0.1 if sys.stderr.isatty() else 15, **kwargs)


def _classify(
    caller: TeamingClient, run: str, replay: Replay, indices: list[int], batch: int, progress: bool
) -> list[Decision]:
    out: list[Decision] = []
    for start in _bar(range(0, len(indices), batch), desc="classify", disable=not progress):
        chunk = indices[start : start + batch]
        out += caller.classify([(f"{run}{i}", b) for i, b in zip(chunk, replay.photos(chunk))])
    return out


@dataclass
class _Worked:
    answers: int
    last_answer: dict[str, float]  # item id -> simulated seconds from the start to its last answer


def _review(url: str, tokens: Sequence[str], run: str, people: People, seed: int, progress: bool) -> _Worked:
    """The reviewers work the queue on a simulated clock until none is given anything of this run: the one who
    comes free first claims next and answers after their own seconds. A task of another item (not this run's) is
    skipped, and that reviewer waits for the others."""
    bar = _bar(desc="review", unit="answer", disable=not progress)
    rng, last, done = np.random.default_rng(seed), {}, 0
    clients = [TeamingClient(url, token) for token in tokens]
    free = [(0.0, k, k) for k in range(len(tokens))]  # (simulated time free, turn, reviewer): ties in turn
    turn = len(tokens)
    idle: set[int] = set()  # found nothing since the last answer
    try:
        while len(idle) < len(tokens):
            now, _, k = heapq.heappop(free)
            task = clients[k].claim().task
            turn += 1
            if task is None or not task.item_id.startswith(run):
                if task is not None:
                    clients[k].skip(task.task_id, task.lease_id)
                idle.add(k)
                heapq.heappush(free, (max([now] + [t for t, _, _ in free]), turn, k))  # after the others
                continue
            idle.clear()
            clients[k].label(task.task_id, task.lease_id, people.answer(k, int(task.item_id.removeprefix(run)), rng))
            last[task.item_id] = now + people.seconds[k]
            heapq.heappush(free, (now + people.seconds[k], turn, k))
            done += 1
            bar.update(1)
    finally:
        for c in clients:
            c.close()
        bar.close()
    return _Worked(done, last)


def _changed_by_audit(o: OutcomeOut) -> bool:
    """An audited item whose final answer differs from the first one it had: the model's, or its first
    reviewer's for a deferred item."""
    if not o.audit or o.final_label is None:
        return False
    first = o.machine_label if o.outcome == "auto" else next((r.label for r in o.reviews if r.label), None)
    return first is not None and o.final_label != first
