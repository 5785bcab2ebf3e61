"""Service settings from TEAMING_* variables: defaults, parsing, and a clear error for each bad value."""

from __future__ import annotations

import os

import pytest

from service.config import Settings


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("TEAMING_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TEAMING_DB_URL", f"sqlite:///{tmp_path / 'logs' / 'teaming.db'}")
    return monkeypatch


def test_defaults_and_parsing(env, tmp_path):
    s = Settings.from_env()
    assert s.max_batch_size == 256 and s.batch_concurrency == 2 and s.policy_poll_seconds == 5.0
    assert s.policy_path == s.model_dir / "policy.json" and (tmp_path / "logs").is_dir()  # log folder made
    env.setenv("TEAMING_REVIEWER_TOKENS", "alice:t1, bob:t2")
    env.setenv("TEAMING_BATCH_CONCURRENCY", "1")
    env.setenv("TEAMING_POLICY_POLL_SECONDS", "0.5")
    s = Settings.from_env()
    assert s.reviewer_tokens == {"t1": "alice", "t2": "bob"} and s.batch_concurrency == 1
    assert s.policy_poll_seconds == 0.5


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("TEAMING_REVIEWER_TOKENS", "alice", "look like 'name:token'"),
        ("TEAMING_AUDIT_RATE", "1.5", "TEAMING_AUDIT_RATE must lie in"),
        ("TEAMING_BATCH_CONCURRENCY", "0", "TEAMING_BATCH_CONCURRENCY must be >= 1"),
        ("TEAMING_POLICY_POLL_SECONDS", "0", "TEAMING_POLICY_POLL_SECONDS must be positive"),
        ("TEAMING_MAX_IMAGES", "300", "exceeds TEAMING_MAX_BATCH_SIZE"),
        ("TEAMING_MAX_BATCH_SIZE", "abc", "TEAMING_MAX_BATCH_SIZE must be an integer, got 'abc'"),
        ("TEAMING_LEASE_SECONDS", "5 min", "TEAMING_LEASE_SECONDS must be a number"),
    ],
)
def test_bad_values_are_refused_by_name(env, name, value, message):
    env.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        Settings.from_env()
