"""Policies as versioned JSON: written atomically, read back with their content checked against the version id.

Format 2 holds one report type for every kind; format 1 files (before the report was unified) still load.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from teaming._validation import PolicyError
from teaming.policy.base import FORMAT, FORMAT_VERSION, DeferralPolicy, PolicyReport, content_digest
from teaming.policy.certified import CertifiedPolicy
from teaming.policy.rejector import RejectorPolicy
from teaming.policy.threshold import ThresholdPolicy

KINDS: dict[str, type[DeferralPolicy]] = {
    "threshold": ThresholdPolicy,
    "certified": CertifiedPolicy,
    "rejector": RejectorPolicy,
}
EXTRA = {"rejector": ("rejector",)}  # body fields of one kind
BODY = ("format", "format_version", "kind", "params", "threshold", "class_thresholds", "classes", "model", "report")


def policy_from_dict(d: dict) -> DeferralPolicy:
    """Rebuild a fitted policy from its JSON form, checking format, kind and that the content matches its id."""
    if d.get("format") != FORMAT:
        raise PolicyError(f"not a teaming policy (format {d.get('format')!r})")
    if d.get("format_version") not in (1, FORMAT_VERSION):
        raise PolicyError(f"policy format version {d.get('format_version')} is not supported ({FORMAT_VERSION})")
    if d.get("kind") not in KINDS:
        raise PolicyError(f"unknown policy kind {d.get('kind')!r}")
    body = {k: d.get(k) for k in BODY}
    for key in ("unfamiliar_limit", *EXTRA.get(d["kind"], ())):  # only present where used: old ids stay valid
        if key in d:
            body[key] = d[key]
    if f"{d['kind']}-{content_digest(body)}" != d.get("version"):
        raise PolicyError(f"policy content does not match its version id {d.get('version')!r} (edited by hand?)")
    policy = KINDS[d["kind"]](**d["params"])  # params a version lacks take today's defaults
    policy.threshold_ = float(d["threshold"])
    ct = d.get("class_thresholds")
    policy.class_thresholds_ = None if ct is None else np.asarray(ct, dtype=np.float64)
    policy.classes_ = d.get("classes")
    policy.unfamiliar_limit_ = d.get("unfamiliar_limit")
    policy.load_extra(d)
    policy.model_ = d.get("model")
    policy.created_ = d.get("created")
    report = d["report"] if d["format_version"] == FORMAT_VERSION else _report_v1(d["kind"], d["report"])
    policy.report_ = PolicyReport.from_dict(report)
    if isinstance(policy, ThresholdPolicy):
        policy.resample_ = policy.report_.resample
    return policy


def _report_v1(kind: str, r: dict) -> dict:
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


def load_policy(path: str | Path) -> DeferralPolicy:
    path = Path(path)
    if not path.exists():
        raise PolicyError(f"no policy file at {path}")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PolicyError(f"{path} is not valid JSON: {err}") from None
    return policy_from_dict(d)


def save_policy(policy: DeferralPolicy, path: str | Path) -> Path:
    """Write the policy as JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(policy.to_dict(), fh, indent=2, default=float)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
