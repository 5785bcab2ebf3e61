"""Retuning from the log: the audited outcomes refit the active policy's settings into a new active version."""

from __future__ import annotations

import numpy as np
import pytest

from teaming._validation import PolicyError
from teaming.ops.retune import MIN_AUDITED, retune
from teaming.ops.review import review_tasks
from teaming.ops.store import NewDecision, Store
from teaming.policy import ThresholdPolicy, load_policy


def test_retune_refits_the_active_settings_and_activates_them(db_url, tmp_path, toy_team):
    probs, y, human = toy_team(20)  # 180 items
    store = Store(db_url)
    active = ThresholdPolicy(max_deferral=0.9).fit(probs, y, human)
    store.add_policy(active.to_dict())
    rows = [
        NewDecision(
            f"i/{i}",
            "auto",
            int(p.argmax()),
            float(p.max()),
            p.tolist(),
            "m",
            active.version,
            True,
            None,
            None,
            review_tasks(False, True, 3),
        )
        for i, p in enumerate(probs)
    ]
    store.record(rows)
    labels = np.stack([human, y, y], 1)  # the first audit label plays the human, the rest the reference
    for k in range(3):
        for _ in range(len(probs)):
            c = store.claim(f"reviewer-{k}", 60)
            store.submit(c.task_id, c.lease_id, f"reviewer-{k}", int(labels[int(c.item_id.split("/")[1]), k]))
    policy = retune(db_url, tmp_path / "retuned.json", alpha=0.1)
    assert policy.get_params()["max_deferral"] == 0.9 and policy.alpha == 0.1  # kept, overridden
    assert policy.report_.n_items == len(probs) and policy.model_["retuned_from"] == active.version
    assert policy.threshold_ == pytest.approx(
        ThresholdPolicy(max_deferral=0.9, alpha=0.1).fit(probs, y, human).threshold_
    )
    assert store.active_policy_version() == policy.version == load_policy(tmp_path / "retuned.json").version
    store.engine.dispose()


def test_retune_needs_enough_fully_audited_items(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    Store(url).engine.dispose()
    with pytest.raises(PolicyError, match=f"only 0 fully audited items in the log; retuning needs {MIN_AUDITED}"):
        retune(url)
