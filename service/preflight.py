"""Checks the `bentoml serve` process runs before it starts any worker, so that a service that cannot work stops
with one clear line and exit status 1, instead of workers crashing and restarting over and over: settings, the
model folder, the database (retried with backoff while it comes up) and the policy for the model."""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import SQLAlchemyError

from service.policy import ServedPolicy
from service.settings import get_settings
from teaming.model.artifact import load_meta
from teaming.ops.store import Store

logger = logging.getLogger("bentoml.teaming")


def open_store(url: str, wait_seconds: float) -> Store:
    """The store, retried with backoff (1, 2, 4, ... 15 s) while the database is unreachable, for up to
    `wait_seconds`; then the last error."""
    deadline = time.monotonic() + wait_seconds
    attempt = 0
    while True:
        try:
            return Store(url)
        except SQLAlchemyError as err:
            wait = min(2.0**attempt, 15.0, deadline - time.monotonic())
            if wait <= 0:
                raise
            logger.warning("the database is unreachable (%s); trying again in %.0f s", type(err).__name__, wait)
            time.sleep(wait)
            attempt += 1


def preflight() -> None:
    """Run once by `bentoml serve` before it starts workers (a deployment hook of the service)."""
    try:
        s = get_settings()
        meta = load_meta(s.model_dir)
        store = open_store(s.db_url, s.db_wait_seconds)
        try:
            default = s.model_dir / "policy.json"
            ServedPolicy(store, meta.classes, meta.version, s.policy_poll_seconds, s.policy, default)
        finally:
            store.dispose()
    except (ValueError, FileNotFoundError, SQLAlchemyError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SystemExit(f"teaming: cannot serve: {first}") from None
