"""Fuzz every route of the running service from its own OpenAPI spec (schemathesis): no 5xx, no crash."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("bentoml", reason="the service extra is not installed")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from teaming.datasets import default_test_jpegs  # noqa: E402


def fuzz(op, token: str, failures: list) -> None:
    """Up to 30 generated requests against one operation, recording any 5xx."""

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=op.as_strategy())
    def run(case) -> None:
        r = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        if r.status_code >= 500:
            failures.append((op.label, r.status_code, r.text[:200]))

    run()


@pytest.mark.slow
def test_openapi_fuzz_finds_no_server_errors(serve, reviewers, admin_token):
    srv = serve(audit_rate=0.5)
    try:
        idx = list(range(7000, 7016))
        srv.client().classify([(f"cifar10_test/{i}", b) for i, b in zip(idx, default_test_jpegs(idx))])
        schema = schemathesis.openapi.from_url(f"{srv.url}/docs.json")
        failures: list[tuple[str, int, str]] = []
        operations = [res.ok() for res in schema.get_all_operations()]
        assert len(operations) >= 11
        for op in operations:
            fuzz(op, admin_token if "admin" in op.label or "outcomes" in op.label else reviewers["alice"], failures)
        assert failures == []
        assert httpx.get(f"{srv.url}/readyz").status_code == 200  # still up after the fuzzing
    finally:
        srv.proc.stop()
