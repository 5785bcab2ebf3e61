"""model.json: what a model is, how it takes images, how it was made and what it scored, validated on load.

One format for every kind of model: our nets (`kind` "teaming", rebuilt from `arch` and `widths`) and graphs
imported from elsewhere (`kind` "onnx" or "torchscript", run from the file `graph` names). Every model.json
written before this format still loads: the kind defaults to "teaming" and the input contract to a stretch to
`input_size`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from teaming.items import run_positions
from teaming.preprocess import InputContract

META, CARD = "model.json", "MODEL_CARD.md"
RENAMED_METRICS = {"human_majority_accuracy": "accuracy_vs_majority"}  # model.json files before 0.2
KINDS = ("teaming", "onnx", "torchscript")


class GraphSpec(BaseModel):
    """An imported graph: its file in the model folder, the names of what it takes and gives, and whether its
    outputs are already probabilities (turned back into logits as they are read)."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(..., description="the graph's file in the model folder (model.onnx or model.ts)")
    source: str = Field("", description="the file it was imported from")
    sha256: str = Field("", description="SHA-256 of the graph file")
    input: str | None = Field(None, description="the ONNX input name")
    logits: str | None = Field(None, description="the output holding the class scores (name, key or index)")
    features: str | None = Field(None, description="the output holding penultimate features, for the guard")
    outputs: Literal["logits", "probabilities"] = "logits"


class ModelMeta(BaseModel):
    """Everything needed to rebuild, run and judge a model; stored as model.json."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    name: str = Field(..., min_length=1)
    classes: list[str] = Field(..., min_length=2)
    kind: Literal["teaming", "onnx", "torchscript"] = "teaming"
    arch: str | None = None
    input_size: int = Field(..., ge=1)
    input: InputContract | None = None
    widths: list[int] | None = None
    normalization: dict = Field(default_factory=dict)
    temperature: float = Field(1.0, gt=0)
    tta: bool = False
    graph: GraphSpec | None = None
    guard: str | None = Field(None, description="what the familiarity guard reads: features, energy or max-logit")
    data: dict = Field(default_factory=dict)
    training: dict = Field(default_factory=dict)
    metrics: dict = Field(default_factory=dict)
    backends: dict = Field(default_factory=dict)  # backend -> its check against fp32 (`teaming export`)
    library_version: str = ""
    created: str = ""

    @model_validator(mode="before")
    @classmethod
    def _earlier_formats(cls, raw: object) -> object:
        """Read model.json files of earlier releases: renamed metrics, no input contract (a stretch)."""
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        raw["metrics"] = {
            name: {RENAMED_METRICS.get(k, k): v for k, v in evaluation.items()}
            for name, evaluation in (raw.get("metrics") or {}).items()
        }
        if raw.get("input") is None and raw.get("input_size"):
            raw["input"] = {"size": raw["input_size"], "resize": "stretch"}
        return raw

    @field_validator("classes")
    @classmethod
    def _unique(cls, classes: list[str]) -> list[str]:
        twice = sorted({c for c in classes if classes.count(c) > 1})
        if twice:
            raise ValueError(f"class names must be unique, {twice[0]!r} is given twice")
        return classes

    @model_validator(mode="after")
    def _consistent(self) -> "ModelMeta":
        if self.kind == "teaming" and not self.arch:
            raise ValueError("a teaming net needs its arch")
        if self.kind != "teaming" and self.graph is None:
            raise ValueError(f"an imported {self.kind} model needs its graph")
        return self

    @property
    def contract(self) -> InputContract:
        """How images become this model's input (a stretch to input_size for models that predate contracts)."""
        return self.input or InputContract(size=self.input_size)

    @property
    def version(self) -> str:
        """'name@created': what decisions, policies and the service call this model."""
        return f"{self.name}@{self.created}"

    def used_positions(self) -> np.ndarray:
        """Positions in its own image set the model was trained or calibrated on (empty when not recorded)."""
        return run_positions(self.data.get("used_positions"))

    def used_ids(self) -> set[str]:
        """Item ids the model was calibrated or guarded on (imported models record their splits by id)."""
        splits = self.data.get("splits") or {}
        return {i for name in ("calibration", "guard") for i in splits.get(name, [])}

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=False) + "\n"


def load_meta(directory: str | Path) -> ModelMeta:
    """A model's model.json alone (no weights): what it is, its classes, its version. FileNotFoundError when it
    is missing, ValueError naming the first field that does not fit."""
    path = Path(directory) / META
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a model folder: {META} is missing")
    try:
        return ModelMeta.model_validate_json(path.read_text())
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "model.json"
        raise ValueError(f"{path}: {where}: {first['msg'].removeprefix('Value error, ')}") from None
