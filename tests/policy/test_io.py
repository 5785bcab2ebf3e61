"""Policies as versioned JSON: round trips, tamper detection, format-1 files, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from teaming._validation import PolicyError
from teaming.policy import CertifiedPolicy, ThresholdPolicy, load_policy, policy_from_dict, save_policy

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "cifar10h-default" / "policy.json"


def test_json_round_trip(tmp_path, toy_team):
    probs, y, human = toy_team(30)
    pol = ThresholdPolicy(score="margin", per_class=True, min_class_items=10).fit(probs, y, human)
    pol.model_ = {"name": "toy"}
    path = save_policy(pol, tmp_path / "p.json")
    back = load_policy(path)
    assert isinstance(back, ThresholdPolicy)
    assert back.version == pol.version and back.version.startswith("threshold-")
    assert back.report_ == pol.report_ and back.get_params() == pol.get_params() and back.model_ == {"name": "toy"}
    np.testing.assert_array_equal(back.decide(probs), pol.decide(probs))
    cert = CertifiedPolicy(target_accuracy=0.9, min_accepted=10).fit(probs, y, human)
    back = load_policy(save_policy(cert, tmp_path / "c.json"))
    assert isinstance(back, CertifiedPolicy) and back.version == cert.version and back.report_ == cert.report_
    np.testing.assert_array_equal(back.decide(probs), cert.decide(probs))
    edited = json.loads(path.read_text())
    edited["threshold"] = 0.1
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(PolicyError, match="version"):
        load_policy(tmp_path / "edited.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(PolicyError, match="not valid JSON"):
        load_policy(tmp_path / "junk.json")
    with pytest.raises(PolicyError, match="no policy file"):
        load_policy(tmp_path / "missing.json")


def test_format_1_files_still_load(tmp_path):
    """A policy written before the report was unified (format 1) loads with its stored id and the same report."""
    v1 = {
        "format": "teaming.policy",
        "format_version": 1,
        "kind": "certified",
        "params": {"target_accuracy": 0.9, "delta": 0.05, "score": "max_prob", "candidates": 3, "min_accepted": 1},
        "threshold": 0.5,
        "class_thresholds": None,
        "classes": None,
        "model": None,
        "report": {
            "score": "max_prob",
            "target_accuracy": 0.9,
            "delta": 0.05,
            "n_items": 10,
            "threshold": 0.5,
            "deferral_rate": 0.2,
            "accepted_accuracy": 1.0,
            "machine_accuracy": 0.8,
            "candidates": [
                {"threshold": t, "accepted": a, "errors": e, "p": p, "certified": c}
                for t, a, e, p, c in [(0.0, 10, 2, 0.26, False), (0.5, 8, 0, 0.04, True), (1.0, 0, 0, 1.0, False)]
            ],
        },
    }
    from teaming.policy.file import content_digest

    v1["version"] = "certified-" + content_digest({k: v1[k] for k in v1})
    pol = policy_from_dict(v1)
    assert pol.threshold_ == 0.5 and pol.report_.accepted_accuracy == 1.0 and pol.report_.alpha == 0.05
    assert [c.eligible for c in pol.report_.candidates] == [False, True, False]
    assert pol.report_.candidates[1].deferral_rate == pytest.approx(0.2)
    assert pol.decide(np.array([[0.6, 0.4], [0.45, 0.55], [0.3, 0.7]])).tolist() == [False, False, False]
    v1["threshold"] = 0.7
    with pytest.raises(PolicyError, match="version"):
        policy_from_dict(v1)


def test_the_shipped_policy_loads():
    pol = load_policy(SHIPPED)
    assert isinstance(pol, ThresholdPolicy) and pol.classes_[0] == "airplane"
    assert pol.report_.candidate(pol.threshold_).eligible


def test_the_file_is_one_pydantic_model_per_kind_and_says_what_is_wrong():
    """The written JSON re-validates to the same content and id; a body that lacks a field, or a rejector without
    its weights, is refused in one line naming the field."""
    from teaming.policy.file import read_policy_file

    body = load_policy(SHIPPED).to_dict()
    file = read_policy_file(body)
    assert type(file).__name__ == "ThresholdFile" and file.version == body["version"] and file.to_json() == body
    unversioned = {k: v for k, v in body.items() if k not in ("version", "threshold")}
    with pytest.raises(PolicyError, match="^threshold: Field required"):
        read_policy_file(unversioned)
    with pytest.raises(PolicyError, match="^rejector: Field required"):
        read_policy_file({**unversioned, "threshold": 0.5, "kind": "rejector"})
