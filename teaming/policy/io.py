"""Policies as versioned JSON files: written atomically, read back through `teaming.policy.file`, which checks
their content against the version id and adapts format-1 files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from teaming._validation import PolicyError
from teaming.policy.base import DeferralPolicy, PolicyReport
from teaming.policy.certified import CertifiedPolicy
from teaming.policy.file import read_policy_file
from teaming.policy.rejector import RejectorPolicy
from teaming.policy.sets import PredictionSets
from teaming.policy.threshold import ThresholdPolicy

KINDS: dict[str, type[DeferralPolicy]] = {
    "threshold": ThresholdPolicy,
    "certified": CertifiedPolicy,
    "rejector": RejectorPolicy,
}


def policy_from_dict(d: dict) -> DeferralPolicy:
    """Rebuild a fitted policy from its JSON form, checking format, kind and that the content matches its id."""
    file = read_policy_file(d)
    policy = KINDS[file.kind](**file.params)  # params a version lacks take today's defaults
    policy.threshold_ = file.threshold
    ct = file.class_thresholds
    policy.class_thresholds_ = None if ct is None else np.asarray(ct, dtype=np.float64)
    policy.classes_ = file.classes
    policy.unfamiliar_limit_ = file.unfamiliar_limit
    sets = file.prediction_sets
    policy.prediction_sets_ = None if sets is None else PredictionSets.from_dict(sets)
    policy.model_ = file.model
    policy.created_ = file.created
    policy.report_ = PolicyReport.from_dict(file.report)
    policy.load_extra(file.content())
    return policy


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
