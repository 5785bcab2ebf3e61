"""Service settings from TEAMING_* variables: defaults, parsing, and a clear error naming each bad value."""

from __future__ import annotations

import os

import pytest

from service.settings import load_settings


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("TEAMING_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TEAMING_DB_URL", f"sqlite:///{tmp_path / 'logs' / 'teaming.db'}")
    return monkeypatch


def test_defaults_and_parsing(env, tmp_path):
    s = load_settings()
    assert s.max_batch_size == 256 and s.batch_concurrency == 2 and s.policy_poll_seconds == 5.0
    assert s.policy_path == s.model_dir / "policy.json" and s.audit_reviewers == 3
    assert s.db_url.endswith("logs/teaming.db") and s.admin_token is None and s.log_decisions
    env.setenv("TEAMING_REVIEWER_TOKENS", "alice:t1, bob:t2")
    env.setenv("TEAMING_BATCH_CONCURRENCY", "1")
    env.setenv("TEAMING_POLICY_POLL_SECONDS", "0.5")
    env.setenv("TEAMING_POLICY", str(tmp_path / "p.json"))
    env.setenv("TEAMING_LOG_DECISIONS", "0")
    env.setenv("TEAMING_ADMIN_TOKEN", "")  # empty is unset
    s = load_settings()
    assert s.reviewer_tokens == {"t1": "alice", "t2": "bob"} and s.batch_concurrency == 1
    assert s.policy_poll_seconds == 0.5 and s.policy_path == tmp_path / "p.json"
    assert not s.log_decisions and s.admin_token is None


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("TEAMING_REVIEWER_TOKENS", "alice", "TEAMING_REVIEWER_TOKENS: entries look like 'name:token', got 'alice'"),
        ("TEAMING_AUDIT_RATE", "1.5", "TEAMING_AUDIT_RATE: Input should be less than or equal to 1 (got '1.5')"),
        ("TEAMING_BATCH_CONCURRENCY", "0", "TEAMING_BATCH_CONCURRENCY: Input should be greater than or equal to 1"),
        ("TEAMING_POLICY_POLL_SECONDS", "0", "TEAMING_POLICY_POLL_SECONDS: Input should be greater than 0"),
        ("TEAMING_MAX_IMAGES", "300", "TEAMING_MAX_IMAGES (300) exceeds TEAMING_MAX_BATCH_SIZE (256)"),
        ("TEAMING_MAX_BATCH_SIZE", "abc", "TEAMING_MAX_BATCH_SIZE: Input should be a valid integer"),
        ("TEAMING_LEASE_SECONDS", "5 min", "TEAMING_LEASE_SECONDS: Input should be a valid number"),
        ("TEAMING_BACKEND", "int4", "TEAMING_BACKEND: Input should be 'auto', 'eager', 'fp32', 'bf16'"),
    ],
)
def test_bad_values_are_refused_by_name(env, name, value, message):
    env.setenv(name, value)
    with pytest.raises(ValueError) as err:
        load_settings()
    assert message in str(err.value)
