"""Fault drills as slow tests: SIGKILL under load and two replicas on one PostgreSQL database (bench/faults.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("bentoml", reason="the service extra is not installed")

from sqlalchemy import create_engine  # noqa: E402

from tests.support.common import PG_ADMIN  # noqa: E402
from tests.support.faults import kill_under_load, replicas  # noqa: E402


@pytest.mark.slow
def test_sigkill_under_load_loses_nothing(tmp_path, service_process):
    c = kill_under_load(tmp_path, seconds=4)
    assert c.answered > 0 and c.tasks > 0
    assert c.missing == 0  # every answer a client received is in the log
    assert c.open_or_stuck_after_drain == 0  # the held lease expired and its item was reviewed
    assert c.double_claims == 0


@pytest.mark.slow
@pytest.mark.postgres
def test_two_replicas_on_one_postgres(tmp_path, service_process):
    try:
        create_engine(PG_ADMIN).connect().close()
    except Exception as err:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {err}")
    c = replicas(tmp_path, seconds=4)
    assert c.answered > 0 and c.missing == 0
    assert c.open_or_stuck_after_drain == 0 and c.double_claims == 0
    assert c.policy_followed  # a policy reloaded on one replica reached the other by polling
