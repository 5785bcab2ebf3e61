"""Teaming reports: the summary's numbers on real CIFAR-10H items, and the rendering of every section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from teaming._validation import InputError
from teaming.policy import CertifiedPolicy, ThresholdPolicy
from teaming.report import build_report, summarize, write_report
from teaming.report.plots import binned_accuracy_png, confusion_png, threshold_curve_png
from teaming.team import TeamData

MODEL = Path(__file__).resolve().parents[2] / "models" / "cifar10h-default"


@pytest.fixture(scope="module")
def team(cifar_test, cifar10h, shipped_probs) -> TeamData:
    idx = np.arange(7000, 8000)
    probs = shipped_probs(idx)
    human = cifar10h.subset(idx)
    return TeamData(probs, human.sample(0), cifar_test.labels[idx], cifar_test.classes, human.counts)


def test_summary_numbers_agree_with_the_policy(team):
    policy = ThresholdPolicy(max_deferral=0.3).fit(team.probs, team.y, team.human, team.classes)
    s = summarize(team, policy, "toy")
    defer = policy.decide(team.probs)
    pred = team.probs.argmax(1)
    assert s.deferral_rate == pytest.approx(defer.mean())
    assert s.team_accuracy == pytest.approx(np.where(defer, team.human == team.y, pred == team.y).mean())
    assert s.machine_accuracy == pytest.approx((pred == team.y).mean())
    assert s.oracle >= max(s.team_accuracy, s.hindsight.accuracy) >= s.machine_accuracy
    assert s.gain == pytest.approx(s.team_accuracy - max(s.machine_accuracy, s.human_accuracy))
    assert s.by_confidence["machine"].counts.sum() == len(team.y) and s.by_disagreement is not None
    assert sum(m.sum() for m in s.error_shares.values()) == pytest.approx(2.0)  # two sets of shares summing to 1


def test_every_section_renders_to_html_and_markdown(team, tmp_path):
    for policy in (ThresholdPolicy(), CertifiedPolicy(target_accuracy=0.95, min_accepted=20)):
        policy.fit(team.probs, team.y, team.human, team.classes)
        report = build_report(summarize(team, policy, f"{policy.kind} report"))
        headings = [s.heading for s in report.sections]
        assert headings[0] == "Teaming gain" and headings[-1] == "Where each errs"
        assert sum(s.figure is not None for s in report.sections) == 5
        assert "tests from the policy's fit" in headings[2]
        html = write_report(report, tmp_path / f"{policy.kind}.html").read_text()
        assert html.count("data:image/png;base64,") == 5 and "<table>" in html
        md = write_report(report, tmp_path / f"{policy.kind}.md").read_text()
        assert md.startswith(f"# {policy.kind} report") and md.count("](") == 5
    with pytest.raises(InputError, match=".html or .md"):
        write_report(report, tmp_path / "r.pdf")


def test_figures_are_png(team):
    policy = ThresholdPolicy().fit(team.probs, team.y, team.human)
    s = summarize(team, policy, "figures")
    for png in (
        threshold_curve_png(s.curve, s.threshold),
        binned_accuracy_png(s.by_confidence, "confidence"),
        confusion_png(s.error_shares, team.classes, "wrong answer", "true class"),
    ):
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_team_data_refuses_mismatched_inputs(team):
    with pytest.raises(InputError, match="class names"):
        TeamData(team.probs, team.human, team.y, team.classes[:3])
    with pytest.raises(InputError, match="one entry per item"):
        TeamData(team.probs, team.human[:-1], team.y, team.classes)


def _summary(team_acc_draws, machine_acc, human_draws):
    """A TeamSummary whose gain table holds the given accuracies (the rest from the real team)."""
    from dataclasses import replace

    from teaming.analysis import mean_interval

    return replace(
        _BASE[0],
        machine_accuracy=machine_acc,
        team_interval=mean_interval(team_acc_draws),
        team_accuracy=float(np.mean(team_acc_draws)),
        human_interval=mean_interval(human_draws),
        human_accuracy=float(np.mean(human_draws)),
    )


_BASE: list = []


def test_the_headline_never_contradicts_its_numbers(team):
    from teaming.report.render import headline

    _BASE[:] = [summarize(team, ThresholdPolicy().fit(team.probs, team.y, team.human, team.classes), "h")]
    spread = np.linspace(-1, 1, 20)  # 20 draws around each mean
    close = _summary(0.9800 + 0.02 * spread, 0.9780, 0.8871 + 0.004 * spread)
    text = headline(close)  # +0.20 over the machine is within the team's interval, +9.29 over the person is not
    assert text.startswith("The team does not clearly beat both")
    assert "+0.20 points over the machine alone (within the interval: no clear difference)" in text
    assert "+9.29 points over the person alone (significant)" in text
    clear = _summary(0.9900 + 0.001 * spread, 0.9500, 0.9400 + 0.001 * spread)
    assert headline(clear).startswith("The team clearly beats both")
    worse = _summary(0.9000 + 0.001 * spread, 0.9500, 0.8000 + 0.001 * spread)
    assert "-5.00 points over the machine alone (significant)" in headline(worse)


def test_no_interval_leaves_0_to_100_percent(team):
    from teaming.analysis import mean_interval

    near_one = mean_interval([1.0] * 9 + [0.9])
    assert near_one.high == 1.0 and 0 <= near_one.low < near_one.mean  # a t-interval would reach 101.8%
    perfect = (team.probs.argmax(1) == team.y) | True  # a person who is always right beside the model
    policy = ThresholdPolicy().fit(team.probs, team.y, np.where(perfect, team.y, 0), team.classes)
    assert all(0 <= c.ci_low <= c.ci_high <= 1 for c in policy.report_.candidates)
