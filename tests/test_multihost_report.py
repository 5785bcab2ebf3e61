"""The multi-host drill's judgement (bench/multihost_report.py): an alert counts as right only when it fires during
its fault, no sooner than its rule's `for`, and no alert fires outside the faults that expect it."""

import pytest

from bench.hosts import RULES
from bench.multihost_report import AlertEvent, Event, Request, alert_verdicts, pending_only, rule_waits, window_figures

H1 = "10.77.0.11:3000"
WAITS = {"TeamingNotReady": 120.0}


def kill(start: float = 1000.0) -> Event:
    return Event("SIGKILL h1", start, {("TeamingNotReady", H1)}, acted=start + 150, healthy=start + 200)


def test_the_rules_file_gives_each_alert_its_wait():
    waits = rule_waits(RULES)
    assert waits["TeamingNotReady"] == 120
    assert waits["TeamingReviewersFallingBehind"] == 600
    assert waits["TeamingLoopAlarm"] == 0


def test_an_alert_fired_after_its_wait_during_its_fault_is_right():
    alerts = [
        AlertEvent(1001, "TeamingNotReady", H1, "pending"),
        AlertEvent(1122, "TeamingNotReady", H1, "firing"),
        AlertEvent(1190, "TeamingNotReady", H1, "resolved"),
    ]
    [(ok, line)] = alert_verdicts([kill()], alerts, WAITS)
    assert ok
    assert "fired +122 s (due +120 s), resolved +190 s" in line


def test_an_alert_fired_before_its_wait_or_long_after_is_wrong():
    early = [AlertEvent(1030, "TeamingNotReady", H1, "firing")]
    late = [AlertEvent(1180, "TeamingNotReady", H1, "firing")]
    assert not alert_verdicts([kill()], early, WAITS)[0][0]
    assert not alert_verdicts([kill()], late, WAITS)[0][0]


def test_an_expected_alert_that_never_fires_is_wrong():
    [(ok, line)] = alert_verdicts([kill()], [AlertEvent(1001, "TeamingNotReady", H1, "pending")], WAITS)
    assert not ok
    assert "never fired" in line


def test_a_firing_no_fault_expects_is_wrong_and_named():
    rolling = Event("rolling update", 2000.0, acted=2100, healthy=2110)
    alerts = [AlertEvent(2050, "TeamingNotReady", "10.77.0.13:3000", "firing")]
    [(ok, line)] = alert_verdicts([kill(), rolling], alerts, WAITS)[1:]
    assert not ok
    assert line == "TeamingNotReady 10.77.0.13:3000 fired unexpectedly during 'rolling update'"


def test_pending_without_firing_is_reported_per_event():
    rolling = Event("rolling update", 2000.0, acted=2100, healthy=2110)
    alerts = [
        AlertEvent(1122, "TeamingNotReady", H1, "firing"),  # fired during the kill, not during the rollout
        AlertEvent(2010, "TeamingNotReady", H1, "pending"),
        AlertEvent(2040, "TeamingNotReady", H1, "resolved"),
    ]
    assert pending_only([kill(), rolling], alerts) == [
        f"TeamingNotReady {H1} went pending during 'rolling update' and did not fire"
    ]


def test_window_figures_count_failures_and_tail_latency():
    requests = [Request(10 + i * 0.01, 0.010, 200) for i in range(99)] + [Request(11.5, 2.0, 0), Request(50, 9, 503)]
    f = window_figures(requests, 10, 20)
    assert f["n"] == 100
    assert f["failed"] == 1
    assert f["why"] == "no answer x1"
    assert f["p50"] == 10
    assert f["p99"] == pytest.approx(10 + 0.01 * (2000 - 10))  # numpy's linear interpolation at rank 98.01
