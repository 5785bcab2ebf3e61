"""Every route of the running service against its own OpenAPI document (schemathesis, every check), as a
stranger, a reviewer, the admin and a caller, on SQLite and on PostgreSQL, and with classify open: no 5xx,
every status documented, schema-valid data accepted, invalid data refused, responses as described."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("schemathesis", reason="schemathesis is not installed")

from teaming.datasets import default_test_jpegs  # noqa: E402

CONFIG = Path(__file__).with_name("schemathesis.toml")
CALLER = "tok-client"


@pytest.mark.slow
def test_schemathesis_with_every_check_passes_without_and_with_tokens(serve, reviewers, admin_token, db_url):
    srv = serve(audit_rate=0.5, db=db_url, TEAMING_CLASSIFY_TOKEN=CALLER)  # on SQLite, then on PostgreSQL
    idx = list(range(7000, 7016))
    srv.client(CALLER).classify([(f"cifar10_test/{i}", b) for i, b in zip(idx, default_test_jpegs(idx))])
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    for token in (None, reviewers["alice"], admin_token, CALLER):
        auth = ["-H", f"Authorization: Bearer {token}"] if token else []
        run = subprocess.run(
            [st, "--config-file", str(CONFIG), "run", f"{srv.url}/openapi.json", "--checks", "all"]
            + ["--max-examples", "25", "--seed", "1", *auth],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, f"token {token}:\n{run.stdout[-4000:]}"
    assert httpx.get(f"{srv.url}/readyz").status_code == 200  # still up after the fuzzing


@pytest.mark.slow
def test_schemathesis_passes_with_classify_open(serve):
    """Without a classify token, classify and /v1/model are open and the document says so (no bearer scheme)."""
    srv = serve(audit_rate=0.0)
    schema = httpx.get(f"{srv.url}/openapi.json").json()
    assert "security" not in schema["paths"]["/classify"]["post"]
    assert (
        schema["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"][
            "images"
        ]["items"]["properties"]["data"]["format"]
        == "byte"
    )
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    run = subprocess.run(
        [st, "--config-file", str(CONFIG), "run", f"{srv.url}/openapi.json", "--checks", "all"]
        + ["--max-examples", "25", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:]
