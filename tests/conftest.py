"""Shared fixtures: the embedded CIFAR-10 test images and CIFAR-10H votes (always present), the shared data
folder (optional), scratch databases on SQLite and on the PostgreSQL server at 127.0.0.1:5432, and the service
started in a subprocess on a free loopback port."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from teaming.data import ImageSet
from teaming.datasets import load_cifar10h, load_default_test, shared_data_dir
from teaming.labels import HumanLabels

torch.set_num_threads(2)
training = importlib.import_module("teaming.model.train")  # the module (teaming.model.train is also a function)
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "cifar10h-default"
REVIEWERS = {"alice": "tok-alice", "bob": "tok-bob", "carol": "tok-carol", "dave": "tok-dave"}
ADMIN = "tok-admin"
LEASE_SECONDS = 8  # long enough for a slow CI machine between claim and label


# Tests are marked by what they stand on, so a person can leave out the slow kinds:
#   pytest -m "not service and not train and not postgres"
MARKED_BY_FIXTURE = {"service_process": "service", "cpu_training": "train", "postgres_url": "postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the fixtures it uses, directly or through other fixtures (and by a PostgreSQL param)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "postgresql" in params.values():
            names.add("postgres_url")
        for fixture, mark in MARKED_BY_FIXTURE.items():
            if fixture in names:
                item.add_marker(mark)


@pytest.fixture(scope="session")
def service_process() -> None:
    """Stands for "this test starts the service in a subprocess" (marks it `service`)."""


@pytest.fixture(scope="session")
def cpu_training() -> None:
    """Stands for "this test trains a net on the CPU" (marks it `train`)."""


@pytest.fixture(autouse=True)
def _training_is_marked(request, monkeypatch) -> None:
    """A test that trains without the `cpu_training` fixture fails, so the fast loop stays fast."""
    if request.node.get_closest_marker("train") is None:

        def refuse(*args, **kwargs):
            raise AssertionError("this test trains a net: give it the cpu_training fixture (it marks it `train`)")

        monkeypatch.setattr(training._Loop, "epoch", refuse)


@pytest.fixture(scope="session")
def cifar_test() -> ImageSet:
    return load_default_test()


@pytest.fixture(scope="session")
def cifar10h() -> HumanLabels:
    return load_cifar10h()


SHIPPED_HELD_OUT = range(7000, 8500)


@pytest.fixture(scope="session")
def shipped_probs(cifar_test) -> Callable[[np.ndarray], np.ndarray]:
    """items -> the shipped default model's probabilities on those held-out items (7000..8499): the net runs over
    them once per session, however many tests read them."""
    from teaming.model import load_artifact

    lo, hi = SHIPPED_HELD_OUT.start, SHIPPED_HELD_OUT.stop
    probs = load_artifact(DEFAULT_MODEL).predict_proba(cifar_test.images[lo:hi])

    def lookup(items: np.ndarray) -> np.ndarray:
        items = np.asarray(items)
        assert items.min() >= lo and items.max() < hi, f"shipped_probs holds items {lo}..{hi - 1}"
        return probs[items - lo].copy()

    return lookup


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data (or $TEAMING_DATA) with the CIFAR-10 training pack is absent")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _postgres() -> str:
    from tests.support.common import scratch_postgres

    try:
        return scratch_postgres("teaming_test")
    except Exception as err:  # no server, no driver
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {err}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on the local PostgreSQL server (skips when the server is absent)."""
    from tests.support.common import drop_postgres

    url = _postgres()
    yield url
    drop_postgres(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A fresh database URL: a SQLite file, then a scratch PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log.db'}"
        return
    from tests.support.common import drop_postgres

    url = _postgres()
    yield url
    drop_postgres(url)


def service_env(tmp: Path, audit_rate: float, db: str | None = None, **extra: str) -> dict[str, str]:
    """Test settings: four reviewers, an admin, short leases, small limits, a seeded audit draw."""
    return {
        "TEAMING_DB_URL": db or f"sqlite:///{tmp / 'service.db'}",
        "TEAMING_REVIEWER_TOKENS": ",".join(f"{k}:{v}" for k, v in REVIEWERS.items()),
        "TEAMING_ADMIN_TOKEN": ADMIN,
        "TEAMING_AUDIT_RATE": str(audit_rate),
        "TEAMING_SEED": "0",
        "TEAMING_LEASE_SECONDS": str(LEASE_SECONDS),
        "TEAMING_MAX_IMAGES": "16",
        "TEAMING_MAX_IMAGE_BYTES": "200000",
        "TEAMING_MAX_PIXELS": "1000000",
        "BENTOML_HOME": str(tmp / "bentoml"),
        **extra,
    }


class Served:
    """A running service with its settings, and typed clients for its reviewers, admin and callers."""

    def __init__(self, proc, db: str) -> None:
        self.proc = proc
        self.url = proc.url
        self.db = db

    def client(self, token: str | None = None):
        from teaming.client import TeamingClient

        return TeamingClient(self.url, token, timeout=60)

    def reviewer(self, name: str):
        return self.client(REVIEWERS[name])

    def admin(self):
        return self.client(ADMIN)


@pytest.fixture(scope="module")
def serve(tmp_path_factory, service_process) -> Iterator[Callable[..., Served]]:
    """Start `bentoml serve` with test settings (keyword arguments override them); stopped after the module.

    serve(audit_rate=0.25, db=None, **env) -> a Served service; reviewers are REVIEWERS, the admin ADMIN.
    """
    pytest.importorskip("bentoml", reason="the service extra (pip install -e '.[serve]') is not installed")
    from tests.support.process import ServiceProcess

    started = []

    def start(audit_rate: float = 0.25, db: str | None = None, ready_path: str = "/readyz", **env: str) -> Served:
        tmp = tmp_path_factory.mktemp("svc")
        settings = service_env(tmp, audit_rate, db, **env)
        proc = ServiceProcess(settings, tmp / "server.log")
        started.append(proc)
        return Served(proc.start(ready_path=ready_path), settings["TEAMING_DB_URL"])

    yield start
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


@pytest.fixture(scope="session")
def reviewers() -> dict[str, str]:
    """Reviewer name -> token, as the test service is set up."""
    return dict(REVIEWERS)


@pytest.fixture(scope="session")
def admin_token() -> str:
    return ADMIN


@pytest.fixture(scope="session")
def lease_seconds() -> float:
    return LEASE_SECONDS


def _probs_with_confidence(conf: np.ndarray, pred: np.ndarray, c: int = 10) -> np.ndarray:
    """Probabilities whose top class is `pred` with probability `conf`, the rest spread evenly."""
    p = np.repeat(((1 - conf) / (c - 1))[:, None], c, 1)
    p[np.arange(len(conf)), pred] = conf
    return p


def _toy_team(copies: int, human_wrong_at: tuple[float, ...] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs, y, human): nine confidences 0.15..0.95 repeated; the machine is wrong below 0.6, the human only
    where told."""
    conf = np.tile(np.arange(0.15, 1.0, 0.1), copies)
    y = np.tile(np.arange(9), copies)
    pred = np.where(conf < 0.6, (y + 1) % 10, y)
    wrong_h = np.isin(np.round(conf, 2), np.round(human_wrong_at, 2))
    human = np.where(wrong_h, (y + 2) % 10, y)
    return _probs_with_confidence(conf, pred), y, human


@pytest.fixture(scope="session")
def probs_with_confidence() -> Callable[..., np.ndarray]:
    return _probs_with_confidence


@pytest.fixture(scope="session")
def toy_team() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return _toy_team
