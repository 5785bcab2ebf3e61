"""Checks the `bentoml serve` process runs before it starts any worker, so that a service that cannot work stops
with one clear line and exit status 1, instead of workers crashing and restarting over and over: settings, the
model folder, the database (retried with backoff while it comes up) and the policy for the model."""

from __future__ import annotations

import logging
import shutil
import time

import torch
from sqlalchemy.exc import SQLAlchemyError

from service.served_policy import ServedPolicy
from service.settings import Settings, get_settings
from teaming.model.imported import INT8_FILE
from teaming.model.loader import serving_backend
from teaming.model.meta import ModelMeta, load_meta
from teaming.model.runtime import ONNX_FILES
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


def backend(s: Settings, meta: ModelMeta) -> tuple[str, str]:
    """The backend to serve and why; a reduced-precision one set by hand must have passed its check on this kind
    of device, an ONNX one needs its graph, a compiled one a C++ compiler (raises ValueError / FileNotFoundError
    with the fix)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name, why = serving_backend(s.backend, meta, device)
    if name.startswith("compiled") and device.type == "cpu" and not (shutil.which("c++") or shutil.which("g++")):
        raise ValueError(f"TEAMING_BACKEND={name} needs a C++ compiler on this machine (torch.compile on CPUs)")
    needs = ONNX_FILES.get(name) if meta.kind == "teaming" else INT8_FILE if name == "onnx-int8" else meta.graph.file
    if needs and not (s.model_dir / needs).exists():
        raise FileNotFoundError(f"TEAMING_BACKEND={name} needs {s.model_dir / needs}: run `teaming export`")
    return name, why


def preflight() -> None:
    """Run once by `bentoml serve` before it starts workers (a deployment hook of the service)."""
    try:
        s = get_settings()
        meta = load_meta(s.model_dir)
        backend(s, meta)
        store = open_store(s.db_url, s.db_wait_seconds)
        try:
            default = s.model_dir / "policy.json"
            served = ServedPolicy(store, meta.classes, meta.version, s.policy_poll_seconds, s.policy, default)
            if s.prediction_sets != "off" and served.active[0].prediction_sets_ is None:
                raise ValueError(
                    f"TEAMING_PREDICTION_SETS={s.prediction_sets} needs a policy with prediction sets: policy "
                    f"{served.active[1]} has none (fit one with teaming fit-policy, whose --set-coverage is 0.9)"
                )
        finally:
            store.dispose()
    except (ValueError, FileNotFoundError, SQLAlchemyError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SystemExit(f"teaming: cannot serve: {first}") from None
