"""Deferral policies: answer when the model is confident, hand the rest to a person.

One algorithm per module, all with scikit-learn's estimator shape `fit(probs, y, human=None, classes=None)`:
`ThresholdPolicy` (Liu et al.'s paired t-tests), `CertifiedPolicy` (Learn then Test) and `RejectorPolicy` (the
threshold rule on a learned score); `io` reads and writes
them as versioned JSON.
"""

from teaming._validation import PolicyError
from teaming.policy.base import Candidate, DeferralPolicy, PolicyReport, fitted_for, fitted_positions
from teaming.policy.certified import CertifiedPolicy
from teaming.policy.io import load_policy, policy_from_dict, save_policy
from teaming.policy.rejector import RejectorPolicy
from teaming.policy.threshold import ThresholdPolicy

__all__ = [
    "Candidate",
    "CertifiedPolicy",
    "DeferralPolicy",
    "PolicyError",
    "PolicyReport",
    "RejectorPolicy",
    "ThresholdPolicy",
    "fitted_for",
    "fitted_positions",
    "load_policy",
    "policy_from_dict",
    "save_policy",
]
