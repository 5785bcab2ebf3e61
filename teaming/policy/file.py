"""The policy file as pydantic models: one per kind, told apart by `kind`; the version id computed from the
content (a hand edit changes it, and a file whose id does not match its content is refused); format-1 files
(before the report was unified) adapted on the way in.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, computed_field, model_validator

from teaming._validation import PolicyError

FORMAT = "teaming.policy"
FORMAT_VERSION = 2
KINDS = ("threshold", "certified", "rejector")
# in the content only where present: older ids stay valid
OPTIONAL = ("unfamiliar_limit", "rejector", "prediction_sets")


def content_digest(body: dict) -> str:
    """The first 12 hex digits of the SHA-256 of a policy body's canonical JSON."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=float).encode()).hexdigest()[:12]


class _PolicyFile(BaseModel):
    """The fields every kind writes; `version` is computed from all but the last three."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["teaming.policy"] = FORMAT
    format_version: Literal[2] = FORMAT_VERSION
    kind: str
    params: dict[str, Any]
    threshold: float
    class_thresholds: list[float] | None = None
    classes: list[str] | None = None
    model: dict[str, Any] | None = None
    report: dict[str, Any]
    unfamiliar_limit: float | None = None
    prediction_sets: dict[str, Any] | None = None
    """The conformal sets reviewers of deferred items may be shown (teaming.policy.sets)."""
    library_version: str | None = None
    created: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _as_written(cls, d: Any) -> Any:
        """Check the content against the id it was written with, then bring a format-1 report to today's shape."""
        if not isinstance(d, dict) or "version" not in d:
            return d
        if f"{d.get('kind')}-{content_digest(_content(d))}" != d["version"]:
            raise ValueError(f"policy content does not match its version id {d['version']!r} (edited by hand?)")
        if d.get("format_version") == 1:
            d = {**d, "format_version": FORMAT_VERSION, "report": report_v1(d["kind"], d["report"])}
        return {k: v for k, v in d.items() if k != "version"}

    def content(self) -> dict:
        """What the version id is computed from."""
        return _content(self.__dict__)

    @computed_field
    @property
    def version(self) -> str:
        return f"{self.kind}-{content_digest(self.content())}"

    def to_json(self) -> dict:
        """The file's JSON object: the content, its version id, the library version and the time it was fitted."""
        extra = {"library_version": self.library_version, "created": self.created}
        return {**self.content(), "version": self.version, **extra}


class ThresholdFile(_PolicyFile):
    kind: Literal["threshold"] = "threshold"


class CertifiedFile(_PolicyFile):
    kind: Literal["certified"] = "certified"


class RejectorFile(_PolicyFile):
    kind: Literal["rejector"] = "rejector"
    rejector: dict[str, Any]
    """The learned rejector's two logistic models."""


FILES: dict[str, type[_PolicyFile]] = {"threshold": ThresholdFile, "certified": CertifiedFile, "rejector": RejectorFile}
PolicyFile = Annotated[Union[ThresholdFile, CertifiedFile, RejectorFile], Field(discriminator="kind")]
_ADAPTER: TypeAdapter = TypeAdapter(PolicyFile)


def read_policy_file(d: Any) -> ThresholdFile | CertifiedFile | RejectorFile:
    """Validate a policy file's JSON object; PolicyError says in one line what is wrong."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise PolicyError(f"not a teaming policy (format {d.get('format') if isinstance(d, dict) else None!r})")
    if d.get("format_version") not in (1, FORMAT_VERSION):
        raise PolicyError(f"policy format version {d.get('format_version')} is not supported ({FORMAT_VERSION})")
    if d.get("kind") not in KINDS:
        raise PolicyError(f"unknown policy kind {d.get('kind')!r}")
    try:
        return _ADAPTER.validate_python(d)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:])  # the first part names the kind
        msg = first["msg"].removeprefix("Value error, ")
        raise PolicyError(f"{where}: {msg}" if where else msg) from None


def _content(d: dict) -> dict:
    body = {k: d.get(k) for k in _PolicyFile.model_fields if k not in ("library_version", "created", *OPTIONAL)}
    body.update({k: d[k] for k in OPTIONAL if d.get(k) is not None})
    return body


def report_v1(kind: str, r: dict) -> dict:
    """A format-1 report (a dataclass for thresholds, a dict for certified policies) in today's shape."""
    common = {k: r.get(k) for k in ("score", "n_items", "threshold", "deferral_rate", "machine_accuracy")}
    common.update(kind=kind, human_accuracy=r.get("human_accuracy"), team_accuracy=r.get("team_accuracy"))
    if kind == "threshold":
        return {
            **common,
            "accepted_accuracy": None,
            "rule": f"fewest deferrals not significantly worse than the best (paired t-tests over "
            f"{r['n_resamples']} {r['resample']})",
            "alpha": r["alpha"],
            "best_threshold": r["best_threshold"],
            "resample": r["resample"],
            "n_resamples": r["n_resamples"],
            "candidates": r["candidates"],
            "class_thresholds": r.get("class_thresholds"),
        }
    return {
        **common,
        "accepted_accuracy": r.get("accepted_accuracy"),
        "rule": f"lowest threshold certified {r['target_accuracy']:.2%} accurate on auto-answered items",
        "alpha": r["delta"],
        "candidates": [
            {
                "threshold": c["threshold"],
                "deferral_rate": 1 - c["accepted"] / r["n_items"],
                "p": c["p"],
                "eligible": c["certified"],
                "accepted": c["accepted"],
                "errors": c["errors"],
            }
            for c in r["candidates"]
        ],
    }
