"""Anytime-valid monitors of the live loop, as pure functions on streams.

Each monitor bets against "nothing has changed" on one stream of 0/1 outcomes (Waudby-Smith and Ramdas'
testing by betting, as Podkopaev and Ramdas use it to detect a harmful rise in risk). Under no change the
bettor's wealth is a nonnegative supermartingale that starts at 1, so by Ville's inequality it ever reaches
1/alpha with probability at most alpha: the alarm's false-alarm probability holds however often it is checked.
A monitor's stream starts when its policy version becomes active.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy import stats
from scipy.signal import lfilter

ALPHA = 0.05
HARM_TOLERANCE = 0.02  # accuracy of auto-answers may fall this far below the fitted figure's lower bound
DRIFT_TOLERANCE = 0.02  # the deferral rate may move this far beyond the fitted figure's interval
BET_SHARE = 0.5  # of the largest bet that keeps the wealth nonnegative: caps the loss on any one outcome
MEMORY = 50.0  # outcomes: the half-life of the moments that size each bet (measured in EXPERIMENTS.md)

Side = Literal["above", "below"]


def wealth(x: Sequence[float] | np.ndarray, bound: float, side: Side, memory: float = MEMORY) -> np.ndarray:
    """The bettor's wealth after each outcome x in [0, 1], betting that their mean lies `side` of `bound`.

    Each bet is predictable: sized from the outcomes before it (the aGRAPA plug-in of Waudby-Smith and Ramdas,
    on exponentially weighted moments with a half-life of `memory` outcomes, so that the bettor notices a change
    after a long quiet stretch). Under H0 (the mean at `bound` or on the other side) the wealth is then a
    supermartingale, whatever the bets.
    """
    x = np.asarray(x, dtype=np.float64)
    z = (x - bound) if side == "above" else (bound - x)  # under H0 each z has mean <= 0
    worst = bound if side == "above" else 1.0 - bound  # the largest loss per unit bet
    keep = 0.5 ** (1 / memory)
    mean = lfilter([1 - keep], [1, -keep], z, zi=[0.0])[0]  # prior: mean 0, second moment 0.25
    second = lfilter([1 - keep], [1, -keep], z**2, zi=[keep * 0.25])[0]
    mean, second = np.r_[0.0, mean[:-1]], np.r_[0.25, second[:-1]]  # only what came before each bet
    bets = np.clip(mean / np.maximum(second, 1e-6), 0.0, BET_SHARE / max(worst, 1e-12))
    return np.cumprod(1.0 + bets * z)


@dataclass
class Alarm:
    """One monitor's state: whether its alarm is raised, the evidence (the bettor's wealth against the 1/alpha
    it needs), and where the stream stands against its bound."""

    name: str
    raised: bool
    estimate: float | None  # the stream's mean so far
    bound: float  # what the mean is tested against
    side: Side  # the alarm is for a mean `side` of the bound
    evidence: float  # the wealth now (its largest so far once raised)
    needed: float  # 1 / alpha
    n: int  # outcomes since the policy became active
    at: int | None = None  # the outcome at which it was raised
    says: str = ""


def bet_alarm(name: str, x: Sequence[float], bound: float, side: Side, alpha: float = ALPHA, says: str = "") -> Alarm:
    """The alarm of one one-sided bet over the stream `x` (raised from the first outcome its wealth reaches
    1/alpha: the evidence does not expire)."""
    x = np.asarray(x, dtype=np.float64)
    w = wealth(x, bound, side) if len(x) else np.ones(0)
    crossed = np.flatnonzero(w >= 1 / alpha)
    at = int(crossed[0]) + 1 if len(crossed) else None
    evidence = float(w.max() if at else (w[-1] if len(w) else 1.0))
    return Alarm(name, at is not None, float(x.mean()) if len(x) else None, bound, side, evidence, 1 / alpha, len(x),
                 at, says)  # fmt: skip


def interval(rate: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson interval of a rate measured on n items."""
    if n <= 0:
        return 0.0, 1.0
    ci = stats.binomtest(int(round(rate * n)), n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def harm(
    machine_right: Sequence[float], accepted_accuracy: float, fitted_on: int, tolerance: float = HARM_TOLERANCE,
    alpha: float = ALPHA,
) -> Alarm:  # fmt: skip
    """Audited auto-answers: is the machine, where it answers alone, less accurate than the policy was fitted to
    deliver? The bound is the fitted accuracy's lower 95% limit (on its `fitted_on` answered items) less
    `tolerance`; the audits are a uniform sample, so their auto-answered items are a sample of all of them."""
    bound = interval(accepted_accuracy, fitted_on)[0] - tolerance
    a = bet_alarm("harm", machine_right, bound, "below", alpha)
    a.says = (
        f"auto-answers are {a.estimate:.1%} right on {a.n} audited items, below the {bound:.1%} bound (fitted "
        f"{accepted_accuracy:.1%}, less its 95% interval and {100 * tolerance:g} points; evidence {a.evidence:.3g} of "
        f"{a.needed:.0f})"
        if a.raised
        else f"auto-answers hold: {_rate(a.estimate)} right on {a.n} audited items against {bound:.1%}"
    )
    return a


def drift(
    name: str, flags: Sequence[float], fitted_rate: float, fitted_on: int, tolerance: float = DRIFT_TOLERANCE,
    alpha: float = ALPHA, both_ways: bool = True,
) -> Alarm:  # fmt: skip
    """Early warning without labels: does the share of items flagged (deferred, or deferred as unfamiliar) move
    out of the fitted figure's 95% interval widened by `tolerance`? Two bets at alpha/2 when `both_ways`."""
    low, high = interval(fitted_rate, fitted_on)
    sides = [bet_alarm(name, flags, min(high + tolerance, 1.0), "above", alpha / (2 if both_ways else 1))]
    if both_ways:
        sides.append(bet_alarm(name, flags, max(low - tolerance, 0.0), "below", alpha / 2))
    raised = [s for s in sides if s.raised]
    a = min(raised, key=lambda s: s.at) if raised else max(sides, key=lambda s: s.evidence / s.needed)
    what = name.replace("_", " ")
    a.says = (
        f"{what} is {a.estimate:.1%} over {a.n} items, {a.side} the {a.bound:.1%} bound (fitted {fitted_rate:.1%}, "
        f"its 95% interval widened by {100 * tolerance:g} points)"
        if a.raised
        else f"{what} holds: {_rate(a.estimate)} over {a.n} items (fitted {fitted_rate:.1%})"
    )
    return a


def waiting(oldest_age_seconds: float | None, limit_seconds: float) -> Alarm:
    """Staffing: has the oldest deferred item waited longer than people were promised? (No statistics: a wait is
    measured, not estimated.)"""
    age = 0.0 if oldest_age_seconds is None else float(oldest_age_seconds)
    raised = age > limit_seconds
    says = (
        f"the oldest deferred item has waited {age:.0f} s, over the {limit_seconds:.0f} s limit"
        if raised
        else f"the oldest deferred item has waited {age:.0f} s of {limit_seconds:.0f} s"
    )
    return Alarm("waiting", raised, age, limit_seconds, "above", float(raised), 1.0, 0, None, says)


def agreement(agreed: Sequence[float], floor: float, alpha: float = ALPHA) -> Alarm:
    """Staffing: do reviewers' answers agree with their items' consensus less often than `floor`?"""
    a = bet_alarm("agreement", agreed, floor, "below", alpha)
    a.says = (
        f"reviewers agree with the consensus on {a.estimate:.1%} of {a.n} answers, below {floor:.0%}"
        if a.raised
        else f"reviewers agree with the consensus on {_rate(a.estimate)} of {a.n} answers (floor {floor:.0%})"
    )
    return a


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"
