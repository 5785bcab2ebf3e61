"""The multi-host drill's judgement, pure: request figures over an event's window, and whether each alert fired
when it should (during its fault, no sooner than its rule's `for`) and only then."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml


@dataclass
class Request:
    at: float  # when it was sent
    seconds: float
    status: int  # 0: no answer at all (connection refused, reset or timed out)


@dataclass
class Event:
    """One fault, from its start until every host is back to full health."""

    name: str
    start: float
    expect: set[tuple[str, str]] = field(default_factory=set)  # (alert, instance) that should fire during it
    detected: float | None = None  # HAProxy stopped sending the host requests
    acted: float | None = None  # the fault was undone (the host restarted, reconnected; the last host rolled)
    healthy: float | None = None  # every host UP behind HAProxy and ready


@dataclass
class AlertEvent:
    at: float
    name: str
    instance: str
    state: str  # pending, firing, or resolved


def window_figures(requests: list[Request], start: float, end: float) -> dict:
    """Requests sent in [start, end): how many, how many failed (anything but 200) and with what status (0: no
    answer), p50 and p99 in ms."""
    inside = [r for r in requests if start <= r.at < end]
    ms = np.array([r.seconds * 1000 for r in inside]) if inside else np.zeros(1)
    codes = Counter(r.status for r in inside if r.status != 200)
    why = ", ".join(f"{'no answer' if c == 0 else c} x{n}" for c, n in sorted(codes.items()))
    return {
        "n": len(inside),
        "failed": sum(codes.values()),
        "why": why,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
    }


def rule_waits(rules: Path) -> dict[str, float]:
    """Each alert's `for`, in seconds (0 where it has none)."""
    units = {"s": 1, "m": 60, "h": 3600}
    waits = {}
    for group in yaml.safe_load(rules.read_text())["groups"]:
        for rule in group["rules"]:
            spec = rule.get("for", "0s")
            waits[rule["alert"]] = sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", spec))
    return waits


def alert_verdicts(events: list[Event], alerts: list[AlertEvent], waits: dict[str, float], slack: float = 20):
    """One line per expected alert (fired in time, late, early or never) and per firing nobody expected.

    An expected alert should fire no sooner than its `for` after the fault began and no later than `slack`
    seconds after that `for` or after the fault was undone, whichever is sooner."""
    firings = [a for a in alerts if a.state == "firing"]
    matched: set[int] = set()
    lines = []
    for ev in events:
        for name, instance in sorted(ev.expect):
            hits = [i for i, a in enumerate(firings) if (a.name, a.instance) == (name, instance)]
            hits = [i for i in hits if ev.start <= firings[i].at <= (ev.healthy or float("inf")) + slack]
            due = ev.start + waits.get(name, 0)
            if not hits:
                lines.append(
                    (False, f"{name} {instance} during '{ev.name}': never fired (due +{due - ev.start:.0f} s)")
                )
                continue
            matched.update(hits)
            at = firings[hits[0]].at
            ok = due - 1 <= at <= min(due, ev.acted or due) + slack
            resolved = [
                a.at for a in alerts if (a.name, a.instance, a.state) == (name, instance, "resolved") and a.at > at
            ]
            gone = f", resolved +{resolved[0] - ev.start:.0f} s" if resolved else ", never resolved"
            lines.append(
                (
                    ok,
                    f"{name} {instance} during '{ev.name}': fired +{at - ev.start:.0f} s "
                    f"(due +{due - ev.start:.0f} s){gone}",
                )
            )
    for i, a in enumerate(firings):
        if i not in matched:
            when = next((f"during '{ev.name}'" for ev in events if ev.start <= a.at <= (ev.healthy or a.at)), "")
            lines.append((False, f"{a.name} {a.instance} fired unexpectedly {when}".rstrip()))
    return lines


def pending_only(events: list[Event], alerts: list[AlertEvent]) -> list[str]:
    """Alerts that went pending during an event and never fired: the `for` that kept them quiet."""
    out = []
    for ev in events:
        end = ev.healthy or float("inf")
        states = {(a.name, a.instance, a.state) for a in alerts if ev.start <= a.at <= end}
        pend = sorted({(n, i) for n, i, s in states if s == "pending" and (n, i, "firing") not in states})
        out += [f"{n} {i} went pending during '{ev.name}' and did not fire" for n, i in pend]
    return out
