"""`teaming fit-policy` and `teaming report` as a user runs them: subprocesses on the shipped model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from teaming.policy import ThresholdPolicy, load_policy

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "models" / "cifar10h-default")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "teaming.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("policy") / "policy.json"
    r = cli("fit-policy", MODEL, "--out", str(out), "--items", "7000:8500", "--max-deferral", "0.3")
    assert r.returncode == 0, r.stderr
    assert "threshold" in r.stdout and "team accuracy" in r.stdout
    return out


def test_fit_policy_writes_a_versioned_policy(fitted):
    pol = load_policy(fitted)
    assert isinstance(pol, ThresholdPolicy)
    r = pol.report_
    assert r.n_items == 1500 and r.deferral_rate <= 0.3
    assert r.team_accuracy > r.machine_accuracy
    assert pol.classes_[0] == "airplane" and pol.model_["name"] == "cifar10h-default"
    assert "fit-policy" in pol.model_["command"]


def test_report_html_and_markdown(fitted, tmp_path):
    html = tmp_path / "r.html"
    r = cli("report", MODEL, "--policy", str(fitted), "--out", str(html), "--items", "8500:10000")
    assert r.returncode == 0, r.stderr
    text = html.read_text()
    assert text.count("data:image/png;base64,") == 5  # self-contained: every figure inlined
    for heading in (
        "Teaming gain",
        "Accuracy against threshold",
        "Paired t-tests",
        "Reliability",
        "Accuracy by machine confidence",
        "Accuracy by human disagreement",
        "Where each errs",
    ):
        assert heading in text
    md = tmp_path / "r.md"
    r = cli("report", MODEL, "--policy", str(fitted), "--out", str(md), "--items", "8500:9000")
    assert r.returncode == 0, r.stderr
    figures = sorted(p.name for p in (tmp_path / "r_figures").iterdir())
    assert "threshold_curve.png" in figures and len(figures) == 5
    assert all(f"r_figures/{f}" in md.read_text() for f in figures)


def test_certified_policy_from_the_cli(tmp_path):
    out = tmp_path / "cert.json"
    r = cli("fit-policy", MODEL, "--out", str(out), "--items", "7000:9000", "--certify", "0.97", "--reviewers", "3")
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["kind"] == "certified" and d["report"]["accepted_accuracy"] >= 0.97
    assert d["model"]["reviewers"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--alpha", "2"], "alpha"),
        (["--max-deferral", "0.0", "--min-accuracy", "0.99"], "reaches team accuracy"),
        (["--items", "9990:20000", "--n-resamples", "20"], "20 folds need at least 20 items"),
        (["--labels", "hard"], "must name human labels"),
        (["--reviewers", "0"], "at least 1"),
        (["--score", "vibes"], "unknown score"),
        (["--reference", "gut"], "reference"),
        (["--items", "abc"], "START:STOP"),
    ],
)
def test_fit_policy_bad_input(tmp_path, args, message):
    out = tmp_path / "p.json"
    r = cli("fit-policy", MODEL, "--out", str(out), *args)
    assert r.returncode == 2
    assert message in r.stderr and r.stderr.startswith("error:")
    assert not out.exists()  # nothing written


def test_report_bad_input(fitted, tmp_path):
    r = cli("report", MODEL, "--policy", str(tmp_path / "none.json"), "--out", str(tmp_path / "r.html"))
    assert r.returncode == 2 and "no policy file" in r.stderr
    r = cli("report", MODEL, "--policy", str(fitted), "--out", str(tmp_path / "r.pdf"), "--items", "9000:9100")
    assert r.returncode == 2 and ".html or .md" in r.stderr
    assert not (tmp_path / "r.pdf").exists()
