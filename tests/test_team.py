"""A team's inputs and what is said of a policy that does not pay: plain words, with the way out."""

from __future__ import annotations

import numpy as np

from teaming.policy import ThresholdPolicy
from teaming.team import TeamData, team_warnings


def _team(n: int = 400, human_right: float = 0.9, seed: int = 0) -> TeamData:
    """A model right 95% of the time (sure where right, unsure where wrong) and people right `human_right` of
    the time, with an unfamiliarity score the guard reads."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    right = rng.random(n) < 0.95
    pred = np.where(right, y, (y + 1) % 10)
    conf = np.where(right, 0.98, 0.6)
    probs = np.repeat(((1 - conf) / 9)[:, None], 10, 1)
    probs[np.arange(n), pred] = conf
    human = np.where(rng.random(n) < human_right, y, (y + 2) % 10)
    return TeamData(probs, human, y, [str(c) for c in range(10)], unfamiliarity=rng.random(n))


def test_a_guard_that_costs_the_team_is_said_with_the_way_out():
    data = _team(human_right=0.5)  # people worse than the model on ordinary items
    policy = ThresholdPolicy().fit(data.probs, data.y, data.human, data.classes, unfamiliarity=data.unfamiliarity)
    said = team_warnings(data, policy)
    assert any(w.startswith("the team (") and "less accurate than the model alone" in w for w in said)
    assert any("familiarity guard sends 10.0% of these ordinary items" in w and "--unfamiliar-quantile" in w
               for w in said)  # fmt: skip
    quiet = ThresholdPolicy(unfamiliar_quantile=1.0).fit(data.probs, data.y, data.human, data.classes,
                                                         unfamiliarity=data.unfamiliarity)  # fmt: skip
    assert not any("familiarity guard" in w for w in team_warnings(data, quiet))


def test_a_policy_that_pays_says_nothing():
    data = _team(human_right=1.0)
    policy = ThresholdPolicy().fit(data.probs, data.y, data.human, data.classes)
    assert team_warnings(data, policy) == []
