"""The monitors on a real log: harm raised once however many looks and replicas, announced in the outbox, a
fallback activated and recorded with its reason, and an admin's all-clear that restores the policy it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from teaming.ops.store import Store
from teaming.ops.watch import DEFER_ALL, WatchRules, clear, look
from teaming.policy import ThresholdPolicy, policy_from_dict
from tests.support.logs import MODEL, audited_log


def fitted_policy(rng: np.random.Generator) -> ThresholdPolicy:
    """A policy fitted on a clean toy team: the machine sure and right on most items, people right on 95%."""
    n = 600
    y = rng.integers(0, 3, n)
    sure = rng.random(n) < 0.8
    pred = np.where(sure | (rng.random(n) < 0.5), y, (y + 1) % 3)
    conf = np.where(sure, 0.95, 0.5)
    probs = np.full((n, 3), 0.0)
    probs[np.arange(n), pred] = conf
    probs[np.arange(n), (pred + 1) % 3] = 1 - conf
    human = np.where(rng.random(n) < 0.95, y, (y + 2) % 3)
    return ThresholdPolicy(n_resamples=5).fit(probs, y, human)


def shifted_items(rng: np.random.Generator, n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Items the machine answers surely and wrongly two times in five; people answer them right."""
    y = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.4, (y + 1) % 3, y)
    probs = np.full((n, 3), 0.01)
    probs[np.arange(n), pred] = 0.98
    return probs, np.stack([y, y, y], 1)


def harmed_log(db_url: str, seed: int) -> tuple[ThresholdPolicy, Store]:
    """A log of items the machine answers surely and often wrongly under a policy fitted on a clean team."""
    rng = np.random.default_rng(seed)
    active = fitted_policy(rng)
    probs, answers = shifted_items(rng)
    audited_log(db_url, probs, answers, active)
    return active, Store(db_url)


@pytest.mark.parametrize("on_harm", ["defer-all", "previous"])
def test_harm_is_raised_once_announced_and_falls_back_until_cleared(db_url, on_harm):
    rng = np.random.default_rng(0)
    earlier, active = fitted_policy(np.random.default_rng(1)), fitted_policy(rng)
    active.model_ = {"note": "the one that meets the shift"}
    store = Store(db_url)
    store.add_policy(earlier.to_dict(), MODEL)  # stored first: what `previous` goes back to
    store.dispose()
    probs, answers = shifted_items(rng)
    audited_log(db_url, probs, answers, active)
    store = Store(db_url)
    rules = WatchRules(on_harm=on_harm)
    first = look(store, MODEL, rules)
    assert "harm" in [a.name for a in first.raised] and first.policy_version == active.version
    harm = first.alarms[0]
    assert harm.at is not None and harm.estimate < 0.8 and "below the" in harm.says
    fallback = store.active_policy(MODEL)
    record = fallback["model"]["fallback"]
    assert fallback["version"] == first.fell_back_to and record["replaces"] == active.version
    if on_harm == "defer-all":
        assert record["action"] == "defer-all" and policy_from_dict(fallback).threshold_ == DEFER_ALL
        assert policy_from_dict(fallback).decide(probs).all()  # everything goes to people
    else:
        assert record["action"] == f"previous {earlier.version}"
        assert policy_from_dict(fallback).threshold_ == earlier.threshold_
    again = look(store, MODEL, rules)  # another look (or replica): the fallback is watched for waiting alone
    assert again.raised == [] and [a.name for a in again.alarms] == ["agreement", "waiting"]
    booked = {b.name: b for b in store.alarms.of(None, open_only=True)}
    assert set(booked) == {a.name for a in first.raised} and booked["harm"].action.endswith(fallback["version"])
    events = [e[2] for e in store.outbox.claim_due(10, 5.0)]
    assert [e["type"] for e in events] == ["alarm.raised"] * len(first.raised)
    assert events[0]["data"]["name"] == "harm" and events[0]["data"]["policy_version"] == active.version
    assert clear(store, MODEL, "admin") == active.version  # the fallback gives way
    assert store.active_policy_version(MODEL) == active.version and store.alarms.of(None, open_only=True) == []
    after = look(store, MODEL, rules)  # its monitors start again from now: nothing logged since
    assert after.raised == [] and after.alarms[0].n == 0
    store.dispose()


def test_alert_only_keeps_the_policy(db_url):
    active, store = harmed_log(db_url, 2)
    watched = look(store, MODEL, WatchRules(on_harm="alert"))
    assert "harm" in [a.name for a in watched.raised] and watched.fell_back_to is None
    assert store.active_policy_version(MODEL) == active.version
    store.dispose()


def test_a_steady_log_raises_nothing(db_url):
    rng = np.random.default_rng(3)
    active = fitted_policy(rng)
    y = rng.integers(0, 3, 80)
    probs = np.full((80, 3), 0.01)
    probs[np.arange(80), y] = 0.98
    audited_log(db_url, probs, np.stack([y, y, y], 1), active)
    store = Store(db_url)
    watched = look(store, MODEL, WatchRules())
    names = [a.name for a in watched.alarms]
    assert watched.raised == [] and names == ["harm", "deferral_rate", "agreement", "waiting"]
    store.dispose()


def test_agreement_leaves_each_answer_out_of_its_own_majority():
    from teaming.ops.consensus import agreements

    said = [(1, "a", 0), (1, "b", 0), (1, "c", 1), (2, "a", 2)]  # item 2 has one answer: nothing to agree with
    assert [agrees for _, agrees in agreements(said)] == [True, True, False]


def test_a_retune_under_a_fallback_counts_only_the_audits_made_since(db_url):
    from teaming._validation import PolicyError
    from teaming.ops.retune import retune

    _, store = harmed_log(db_url, 4)
    assert look(store, MODEL, WatchRules()).fell_back_to is not None
    store.dispose()
    with pytest.raises(PolicyError, match="only 0 fully audited items of toy@1 in the log since the fallback"):
        retune(db_url)
