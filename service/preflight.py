"""Checks the `bentoml serve` process runs before it starts any worker, so that a service that cannot work stops
with one clear line and exit status 1, instead of workers crashing and restarting over and over: settings, the
model folder, the database (retried with backoff while it comes up) and the policy for the model."""

from __future__ import annotations

import logging
import os
import time

from sqlalchemy.exc import SQLAlchemyError

from service.policy import ServedPolicy
from service.settings import get_settings
from teaming.model.artifact import load_meta
from teaming.ops.store import Store

logger = logging.getLogger("bentoml.teaming")
DB_ATTEMPTS = 6  # about 30 s of backoff: 1, 2, 4, 8, 15 s


def open_store(url: str, attempts: int = DB_ATTEMPTS) -> Store:
    """The store, retried with backoff while the database is unreachable; the last error when it stays so."""
    for attempt in range(attempts):
        try:
            return Store(url)
        except SQLAlchemyError as err:
            if attempt == attempts - 1:
                raise
            wait = min(2.0**attempt, 15.0)
            logger.warning("the database is unreachable (%s); trying again in %.0f s", type(err).__name__, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def preflight() -> None:
    """Run once in the serving process (the one without PROMETHEUS_MULTIPROC_DIR); workers skip it."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    try:
        s = get_settings()
        meta = load_meta(s.model_dir)
        store = open_store(s.db_url)
        try:
            default = s.model_dir / "policy.json"
            ServedPolicy(store, meta.classes, meta.version, s.policy_poll_seconds, s.policy, default)
        finally:
            store.dispose()
    except (ValueError, FileNotFoundError, SQLAlchemyError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SystemExit(f"teaming: cannot serve: {first}") from None
