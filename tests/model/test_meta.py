"""model.json as a validated pydantic model: earlier files still load, and a file that does not fit names the
field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teaming.model.meta import ModelMeta, load_meta
from teaming.preprocess import InputContract

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "cifar10h-default"

EARLIEST = {  # model.json as teaming 0.1 wrote it, before kinds, input contracts and renamed metrics
    "name": "old",
    "classes": ["cat", "dog"],
    "arch": "fastnet",
    "input_size": 32,
    "widths": [8, 16, 16],
    "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input": "RGB float in [0, 1]"},
    "temperature": 1.3,
    "tta": True,
    "data": {"used_positions": [[0, 9]]},
    "training": {},
    "metrics": {"calibrated": {"accuracy": 0.9, "human_majority_accuracy": 0.88}},
    "backends": {},
    "library_version": "0.1.0",
    "created": "2026-11-20T10:00:00+00:00",
    "a_field_since_dropped": 1,
}


def test_every_model_json_written_so_far_loads(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(EARLIEST))
    meta = load_meta(tmp_path)
    assert meta.kind == "teaming" and meta.contract == InputContract(size=32)  # a stretch to its input size
    assert meta.metrics["calibrated"]["accuracy_vs_majority"] == 0.88  # renamed since
    assert meta.used_positions().tolist() == list(range(10)) and meta.used_ids() == set()
    shipped = load_meta(SHIPPED)
    assert shipped.version == "cifar10h-default@" + shipped.created and shipped.guard == "features"
    assert ModelMeta.model_validate_json(shipped.to_json()) == shipped  # written and read back alike


@pytest.mark.parametrize(
    "change, words",
    [
        ({"classes": ["cat", "cat"]}, "classes: class names must be unique"),
        ({"temperature": -1}, "temperature: Input should be greater than 0"),
        ({"kind": "keras"}, "kind: Input should be"),
        ({"kind": "onnx"}, "an imported onnx model needs its graph"),
        ({"input": {"size": 32, "resize": "squash"}}, "input.resize"),
    ],
)
def test_a_model_json_that_does_not_fit_names_the_field(tmp_path, change, words):
    (tmp_path / "model.json").write_text(json.dumps({**EARLIEST, **change}))
    with pytest.raises(ValueError, match=words) as err:
        load_meta(tmp_path)
    assert "\n" not in str(err.value)
