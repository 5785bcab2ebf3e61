"""Prometheus metrics of the service (prometheus_client; BentoML serves them at /metrics with its own)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
from prometheus_client import Counter, Gauge, Histogram

SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

decisions = Counter("teaming_decisions", "Decisions by outcome", ["outcome"])
queue_depth = Gauge("teaming_queue_depth", "Open review tasks", multiprocess_mode="mostrecent")
deferral_rate = Gauge(
    "teaming_deferral_rate", "Share of logged decisions deferred to people", multiprocess_mode="mostrecent"
)
alarm_raised = Gauge("teaming_alarm", "1 while a monitor's alarm is raised", ["name"], multiprocess_mode="mostrecent")
alarm_evidence = Gauge(
    "teaming_alarm_evidence", "A monitor's evidence (its wealth; the alarm needs 1/alpha)", ["name"],
    multiprocess_mode="mostrecent",
)  # fmt: skip
alarm_bound = Gauge(
    "teaming_alarm_bound", "What a monitor tests its stream against", ["name"], multiprocess_mode="mostrecent"
)
alarm_estimate = Gauge("teaming_alarm_estimate", "A monitor's stream mean", ["name"], multiprocess_mode="mostrecent")
# database-wide figures: every replica exports its own copy of the same value, so queries take max(), never sum()
LATEST = "mostrecent"
oldest_wait = Gauge("teaming_oldest_wait_seconds", "The oldest deferred item's wait", multiprocess_mode=LATEST)
webhooks_pending = Gauge("teaming_webhooks_pending", "Webhook events waiting for delivery", multiprocess_mode=LATEST)
webhooks_given_up = Gauge(
    "teaming_webhooks_given_up", "Webhook events given up (teaming redeliver resends)", multiprocess_mode=LATEST
)
ready = Gauge("teaming_ready", "1 while this replica answers /readyz with 200", multiprocess_mode=LATEST)
batch_requests = Histogram("teaming_batch_requests", "Requests merged into one model call", buckets=SIZES)
batch_images = Histogram("teaming_batch_images", "Images in one model call", buckets=SIZES)
review_latency = Histogram(
    "teaming_review_latency_seconds",
    "Time from decision to human label",
    buckets=(1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)


def observe_batch(requests: int, images: int) -> None:
    batch_requests.observe(requests)
    batch_images.observe(images)


def observe_stats(stats: dict) -> None:
    """Queue depth and deferral rate from a fresh look at the log."""
    queue_depth.set(stats["queue_open"])
    deferral_rate.set(stats["deferral_rate"])


def observe_alarms(alarms) -> None:
    """Each monitor's state (teaming.ops.monitors.Alarm)."""
    for a in alarms:
        if a.name == "waiting":
            oldest_wait.set(a.estimate or 0.0)
        alarm_raised.labels(a.name).set(int(a.raised))
        alarm_evidence.labels(a.name).set(min(a.evidence, 1e12))
        alarm_bound.labels(a.name).set(a.bound)
        if a.estimate is not None:
            alarm_estimate.labels(a.name).set(a.estimate)


def observe_webhooks(pending: int, given_up: int) -> None:
    webhooks_pending.set(pending)
    webhooks_given_up.set(given_up)


def own_prometheus_dir() -> None:
    """Give this `bentoml serve` process a Prometheus folder of its own.

    BentoML keeps multiprocess metrics in $BENTOML_HOME/prometheus_multiproc_dir and empties it when a server
    starts, so a second replica on the same host would wipe the first one's counters. The serving process (the
    one without PROMETHEUS_MULTIPROC_DIR yet) takes <that folder>/serve-<pid> instead, and removes the folders
    of servers that are gone; its workers inherit the folder through the environment.
    """
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return  # a worker, or a folder chosen by hand
    from bentoml._internal.configuration.containers import BentoMLContainer

    shared = Path(BentoMLContainer.bentoml_home.get()) / "prometheus_multiproc_dir"
    if shared.is_dir():
        for old in shared.glob("serve-*"):
            pid = old.name.removeprefix("serve-")
            if pid.isdigit() and not psutil.pid_exists(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
    BentoMLContainer.prometheus_multiproc_dir.set(str(shared / f"serve-{os.getpid()}"))
