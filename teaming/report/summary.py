"""What a teaming report says, as numbers: the machine, the person and the team on one labelled item set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from teaming.analysis import (
    BinnedAccuracy,
    Interval,
    Matching,
    TeamPoint,
    accuracy_by_bins,
    best_in_hindsight,
    error_confusion,
    matching_percentage,
    oracle_accuracy,
)
from teaming.confidence import confidence
from teaming.labels import HumanLabels
from teaming.policy import DeferralPolicy, PolicyReport, ThresholdPolicy
from teaming.report.deferral import DeferralComparison, compare_deferral
from teaming.team import TeamData


@dataclass
class TeamSummary:
    """Everything the report shows for one policy on one item set, before any of it is drawn or formatted."""

    title: str
    data: TeamData
    policy_version: str
    policy: PolicyReport
    threshold: float
    machine_accuracy: float
    human_accuracy: float
    team_accuracy: float
    deferral_rate: float
    human_interval: Interval
    team_interval: Interval
    unfamiliar_rate: float
    left_out: int
    methods: DeferralComparison | None
    hindsight: TeamPoint
    oracle: float
    curve: PolicyReport
    by_confidence: dict[str, BinnedAccuracy]
    by_disagreement: dict[str, BinnedAccuracy] | None
    error_shares: dict[str, np.ndarray]
    both_wrong: float
    same_wrong_answer: float
    matching: Matching

    @property
    def gain(self) -> float:
        """Team accuracy over the better of machine and human alone."""
        return self.team_accuracy - max(self.machine_accuracy, self.human_accuracy)


def _bar(desc: str, on: bool):
    """A progress-bar wrapper for a loop (shown on a terminal), or None."""
    from tqdm.auto import tqdm

    return (lambda it: tqdm(it, desc=desc, disable=None)) if on else None


def error_shares(pred: np.ndarray, human: np.ndarray, y: np.ndarray, c: int) -> dict[str, np.ndarray]:
    """Each one's mistakes as shares by (true class, wrong answer), titled with their count."""
    shares = {}
    for name, ans in (("machine", pred), ("human", human)):
        m = np.zeros((c, c))
        wrong = ans != y
        np.add.at(m, (y[wrong], ans[wrong]), 1)
        shares[f"{name} errors ({int(wrong.sum())})"] = m / max(wrong.sum(), 1)
    return shares


def summarize(
    data: TeamData, policy: DeferralPolicy, title: str, left_out: int = 0, progress: bool = False
) -> TeamSummary:
    """Score the policy's team on these items, with the curves and error comparisons the report draws.

    Human and team accuracy are means over the data's human answer draws; `left_out` counts the items left out
    because the policy was fitted on them.
    """
    p, y, h = data.probs, data.y, data.human
    pred = p.argmax(1)
    conf = confidence(p, policy.score)
    reasons = policy.reasons(p, unfamiliarity=data.unfamiliarity, features=data.features)
    defer = reasons != ""
    human, team = data.human_accuracy(), data.human_accuracy(defer)
    edges = np.linspace(conf.min(), 1, 11) if policy.score == "max_prob" else np.linspace(0, 1, 11)
    by_confidence = {
        "machine": accuracy_by_bins(pred == y, conf, edges),
        "human": accuracy_by_bins(h == y, conf, edges),
    }
    by_disagreement = None
    if data.human_counts is not None:
        ent = HumanLabels.from_counts(data.human_counts, data.classes).entropy()
        bins = np.linspace(0, max(ent.max(), 1e-6), 8)
        by_disagreement = {
            "machine": accuracy_by_bins(pred == y, ent, bins),
            "human": accuracy_by_bins(h == y, ent, bins),
        }
    c = len(data.classes)
    return TeamSummary(
        title=title,
        data=data,
        policy_version=policy.version,
        policy=policy.report_,
        threshold=policy.threshold_,
        machine_accuracy=float((pred == y).mean()),
        human_accuracy=human.mean,
        team_accuracy=team.mean,
        deferral_rate=float(defer.mean()),
        human_interval=human,
        team_interval=team,
        unfamiliar_rate=float((reasons == "unfamiliar").mean()),
        left_out=left_out,
        methods=None
        if data.features is None or len(y) < 100
        else compare_deferral(p, data.features, y, data.human_accuracy_per_item(), progress=_bar("halvings", progress)),
        hindsight=best_in_hindsight(p, h, y),
        oracle=oracle_accuracy(pred, h, y),
        curve=ThresholdPolicy(score=policy.score).fit(p, y, h, data.classes).report_,
        by_confidence=by_confidence,
        by_disagreement=by_disagreement,
        error_shares=error_shares(pred, h, y, c),
        both_wrong=float(((pred != y) & (h != y)).mean()),
        same_wrong_answer=float(np.trace(error_confusion(pred, h, y, c))),
        matching=matching_percentage(pred, h, y),
    )
