"""Retuning from the log: refit the served model's policy on its audited items, with the same rule (paired
t-tests) as the offline fit, and activate it only when it differs significantly from the active one.

Audits are a uniform random sample of all items, auto-answered and deferred alike, so figures on them estimate
the live ones: each estimate comes with a 95% Wilson interval, next to what the log shows live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from teaming._validation import PolicyError
from teaming.ops.consensus import fit_skills, unreliable_reviewers
from teaming.ops.monitors import interval
from teaming.ops.review import DEFER, Answer, audit_answers
from teaming.ops.store import Store
from teaming.ops.views import ArmFigures, view_arms
from teaming.policy import ThresholdPolicy, policy_from_dict, save_policy

MIN_AUDITED = 50
MAX_ACCURACY_LOSS = 0.01  # less deferral is taken up only when team accuracy surely falls no more than this


@dataclass
class Estimate:
    """A rate on the audited sample with its 95% Wilson interval."""

    value: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, hits: np.ndarray) -> "Estimate":
        k, n = int(np.sum(hits)), len(hits)
        return cls(k / n, *interval(k / n, n), n)

    def __str__(self) -> str:
        return f"{self.value:.1%} (95% {self.low:.1%} to {self.high:.1%}, n={self.n})"


@dataclass
class Retuned:
    """A retune's result: the refitted policy, whether it is now active, and the figures behind the choice."""

    policy: ThresholdPolicy
    active_version: str | None
    activated: bool
    why: str
    model_version: str
    audited_items: int
    deferral: Estimate
    team_accuracy: Estimate
    active_deferral: Estimate | None
    active_team_accuracy: Estimate | None
    live_deferral: Estimate | None  # the active policy's deferral over every decision logged under it
    unreliable: dict[str, str] | None = None  # reviewers left out as "the person", and why
    left_out: int = 0  # audited items that asked one of them first (the next reviewer stands in)
    view_arms: dict[str, ArmFigures] = field(default_factory=dict)  # what prediction sets did (ops/views.py)


@dataclass
class AuditedItems:
    """The audited items retune fits and judges on, aligned: the model's probabilities, "the person"'s answer, the
    reference (the other reviewers' consensus), the guard's logged scores (NaN where none) and, for a policy that
    needs them, its logged confidence scores."""

    probs: np.ndarray
    human: np.ndarray
    ref: np.ndarray
    unfamiliarity: np.ndarray
    scores: np.ndarray | None = None
    unreliable: dict[str, str] = field(default_factory=dict)  # reviewers left out as "the person", and why
    left_out: int = 0  # items that asked one of them first (the next reviewer stands in)
    view_arms: dict[str, ArmFigures] = field(default_factory=dict)  # the views' arms on audited deferred items

    def team_ok(self, defer: np.ndarray) -> np.ndarray:
        """Whether the team is right on each item when `defer` sends it to the person."""
        return np.where(defer, self.human == self.ref, self.probs.argmax(1) == self.ref)


def retune(
    db_url: str,
    out: str | Path | None = None,
    *,
    activate: bool = True,
    model_version: str | None = None,
    alpha: float | None = None,
    **overrides,
) -> Retuned:
    """Refit on the fully audited items of `model_version` (default: the model of the latest decision).

    `overrides` replace the active policy's settings (max_deferral, min_accuracy, ...) where not None. The new
    version is stored, and activated when `activate` and it differs significantly (McNemar at alpha) from the
    active one in team accuracy or deferral on the audited items. As in `fit`, the threshold is chosen on
    confidence alone (the cap included); the estimates add what the guard defers.
    """
    store = Store(db_url, must_exist=True)
    try:
        model_version = model_version or store.log.latest_model()
        if model_version is None:
            raise PolicyError(f"the log at {_where(db_url)} holds no decisions yet")
        body = store.active_policy(model_version)
        active = None if body is None else policy_from_dict(body)
        audit = audited_items(store, model_version, active, body)
        params = {k: v for k, v in {"alpha": alpha, **overrides}.items() if v is not None}
        if active is None:
            policy = ThresholdPolicy(**params).fit(audit.probs, audit.ref, audit.human)
        else:
            policy = active.refit(audit.probs, audit.ref, audit.human, scores=audit.scores, **params)
        policy.model_ = {
            **((body or {}).get("model") or {}),
            "retuned_from": None if active is None else body["version"],
            "audited_items": int(len(audit.ref)),
            "fitted_on": f"audit log {_where(db_url)}",
        }
        result, differs = judge(store, policy, active, body, audit, model_version)
        result.activated = activate and differs
        store.add_policy(policy.to_dict(), model_version, activate=result.activated)
        if out is not None:
            save_policy(policy, out)
        return result
    finally:
        store.dispose()


def audited_items(store: Store, model_version: str, active, body: dict | None) -> AuditedItems:
    """The fully audited items of `model_version`, with the reviewers' answers weighed: unreliable reviewers
    left out, the reference voted with their fitted skills. A policy that needs its logged scores keeps only the
    items its very rejector scored. Under a fallback (the harm alarm fired) only audits made since it count: the
    world the refit is for is the one after the change."""
    fallback = body is not None and (body.get("model") or {}).get("fallback")
    rows = store.log.audited(model_version, store.activated_at(body["version"]) if fallback else 0.0)
    answers = store.log.answers_by_item([r.decision_id for r in rows])
    items = [(r.probs, r.deferred, [Answer(*a) for a in answers[r.decision_id]]) for r in rows]
    class_answers = store.queue.class_answers()
    skills = fit_skills(class_answers, len(rows[0].probs) if rows else 2)
    unreliable = unreliable_reviewers(class_answers)
    kept: list[int] = []
    probs, human, ref = audit_answers(items, None if skills is None else skills.vote, kept, frozenset(unreliable))
    if len(ref) < MIN_AUDITED:
        raise PolicyError(
            f"only {len(ref)} fully audited items of {model_version} in the log"
            f"{' since the fallback after the harm alarm' if fallback else ''}; retuning needs {MIN_AUDITED} "
            "(audits are on with TEAMING_AUDIT_RATE > 0; /v1/queue/stats shows their progress)"
        )
    rows = [rows[i] for i in kept]
    audit = AuditedItems(
        probs,
        human,
        ref,
        np.array([np.nan if r.unfamiliarity is None else r.unfamiliarity for r in rows], dtype=np.float64),
        unreliable=unreliable,
        left_out=sum(_asked(deferred, said) in unreliable for _, deferred, said in items),
        view_arms=view_arms([said for _, deferred, said in items if deferred]),
    )
    if active is None or not active.logged_scores:
        return audit
    same = _same_rejector(store, body, {r.policy_version for r in rows})
    keep = np.array([r.policy_version in same and r.policy_score is not None for r in rows])
    if keep.sum() < MIN_AUDITED:
        raise PolicyError(
            f"only {keep.sum()} fully audited items were scored by the active rejector; retuning needs {MIN_AUDITED}"
        )
    scores = np.array([r.policy_score for r, k in zip(rows, keep) if k], dtype=np.float64)
    return AuditedItems(
        probs[keep], human[keep], ref[keep], audit.unfamiliarity[keep], scores, unreliable, audit.left_out,
        audit.view_arms,
    )  # fmt: skip


def judge(
    store: Store, policy: ThresholdPolicy, active, body: dict | None, audit: AuditedItems, model_version: str
) -> tuple[Retuned, bool]:
    """The refit against the active policy on the audited items: the figures, and whether to take it up."""
    new_defer = policy.decide_logged(audit.probs, audit.unfamiliarity, audit.scores)
    new_ok = audit.team_ok(new_defer)
    result = Retuned(
        policy=policy,
        active_version=None if body is None else body["version"],
        activated=False,
        why="no active policy for this model",
        model_version=model_version,
        audited_items=len(audit.ref),
        deferral=Estimate.of(new_defer),
        team_accuracy=Estimate.of(new_ok),
        active_deferral=None,
        active_team_accuracy=None,
        live_deferral=None,
        unreliable=audit.unreliable,
        left_out=audit.left_out,
        view_arms=audit.view_arms,
    )
    if active is None:
        return result, True
    old_defer = active.decide_logged(audit.probs, audit.unfamiliarity, audit.scores)
    old_ok = audit.team_ok(old_defer)
    result.active_deferral, result.active_team_accuracy = Estimate.of(old_defer), Estimate.of(old_ok)
    deferred, total = store.log.live_deferral(body["version"])
    if total:
        result.live_deferral = Estimate.of(np.arange(total) < deferred)
    differs, result.why = significant_change(old_ok, new_ok, old_defer, new_defer, policy.alpha)
    if new_defer.mean() > old_defer.mean():
        result.why += f"; {_why_more(policy, active)}"
    elif differs and new_defer.mean() < old_defer.mean():
        holds, said = less_deferral(policy, old_ok, new_ok, old_defer)
        differs &= holds
        result.why += f"; {said}"
    return result, differs


def significant_change(
    old_ok: np.ndarray, new_ok: np.ndarray, old_defer: np.ndarray, new_defer: np.ndarray, alpha: float
) -> tuple[bool, str]:
    """Whether two policies differ on the same items in team accuracy or in deferral (exact McNemar tests)."""
    parts, differs = [], False
    for name, a, b in (("team accuracy", old_ok, new_ok), ("deferral", old_defer, new_defer)):
        gained, lost = int(np.sum(b & ~a)), int(np.sum(a & ~b))
        p = 1.0 if gained + lost == 0 else stats.binomtest(gained, gained + lost).pvalue
        differs |= p < alpha
        parts.append(f"{name} +{gained}/-{lost} items, McNemar p={p:.3g}")
    return differs, "; ".join(parts) + (" (significant)" if differs else f" (no change significant at {alpha})")


def less_deferral(
    policy: ThresholdPolicy, old_ok: np.ndarray, new_ok: np.ndarray, old_defer: np.ndarray
) -> tuple[bool, str]:
    """Whether to take up a policy that defers less, and why: when it keeps team accuracy (`non_inferior`), or
    when the active one defers more than the reviewers' capacity (the cut stands and its cost is said)."""
    holds, loss, bound = non_inferior(old_ok, new_ok)
    sign = "loss" if loss >= 0 else "gain"
    cost = f"team accuracy {sign} {100 * abs(loss):.1f} points, at most {100 * bound:.1f} lost at 95%"
    cap = getattr(policy, "max_deferral", None)
    if cap is not None and float(old_defer.mean()) > cap:
        return True, f"the active policy defers {old_defer.mean():.1%}, over capacity {cap:.1%}: taken up ({cost})"
    if holds:
        return True, f"less deferral keeps team accuracy ({cost})"
    return False, f"less deferral is not taken up: {cost}, more than {100 * MAX_ACCURACY_LOSS:g} allowed"


def non_inferior(
    old_ok: np.ndarray, new_ok: np.ndarray, margin: float = MAX_ACCURACY_LOSS
) -> tuple[bool, float, float]:
    """Whether the paired loss of team accuracy on the same items (new wrong where the old was right, less the
    reverse, per item) has its one-sided 95% upper bound within `margin`; with the loss and its bound."""
    d = old_ok.astype(np.float64) - new_ok.astype(np.float64)  # +1: lost, -1: gained
    loss = float(d.mean())
    bound = loss + (float(stats.norm.ppf(0.95) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0)
    return bound <= margin, loss, bound


def _why_more(policy: ThresholdPolicy, active: ThresholdPolicy) -> str:
    """Why the rule asks for more deferral: the active threshold, among the refit's candidates, fails it on the
    audited items (significantly less accurate than the best, over capacity or under the accuracy floor)."""
    report = policy.report_
    t = getattr(active, "threshold_", None)
    same = [c for c in (report.candidates if report else []) if t is not None and abs(c.threshold - t) < 1e-9]
    if (
        not same
        or getattr(active, "class_thresholds_", None) is not None
        or getattr(active, "score", None) != policy.score
    ):
        return "the active threshold is not among the refit's candidates"
    if same[0].eligible:
        return f"the active threshold {t:.3g} also passes the rule here"
    best = report.best_threshold
    return (
        f"the active threshold {t:.3g} fails the rule on these items (p={same[0].p:.3g} against the best, {best:.3g})"
    )


def _asked(deferred: bool, answers: list[Answer]) -> str | None:
    """Who an audited item asked first: its defer reviewer, else its first auditor."""
    first = next((a for a in answers if a.kind == DEFER), None) if deferred else None
    first = first or (answers[0] if answers else None)
    return None if first is None else first.reviewer


def _where(db_url: str) -> str:
    return db_url.split("@")[-1]


def _same_rejector(store: Store, active: dict, versions: set[str]) -> set[str]:
    """The logged policy versions whose scores came from the active policy's very rejector (a retune keeps it)."""
    return {v for v, b in store.policy_bodies(versions).items() if b.get("rejector") == active.get("rejector")}
