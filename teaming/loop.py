"""Closing the loop: refit the deferral policy from audited outcomes in the log, and a simulated run of it.

`retune` reads the audit table from the decision store and applies the same paired-t-test rule as offline.
`simulate` replays CIFAR-10H images through a running service over HTTP, answers its queue with simulated
reviewers who sample from each image's human votes, retunes and reloads.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import httpx
import numpy as np
from tqdm import tqdm

from teaming.analysis import best_in_hindsight
from teaming.data import load_default_test, pack_jpegs
from teaming.labels import load_cifar10h
from teaming.policy import PolicyError, ThresholdPolicy, policy_from_dict
from teaming.store import Store

MIN_AUDITED = 50


def retune(
    db_url: str,
    out: str | Path | None = None,
    activate: bool = True,
    audit_reviewers: int = 3,
    **overrides,
) -> ThresholdPolicy:
    """Refit the active threshold policy's settings on the fully audited items; store it as a new version."""
    store = Store(db_url, audit_reviewers)
    probs, human, ref = store.audit_table()
    if len(ref) < MIN_AUDITED:
        raise PolicyError(f"only {len(ref)} fully audited items in the log; retuning needs {MIN_AUDITED}")
    active = store.active_policy()
    params: dict = {}
    classes = None
    if active is not None:
        current = policy_from_dict(active)
        classes = current.classes_
        if isinstance(current, ThresholdPolicy):
            params = current.params()
    params.update({k: v for k, v in overrides.items() if v is not None})
    policy = ThresholdPolicy(**params).fit(probs, human, ref, classes)
    policy.model_ = {
        **((active or {}).get("model") or {}),
        "retuned_from": None if active is None else active["version"],
        "audited_items": int(len(ref)),
        "fitted_on": f"audit log {db_url.split('@')[-1]}",
    }
    store.add_policy(policy.to_dict(), activate=activate)
    if out is not None:
        policy.save(out)
    return policy


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
    audit_reviewers: int = 3,
    progress: bool = True,
) -> SimulationResult:
    """Replay CIFAR-10 test images through the service, let simulated reviewers work the queue, retune, reload,
    and score the retuned policy against the best threshold in hindsight on the same items.
    """
    if len(reviewer_tokens) < audit_reviewers:
        raise ValueError(f"audits need {audit_reviewers} different reviewers; got {len(reviewer_tokens)} tokens")
    human = load_cifar10h()
    rng = np.random.default_rng(seed)
    items = list(items)
    client = httpx.Client(base_url=url, timeout=120)
    deferred = 0
    for start in tqdm(range(0, len(items), batch), desc="classify", disable=not progress):
        chunk = items[start : start + batch]
        payload = [
            {"id": f"cifar10_test/{i}", "data": base64.b64encode(b).decode()} for i, b in zip(chunk, pack_jpegs(chunk))
        ]
        r = client.post("/classify", json={"images": payload})
        r.raise_for_status()
        deferred += sum(d["decision"] == "deferred" for d in r.json())

    lock = threading.Lock()
    counts = {"reviews": 0}
    bar = tqdm(desc="review", unit="label", disable=not progress)

    def reviewer(token: str, worker_seed: int) -> None:
        local = np.random.default_rng(worker_seed)
        c = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"})
        while True:
            task = c.post("/v1/queue/claim").raise_for_status().json()["task"]
            if task is None:
                return
            index = int(task["item_id"].rsplit("/", 1)[1])
            votes = human.counts[index]
            label = int(local.choice(len(votes), p=votes / votes.sum()))
            c.post(
                f"/v1/queue/tasks/{task['task_id']}/label", json={"lease_id": task["lease_id"], "label": label}
            ).raise_for_status()
            with lock:
                counts["reviews"] += 1
                bar.update(1)

    threads = [threading.Thread(target=reviewer, args=(t, seed + 1 + k)) for k, t in enumerate(reviewer_tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()

    policy = retune(db_url, audit_reviewers=audit_reviewers)
    r = client.post("/v1/admin/policy/reload", headers={"Authorization": f"Bearer {admin_token}"})
    r.raise_for_status()
    if r.json()["policy_version"] != policy.version:
        raise RuntimeError(f"service reloaded {r.json()['policy_version']}, expected {policy.version}")

    logged = Store(db_url, audit_reviewers).decisions_for([f"cifar10_test/{i}" for i in items])
    probs = np.array([logged[f"cifar10_test/{i}"][0] for i in items], dtype=np.float64)
    probs /= probs.sum(1, keepdims=True)
    y = load_default_test().labels[np.array(items)]
    answer = human.subset(np.array(items)).sample(rng)  # a fresh simulated reviewer per item
    defer = policy.decide(probs)
    team = np.where(defer, answer == y, probs.argmax(1) == y)
    best = best_in_hindsight(probs, answer, y)
    same = best_in_hindsight(probs, answer, y, max_deferral=float(defer.mean()))
    return SimulationResult(
        items=len(items),
        deferred=deferred,
        reviews=counts["reviews"],
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
