"""The policy this replica serves: the active version for its model, taken up again whenever it changes.

At start, an explicit TEAMING_POLICY file wins and becomes the model's active version; otherwise the database's
active version for this model is served, or the model folder's policy.json when there is none. A policy fitted
for another model is refused. `teaming retune` (or an admin reload on any replica) activates a new version;
every replica polls for it at most once per TEAMING_POLICY_POLL_SECONDS, from the batch path.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sqlalchemy.exc import OperationalError

from teaming._validation import PolicyError
from teaming.ops.store import Store
from teaming.policy import DeferralPolicy, fitted_for, load_policy, policy_from_dict

logger = logging.getLogger("bentoml.teaming")  # under bentoml so its log config shows it


class ServedPolicy:
    """The active policy and its version id, swapped together so a reader never pairs one with another's id."""

    def __init__(
        self,
        store: Store,
        classes: list[str],
        model_version: str,
        poll_seconds: float,
        explicit: Path | None = None,
        default: Path | None = None,
    ) -> None:
        self.store = store
        self.classes = classes
        self.model_version = model_version
        self.poll_seconds = poll_seconds
        self.checked_at = time.monotonic()
        self.refused: str | None = None
        if explicit is not None:
            self._activate(explicit)
        elif store.active_policy(model_version) is None:
            if default is None or not default.exists():
                raise PolicyError(f"no policy for model {model_version}: set TEAMING_POLICY or fit one (fit-policy)")
            self._activate(default)
        self.reload()

    def check(self, policy: DeferralPolicy, where: str) -> None:
        """Refuse a policy fitted for another model or other classes."""
        fitted = fitted_for(policy)
        if fitted is not None and fitted != self.model_version:
            raise PolicyError(
                f"{where} was fitted for model {fitted}, not the served {self.model_version}: "
                "fit one for this model (teaming fit-policy) and point TEAMING_POLICY at it"
            )
        if policy.classes_ is not None and policy.classes_ != self.classes:
            raise PolicyError(f"{where} is for classes {policy.classes_}, the model has {self.classes}")

    def _activate(self, path: Path) -> None:
        policy = load_policy(path)
        self.check(policy, str(path))
        version = self.store.add_policy(policy.to_dict(), self.model_version, activate=True)
        logger.info("activated policy %s from %s for %s", version, path, self.model_version)

    def reload(self) -> tuple[DeferralPolicy, str]:
        """Load the model's active policy from the database; PolicyError when it is missing or does not fit."""
        body = self.store.active_policy(self.model_version)
        if body is None:
            raise PolicyError(f"no active policy for model {self.model_version}")
        policy = policy_from_dict(body)
        self.check(policy, f"policy {body['version']}")
        self.active = (policy, body["version"])
        return self.active

    def follow(self) -> None:
        """Every poll interval, take up a version activated elsewhere: `teaming retune`, or a reload on a replica."""
        now = time.monotonic()
        if now - self.checked_at < self.poll_seconds:
            return
        self.checked_at = now
        try:
            version = self.store.active_policy_version(self.model_version)
        except OperationalError:
            return  # the decision log write reports the outage
        if version is None or version in (self.active[1], self.refused):
            return
        try:
            self.reload()
            logger.info("took up policy %s", version)
        except PolicyError as err:
            self.refused = version
            logger.error("kept policy %s: the active %s does not fit the model: %s", self.active[1], version, err)
