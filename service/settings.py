"""Service settings from the environment (TEAMING_*), with defaults that serve the shipped model and policy."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tokens(spec: str) -> dict[str, str]:
    """'alice:tok1,bob:tok2' -> {token: reviewer}."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, token = part.partition(":")
        if not sep or not name or not token:
            raise ValueError(f"TEAMING_REVIEWER_TOKENS entries look like 'name:token', got {part!r}")
        out[token] = name
    return out


def _number(name: str, default, kind: type):
    """Environment variable `name` as int or float, the default when unset, a ValueError naming it when bad."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None


@dataclass
class Settings:
    model_dir: Path = ROOT / "models" / "cifar10h-default"
    policy_path: Path | None = None
    db_url: str = f"sqlite:///{ROOT / 'runs' / 'teaming.db'}"
    reviewer_tokens: dict[str, str] = field(default_factory=dict)
    admin_token: str | None = None
    classify_token: str | None = None
    audit_rate: float = 0.05
    audit_reviewers: int = 3
    lease_seconds: float = 300.0
    policy_poll_seconds: float = 5.0  # how soon a policy activated elsewhere (retune, a replica) takes effect
    max_images: int = 64
    max_image_bytes: int = 1_000_000
    max_pixels: int = 4096 * 4096
    max_batch_size: int = 256  # images per model call; requests are merged up to this, never split
    batch_concurrency: int = 2  # model calls in flight at once: one batch's logging overlaps the next forward
    seed: int | None = None
    log_decisions: bool = True  # off only to measure what logging costs (bench/serve_load.py)

    @classmethod
    def from_env(cls) -> "Settings":
        e = os.environ
        model_dir = Path(e.get("TEAMING_MODEL_DIR", cls.model_dir))
        policy = e.get("TEAMING_POLICY")
        s = cls(
            model_dir=model_dir,
            policy_path=Path(policy) if policy else (model_dir / "policy.json"),
            db_url=e.get("TEAMING_DB_URL", cls.db_url),
            reviewer_tokens=_tokens(e.get("TEAMING_REVIEWER_TOKENS", "")),
            admin_token=e.get("TEAMING_ADMIN_TOKEN") or None,
            classify_token=e.get("TEAMING_CLASSIFY_TOKEN") or None,
            audit_rate=_number("TEAMING_AUDIT_RATE", cls.audit_rate, float),
            audit_reviewers=_number("TEAMING_AUDIT_REVIEWERS", cls.audit_reviewers, int),
            lease_seconds=_number("TEAMING_LEASE_SECONDS", cls.lease_seconds, float),
            policy_poll_seconds=_number("TEAMING_POLICY_POLL_SECONDS", cls.policy_poll_seconds, float),
            max_images=_number("TEAMING_MAX_IMAGES", cls.max_images, int),
            max_image_bytes=_number("TEAMING_MAX_IMAGE_BYTES", cls.max_image_bytes, int),
            max_pixels=_number("TEAMING_MAX_PIXELS", cls.max_pixels, int),
            max_batch_size=_number("TEAMING_MAX_BATCH_SIZE", cls.max_batch_size, int),
            batch_concurrency=_number("TEAMING_BATCH_CONCURRENCY", cls.batch_concurrency, int),
            seed=_number("TEAMING_SEED", None, int),
            log_decisions=e.get("TEAMING_LOG_DECISIONS", "1") not in ("0", "false", "no"),
        )
        if s.max_images > s.max_batch_size:
            raise ValueError(f"TEAMING_MAX_IMAGES ({s.max_images}) exceeds TEAMING_MAX_BATCH_SIZE ({s.max_batch_size})")
        if s.batch_concurrency < 1:
            raise ValueError(f"TEAMING_BATCH_CONCURRENCY must be >= 1, got {s.batch_concurrency}")
        if s.policy_poll_seconds <= 0:
            raise ValueError(f"TEAMING_POLICY_POLL_SECONDS must be positive, got {s.policy_poll_seconds}")
        if not 0 <= s.audit_rate <= 1:
            raise ValueError(f"TEAMING_AUDIT_RATE must lie in [0, 1], got {s.audit_rate}")
        if s.db_url.startswith("sqlite:///"):
            Path(s.db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return s
