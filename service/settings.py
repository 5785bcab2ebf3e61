"""Service settings from TEAMING_* environment variables (pydantic-settings), read once, when first asked for.

The defaults serve the shipped model with its policy and log to runs/teaming.db (SQLite). A bad value stops
the service at start with the variable's name and what is wrong with it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from teaming.model.imported import BACKENDS_OF
from teaming.model.runtime import BACKENDS
from teaming.ops.review import AUDIT_REVIEWERS, UNRESOLVED_AFTER

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "TEAMING_"
TRAFFIC_TIMEOUT = 120.0  # BentoML answers 504 past this, whatever the request is still doing


class Settings(BaseSettings):
    """Every setting of the service; each field is read from TEAMING_<NAME>."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore")

    model_dir: Path = ROOT / "models" / "cifar10h-default"
    policy: Path | None = Field(None, description="policy JSON to serve (default: the model folder's policy.json)")
    backend: Literal["auto", *BACKENDS, *BACKENDS_OF["onnx"][1:], *BACKENDS_OF["torchscript"]] = Field(
        "auto", description="how the model runs: auto = bf16 where native and checked, else fp32 (runtime.py)"
    )
    db_url: str = f"sqlite:///{ROOT / 'runs' / 'teaming.db'}"
    reviewer_tokens: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="'name:token,name:token' (stored as token -> name)"
    )
    admin_token: str | None = None
    classify_token: str | None = None
    audit_rate: float = Field(0.05, ge=0, le=1, description="share of all items also audited by k reviewers")
    audit_reviewers: int = Field(AUDIT_REVIEWERS, ge=1, description="k: different people per audited item")
    unresolved_after: int = Field(UNRESOLVED_AFTER, ge=1, description="none-of-these/can't-tell answers that close it")
    close_after_seconds: float = Field(
        24 * 3600.0, gt=0, description="an item whose tasks wait this long closes with the answers it has"
    )
    lease_seconds: float = Field(300.0, gt=0)
    correction_seconds: float = Field(
        60.0, ge=0, description="a reviewer may correct their own answer this long after giving it (0: never)"
    )
    second_opinion_below: float | None = Field(
        None, gt=0, le=1, description="ask another person while model and answers are less sure than this (off)"
    )
    max_opinions: int = Field(2, ge=1, description="the most people one deferred item asks (second opinions)")
    routing: Literal["fifo", "skill"] = Field(
        "fifo", description="which deferred task a claim takes: the oldest, or the one this reviewer adds most to"
    )
    prediction_sets: Literal["off", "lenient", "strict"] = Field(
        "off", description="show a deferred item's reviewer the policy's prediction set: highlighted, or as the choices"
    )
    set_share: float = Field(0.5, ge=0, le=1, description="of defer tasks shown the set when on; the rest stay blind")
    reviewer_leases: int = Field(1, ge=1, description="live leases a reviewer may hold; a claim past it repeats one")
    max_unread_bodies: int = Field(32, ge=0, description="uploads one client may have unfinished (0: no limit)")
    body_idle_seconds: float = Field(10.0, gt=0, description="a body that sends nothing this long gets 408")
    pixel_budget: int = Field(256_000_000, ge=1, description="pixels decoded at once in the process; 503 past it")
    db_wait_seconds: float = Field(30.0, ge=0, description="how long a start waits for an unreachable database")
    webhook_url: str | None = Field(None, description="POST every final answer set or changed here (signed)")
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 key of the webhook signatures")
    webhook_retry_seconds: float = Field(
        24 * 3600.0, gt=0, description="retry an event this long after it was written, then give it up"
    )
    webhook_max_attempts: int | None = Field(None, ge=1, description="give an event up after this many attempts")
    policy_poll_seconds: float = Field(5.0, gt=0, description="how soon a policy activated elsewhere is taken up")
    on_harm: Literal["alert", "defer-all", "previous"] = Field(
        "defer-all", description="when the harm alarm fires: alert only, send everything to people, or go back"
    )
    alarm_alpha: float = Field(0.05, gt=0, lt=1, description="each alarm's false-alarm probability, however watched")
    harm_tolerance: float = Field(0.02, ge=0, lt=1, description="accuracy auto-answers may lose before harm")
    max_wait_seconds: float = Field(3600.0, gt=0, description="a deferred item waiting longer raises `waiting`")
    min_agreement: float = Field(
        0.8, ge=0, lt=1, description="reviewers agreeing with the others' majority less often raise `agreement`"
    )
    watch_seconds: float = Field(5.0, gt=0, description="how often the monitors look at the log")
    max_images: int = Field(64, ge=1, description="images per classify request")
    max_image_bytes: int = Field(16_000_000, ge=1, description="bytes per image: a phone photo is 3-6 MB")
    max_pixels: int = Field(
        50_000_000, ge=1, description="width x height per image, from its header (a 50-megapixel phone photo)"
    )
    max_request_bytes: int = Field(
        100_000_000, ge=1, description="bytes of one classify body (base64 adds a third to the images' bytes)"
    )
    max_batch_size: int = Field(256, ge=1, description="images per model call; requests are merged, never split")
    request_seconds: float = Field(
        100.0,
        gt=0,
        lt=TRAFFIC_TIMEOUT,
        description=f"a classify request not answered this long after it came (BentoML gives up at "
        f"{TRAFFIC_TIMEOUT:g} s) gets 503 with Retry-After and logs nothing",
    )
    batch_concurrency: int = Field(2, ge=1, description="model calls in flight: logging overlaps the next forward")
    seed: int | None = None
    log_decisions: bool = Field(True, description="off only to measure what logging costs (bench/serve_load.py)")
    gpus: int = Field(
        0, ge=0, description="GPUs the service asks its scheduler for (BentoML's resources); 0 runs anywhere"
    )
    access_log: bool = Field(
        False, description="BentoML's line per request (1 ms each; decisions are in the log, refusals WARNING lines)"
    )

    @field_validator("reviewer_tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, spec: object) -> object:
        """'alice:tok1,bob:tok2' -> {'tok1': 'alice', 'tok2': 'bob'}."""
        if not isinstance(spec, str):
            return spec
        out = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, token = part.partition(":")
            if not sep or not name or not token:
                raise ValueError(f"entries look like 'name:token', got {part!r}")
            out[token] = name
        return out

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.max_images > self.max_batch_size:
            raise ValueError(
                f"{PREFIX}MAX_IMAGES ({self.max_images}) exceeds {PREFIX}MAX_BATCH_SIZE ({self.max_batch_size})"
            )
        if self.webhook_url and not self.webhook_secret:
            raise ValueError(f"{PREFIX}WEBHOOK_URL needs {PREFIX}WEBHOOK_SECRET to sign its events")
        return self

    @property
    def policy_path(self) -> Path:
        return self.policy or self.model_dir / "policy.json"


def load_settings() -> Settings:
    """Settings from the environment; a bad value raises ValueError naming its variable."""
    try:
        return Settings()
    except ValidationError as err:
        problems = []
        for e in err.errors():
            field = e["loc"][0] if e["loc"] else ""
            name = f"{PREFIX}{str(field).upper()}: " if field else ""
            got = f" (got {e['input']!r})" if field and isinstance(e.get("input"), str) else ""
            problems.append(f"{name}{e['msg'].removeprefix('Value error, ')}{got}")
        raise ValueError("; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The service's settings, read from the environment on first use (only `access_log` reads one at import)."""
    return load_settings()


def service_resources() -> dict:
    """BentoML's resources from TEAMING_GPUS, read when the service class is declared: a GPU is asked for only when
    set, so that a CPU pool can schedule the service (it uses a GPU wherever PyTorch sees one either way)."""
    try:
        gpus = load_settings().gpus
    except ValueError:
        gpus = 0
    return {"gpu": gpus} if gpus else {"cpu": "1"}


def access_log() -> bool:
    """TEAMING_ACCESS_LOG, read when the service class is declared (BentoML takes it there); a bad value is
    reported by the preflight check with the other settings."""
    try:
        return load_settings().access_log
    except ValueError:
        return False
