"""The service runs the backend the machine and the model's checks allow, says which at start, and refuses a
reduced-precision backend that was never checked against fp32."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from teaming.cli import app
from teaming.datasets import default_test_jpegs, load_default_test
from teaming.model import load_artifact

MODEL = Path(__file__).resolve().parents[2] / "models" / "cifar10h-default"


def images(indices) -> list[tuple[str, bytes]]:
    return [(f"cifar10_test/{i}", b) for i, b in zip(indices, default_test_jpegs(list(indices)))]


def test_the_service_serves_an_exported_onnx_graph_and_names_it(serve, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    model = shutil.copytree(MODEL, tmp_path / "model", ignore=shutil.ignore_patterns("*.onnx"))
    r = CliRunner().invoke(app, ["export", str(model), "--items", "9000:9300", "--backends", "onnx"])
    assert r.exit_code == 0, r.output
    served = serve(audit_rate=0.0, TEAMING_MODEL_DIR=str(model), TEAMING_BACKEND="onnx")
    log = served.proc.log_path.read_text()
    assert "with backend onnx (as set" in log
    decisions = served.client().classify(images(range(9500, 9516)))
    eager = load_artifact(MODEL)
    expected = eager.predict_proba(load_default_test().images[9500:9516])
    for d, p in zip(decisions, expected):  # the fp32 graph gives the eager net's numbers
        assert d.top_k[0].label == eager.classes[int(p.argmax())]
        assert d.confidence == pytest.approx(float(p.max()), abs=1e-4)


def test_a_reduced_precision_backend_that_failed_its_check_is_refused_at_start(serve, tmp_path):
    model = shutil.copytree(MODEL, tmp_path / "model", ignore=shutil.ignore_patterns("*.onnx"))
    meta = (model / "model.json").read_text().replace('"passed": true', '"passed": false')
    (model / "model.json").write_text(meta)
    with pytest.raises(RuntimeError, match=r"cannot serve: TEAMING_BACKEND=bf16 failed its check against fp32"):
        serve(TEAMING_MODEL_DIR=str(model), TEAMING_BACKEND="bf16")


def test_the_default_service_names_its_backend(serve):
    served = serve(audit_rate=0.0)
    line = next(ln for ln in served.proc.log_path.read_text().splitlines() if "serving " in ln)
    assert ("with backend bf16 (auto: native bf16" in line) or ("with backend fp32 (auto:" in line)
