"""The monitors applied to the live log: a thin shell over `monitors` that reads the active policy version's
streams (from when it became active), raises each alarm once across replicas (the alarm book), announces it
through the webhook outbox, and on harm falls back as the settings say.

Fallbacks are policy versions like any other, recorded with their reason (`model.fallback`), so replicas take
them up as they take up retunes; `clear` undoes one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from teaming.ops.alarmbook import RaisedAlarm
from teaming.ops.consensus import agreements
from teaming.ops.monitors import ALPHA, DRIFT_TOLERANCE, HARM_TOLERANCE, Alarm, agreement, drift, harm, waiting
from teaming.ops.review import CLASS, DEFER, Answer, consensus
from teaming.ops.store import Store
from teaming.policy import policy_from_dict

OnHarm = Literal["alert", "defer-all", "previous"]
DEFER_ALL = 1.000001  # a threshold above every confidence score: everything goes to people


@dataclass(kw_only=True)
class WatchRules:
    """What the monitors test at which level, and what the service does on harm."""

    alpha: float = ALPHA
    harm_tolerance: float = HARM_TOLERANCE
    drift_tolerance: float = DRIFT_TOLERANCE
    max_wait_seconds: float = 3600.0
    min_agreement: float = 0.8
    on_harm: OnHarm = "defer-all"


@dataclass
class Watched:
    """One look at the log: the active policy version, each monitor's state, and what this look raised."""

    policy_version: str | None
    alarms: list[Alarm]
    fallback: dict | None  # the active policy's fallback record, when it is a fallback
    raised: list[Alarm]
    fell_back_to: str | None = None
    open: list[RaisedAlarm] = field(default_factory=list)  # booked and not cleared, on any version, by any replica


def look(store: Store, model_version: str, rules: WatchRules, vote=None) -> Watched:
    """Every monitor on the active policy version's streams; alarms newly raised are booked and announced once,
    and harm falls back (`rules.on_harm`)."""
    body = store.active_policy(model_version)
    if body is None:
        return Watched(None, [], None, [])
    version = body["version"]
    fallback = (body.get("model") or {}).get("fallback")
    alarms = monitors(store, body, rules, vote)
    out = Watched(version, alarms, fallback, [])
    for a in alarms:
        if a.raised and _book(store, version, a):
            out.raised.append(a)
            if a.name == "harm" and rules.on_harm != "alert":
                out.fell_back_to = fall_back(store, model_version, body, rules.on_harm, a.says)
    out.open = store.alarms.of(None, open_only=True)
    return out


def monitors(store: Store, body: dict, rules: WatchRules, vote=None) -> list[Alarm]:
    """The monitors' states on the streams of one policy version since it became active, and the reviewers'
    agreement over all their answers. A fallback is watched for staffing alone: it defers by design."""
    oldest = store.queue.oldest_waiting(DEFER)
    agreed = [agrees for _, agrees in agreements(store.queue.class_answers())]
    staffing = [
        agreement(agreed, rules.min_agreement, rules.alpha),
        waiting(None if oldest is None else time.time() - oldest, rules.max_wait_seconds),
    ]
    if (body.get("model") or {}).get("fallback"):
        return staffing
    version, report = body["version"], body["report"]
    since = store.activated_at(version)
    flags = np.array(store.log.flags(version, since), dtype=bool).reshape(-1, 2)
    n = int(report["n_items"])
    out = []
    if report.get("accepted_accuracy") is not None:
        answered = max(1, round(n * (1 - report["deferral_rate"])))
        right = auto_answers_right(store, body, since, vote)
        out.append(harm(right, report["accepted_accuracy"], answered, rules.harm_tolerance, rules.alpha))
    out.append(drift("deferral_rate", flags[:, 0], report["deferral_rate"], n, rules.drift_tolerance, rules.alpha))
    if body.get("unfamiliar_limit") is not None:
        beyond = 1 - float(body["params"].get("unfamiliar_quantile", 0.9))  # the limit is this quantile's complement
        out.append(drift("unfamiliar_rate", flags[:, 1], beyond, n, rules.drift_tolerance, rules.alpha, False))
    return out + staffing


def auto_answers_right(store: Store, body: dict, since: float, vote=None) -> np.ndarray:
    """Whether each audited, auto-answered item of this policy version was right by its auditors' consensus."""
    rows = [r for r in store.log.audited(None, since) if r.policy_version == body["version"] and not r.deferred]
    answers = store.log.answers_by_item([r.decision_id for r in rows])
    right = []
    for r in rows:
        said = [Answer(*a) for a in answers[r.decision_id]]
        if any(a.verdict == CLASS for a in said):
            right.append(int(np.argmax(r.probs)) == consensus(said, vote)[0])
    return np.array(right, dtype=np.float64)


def _book(store: Store, version: str, a: Alarm) -> bool:
    """Book the alarm and queue its webhook event in one transaction; False when it was booked already."""
    with store.begin() as conn:
        if not store.alarms.raise_once(conn, version, a.name, a.says, a.evidence):
            return False
        store.outbox.add(conn, None, "alarm.raised", {"policy_version": version, **alarm_dict(a)})
    return True


def fall_back(store: Store, model_version: str, body: dict, how: OnHarm, reason: str) -> str:
    """Activate the fallback: the last earlier version that raised no harm alarm (`previous`; defer-all when
    there is none), or the active policy with everything deferred. Recorded as a new version with its reason."""
    record = {"replaces": body["version"], "reason": reason, "at": time.time()}
    policy = None
    if how == "previous":
        earlier = store.previous_policies(model_version, body["version"])
        harmed = {a.policy_version for a in store.alarms.of([b["version"] for b in earlier]) if a.name == "harm"}
        held = [b for b in earlier if b["version"] not in harmed and not (b.get("model") or {}).get("fallback")]
        if held:
            policy, record["action"] = policy_from_dict(held[0]), f"previous {held[0]['version']}"
    if policy is None:
        policy, record["action"] = policy_from_dict(body), "defer-all"
        policy.threshold_, policy.class_thresholds_ = DEFER_ALL, None
    policy.model_, policy.created_ = {**(policy.model_ or {}), "fallback": record}, None
    version = store.add_policy(policy.to_dict(), model_version, activate=True)
    with store.begin() as conn:
        store.alarms.set_action(conn, body["version"], "harm", f"{record['action']}: {version}")
    return version


def clear(store: Store, model_version: str, by: str) -> str | None:
    """An admin's all-clear: every open alarm is marked cleared (and announced), and a fallback gives way to the
    version it replaced; that version's monitors start again. Returns the version then active."""
    body = store.active_policy(model_version)
    with store.begin() as conn:
        cleared = store.alarms.clear(conn, by)
        if cleared:
            store.outbox.add(conn, None, "alarm.cleared", {"by": by, "alarms": cleared})
    fallback = None if body is None else (body.get("model") or {}).get("fallback")
    if fallback:
        replaced = store.policy_bodies({fallback["replaces"]}).get(fallback["replaces"])
        if replaced is not None:
            return store.add_policy(replaced, model_version, activate=True)
    return None if body is None else body["version"]


def alarm_dict(a: Alarm) -> dict:
    """An alarm as JSON (webhook events, /v1/alarms); evidence capped where JSON numbers stop."""
    return {**asdict(a), "evidence": min(a.evidence, 1e12)}
