"""The policy this replica serves: the database's active version, taken up again whenever it changes.

`teaming retune` (or an admin reload on any replica) activates a version in the database; every replica polls
for it at most once per TEAMING_POLICY_POLL_SECONDS, from the batch path, so no request waits for it.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import OperationalError

from teaming._validation import PolicyError
from teaming.ops.store import Store
from teaming.policy import DeferralPolicy, policy_from_dict

logger = logging.getLogger("bentoml.teaming")  # under bentoml so its log config shows it


class ServedPolicy:
    """The active policy and its version id, swapped together so a reader never pairs one with another's id."""

    def __init__(self, store: Store, classes: list[str], poll_seconds: float) -> None:
        self.store = store
        self.classes = classes
        self.poll_seconds = poll_seconds
        self.checked_at = time.monotonic()
        self.refused: str | None = None
        self.reload()

    def reload(self) -> tuple[DeferralPolicy, str]:
        """Load the database's active policy; PolicyError when there is none or it does not fit the model."""
        body = self.store.active_policy()
        if body is None:
            raise PolicyError("no policy: set TEAMING_POLICY or run `teaming retune`")
        policy = policy_from_dict(body)
        if policy.classes_ is not None and policy.classes_ != self.classes:
            raise PolicyError(f"policy classes {policy.classes_} differ from the model's {self.classes}")
        self.active = (policy, body["version"])
        return self.active

    def follow(self) -> None:
        """Every poll interval, take up a policy activated elsewhere: `teaming retune`, or a reload on a replica."""
        now = time.monotonic()
        if now - self.checked_at < self.poll_seconds:
            return
        self.checked_at = now
        try:
            version = self.store.active_policy_version()
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
