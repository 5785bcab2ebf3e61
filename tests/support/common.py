"""What the benches, drills and tests share: request payloads, /metrics readings, scratch PostgreSQL databases."""

from __future__ import annotations

import base64
import uuid

from sqlalchemy import create_engine, text

from teaming.datasets import default_test_jpegs

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def jpeg_payloads(n: int, start: int = 0) -> list[dict]:
    """/classify items for CIFAR-10 test images start..start+n-1 (JPEG bytes, base64)."""
    indices = range(start, start + n)
    return [
        {"id": f"cifar10_test/{i}", "data": base64.b64encode(b).decode()}
        for i, b in zip(indices, default_test_jpegs(indices))
    ]


def metric_total(text: str, name: str) -> float:
    """A sample's value in Prometheus /metrics text, summed over its label sets (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families  # installed with BentoML

    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)


def _admin(sql: str) -> None:
    """Run one statement on the local server's maintenance database, outside a transaction."""
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def scratch_postgres(prefix: str = "teaming_scratch") -> str:
    """Create an empty database on the local server and return its URL (raises when the server is absent)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _admin(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_postgres(url: str) -> None:
    """Drop a database made by scratch_postgres, closing its connections."""
    _admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
