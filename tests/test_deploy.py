"""What a user deploys beyond one machine: the Kubernetes manifests validate offline against a named Kubernetes
version, the custom resources hold what KEDA and the Prometheus Operator read, and every alert rule passes its
promtool unit test; a broken manifest and a wrong rule fail."""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
RULES = DEPLOY / "prometheus"
KUBERNETES = "1.31.0"  # the version the manifests are checked against
CORE = ("deployment.yaml", "service.yaml", "pdb.yaml", "migrate-job.yaml", "secret.example.yaml")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")


def _load(name: str) -> dict:
    return yaml.safe_load((MANIFESTS / name).read_text())


@pytest.mark.parametrize("name", CORE)
def test_each_manifest_validates_strictly(name):
    kubernetes_validate.validate(_load(name), KUBERNETES, strict=True)


def test_a_broken_manifest_is_refused():
    broken = copy.deepcopy(_load("deployment.yaml"))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["httpGet"]["port"] = ["http"]  # a list where a port goes
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)
    misspelt = copy.deepcopy(_load("deployment.yaml"))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: a misspelt field is not silently dropped
        kubernetes_validate.validate(misspelt, KUBERNETES, strict=True)


def test_the_deployment_probes_the_health_routes_and_reads_its_secrets():
    pod = _load("deployment.yaml")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["envFrom"] == [{"secretRef": {"name": "teaming"}}]
    secret = _load("secret.example.yaml")["stringData"]
    assert {"TEAMING_REVIEWER_TOKENS", "TEAMING_ADMIN_TOKEN", "TEAMING_DB_URL"} <= set(secret)
    assert secret["TEAMING_DB_URL"].startswith("postgresql")  # replicas share one PostgreSQL log
    job = _load("migrate-job.yaml")["spec"]["template"]["spec"]["containers"][0]
    assert job["command"][2:4] == ["teaming.cli", "migrate"] and job["envFrom"] == container["envFrom"]
    kustomization = _load("kustomization.yaml")
    assert set(kustomization["resources"]) == {
        "deployment.yaml", "service.yaml", "pdb.yaml", "scaledobject.yaml", "prometheusrule.yaml"
    }  # fmt: skip


def test_keda_scales_on_request_load_never_on_the_human_queue():
    scaled = _load("scaledobject.yaml")
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == _load("deployment.yaml")["metadata"]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus" and float(trigger["metadata"]["threshold"]) > 0
    assert "teaming_decisions_total" in trigger["metadata"]["query"]
    assert "queue" not in trigger["metadata"]["query"]  # more replicas do not drain human work


def test_the_operator_rule_is_the_rules_file():
    rendered = importlib.util.spec_from_file_location("prometheusrule", DEPLOY / "prometheusrule.py")
    module = importlib.util.module_from_spec(rendered)
    rendered.loader.exec_module(module)
    assert (MANIFESTS / "prometheusrule.yaml").read_text() == module.rendered()  # run deploy/prometheusrule.py
    rule = _load("prometheusrule.yaml")
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((RULES / "teaming-rules.yaml").read_text())


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


@needs_promtool
def test_every_alert_rule_passes_its_unit_test():
    assert _promtool("check", "rules", str(RULES / "teaming-rules.yaml")).returncode == 0
    run = _promtool("test", "rules", str(RULES / "teaming-rules.test.yaml"))
    assert run.returncode == 0, run.stdout + run.stderr
    groups = yaml.safe_load((RULES / "teaming-rules.yaml").read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    tested = (RULES / "teaming-rules.test.yaml").read_text()
    assert all(f"alertname: {a}" in tested for a in alerts)  # no rule without a test


@needs_promtool
def test_summing_a_database_wide_gauge_over_replicas_fails_the_rule_test(tmp_path):
    """Three replicas export the same oldest wait: sum() reads it three times and alerts too early."""
    wrong = (
        (RULES / "teaming-rules.yaml")
        .read_text()
        .replace("max(teaming_oldest_wait_seconds)", "sum(teaming_oldest_wait_seconds)")
    )
    (tmp_path / "teaming-rules.yaml").write_text(wrong)
    shutil.copy(RULES / "teaming-rules.test.yaml", tmp_path)
    run = _promtool("test", "rules", str(tmp_path / "teaming-rules.test.yaml"))
    assert run.returncode != 0 and "TeamingReviewersFallingBehind" in run.stdout + run.stderr
