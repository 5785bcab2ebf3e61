"""A simulated run of the whole loop against a running service: classify held-out CIFAR-10 test images, let
simulated reviewers (who sample from each image's CIFAR-10H votes) work the queue, retune, reload, and score
the retuned policy against the best threshold in hindsight on the same items.

It talks to the service only through teaming.client, and reads the log only to retune and score.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from tqdm import tqdm

from teaming.analysis import best_in_hindsight
from teaming.client import TeamingClient
from teaming.datasets import default_test_jpegs, load_cifar10h, load_default_test
from teaming.ops.retune import retune
from teaming.ops.review import AUDIT_REVIEWERS
from teaming.ops.store import Store


@dataclass
class SimulationResult:
    items: int
    deferred: int
    reviews: int
    audited_items: int
    policy_version: str
    threshold: float
    team_accuracy: float
    deferral_rate: float
    hindsight_accuracy: float
    hindsight_threshold: float
    hindsight_deferral: float
    hindsight_same_budget: float


def simulate(
    url: str,
    reviewer_tokens: Sequence[str],
    admin_token: str,
    db_url: str,
    items: Sequence[int],
    seed: int = 0,
    batch: int = 64,
    audit_reviewers: int = AUDIT_REVIEWERS,
    progress: bool = True,
) -> SimulationResult:
    """Replay CIFAR-10 test images `items` through the service at `url`, review, retune and score."""
    if len(reviewer_tokens) < audit_reviewers:
        raise ValueError(f"audits need {audit_reviewers} different reviewers; got {len(reviewer_tokens)} tokens")
    human = load_cifar10h()
    items = list(items)
    deferred = 0
    with TeamingClient(url, timeout=120) as client:
        for start in tqdm(range(0, len(items), batch), desc="classify", disable=not progress):
            chunk = items[start : start + batch]
            answers = client.classify(list(zip((f"cifar10_test/{i}" for i in chunk), default_test_jpegs(chunk))))
            deferred += sum(d.decision == "deferred" for d in answers)

    lock = threading.Lock()
    bar = tqdm(desc="review", unit="label", disable=not progress)

    def reviewer(token: str, worker_seed: int) -> int:
        local = np.random.default_rng(worker_seed)
        done = 0
        with TeamingClient(url, token) as c:
            while (task := c.claim().task) is not None:
                votes = human.counts[int(task.item_id.rsplit("/", 1)[1])]
                c.label(task.task_id, task.lease_id, int(local.choice(len(votes), p=votes / votes.sum())))
                done += 1
                with lock:
                    bar.update(1)
        return done

    with ThreadPoolExecutor(len(reviewer_tokens)) as pool:
        futures = [pool.submit(reviewer, t, seed + 1 + k) for k, t in enumerate(reviewer_tokens)]
        reviews = sum(f.result() for f in futures)
    bar.close()

    policy = retune(db_url, audit_reviewers=audit_reviewers)
    with TeamingClient(url, admin_token) as admin:
        reloaded = admin.reload_policy().policy_version
    if reloaded != policy.version:
        raise RuntimeError(f"service reloaded {reloaded}, expected {policy.version}")

    store = Store(db_url)
    logged = store.decisions_for([f"cifar10_test/{i}" for i in items])
    store.engine.dispose()
    probs = np.array([logged[f"cifar10_test/{i}"][0] for i in items], dtype=np.float64)
    probs /= probs.sum(1, keepdims=True)
    y = load_default_test().labels[np.array(items)]
    answer = human.subset(np.array(items)).sample(np.random.default_rng(seed))  # a fresh reviewer per item
    defer = policy.decide(probs)
    team = np.where(defer, answer == y, probs.argmax(1) == y)
    best = best_in_hindsight(probs, answer, y)
    same = best_in_hindsight(probs, answer, y, max_deferral=float(defer.mean()))
    return SimulationResult(
        items=len(items),
        deferred=deferred,
        reviews=reviews,
        audited_items=policy.report_.n_items,
        policy_version=policy.version,
        threshold=policy.threshold_,
        team_accuracy=float(team.mean()),
        deferral_rate=float(defer.mean()),
        hindsight_accuracy=best.accuracy,
        hindsight_threshold=best.threshold,
        hindsight_deferral=best.deferral_rate,
        hindsight_same_budget=same.accuracy,
    )
