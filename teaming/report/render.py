"""A TeamSummary rendered for people: sections of text, tables and figures, written as self-contained HTML
(figures inlined) or Markdown (figures in a folder beside it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from teaming._validation import InputError
from teaming.analysis import BinnedAccuracy, Interval
from teaming.model.figures import reliability_png
from teaming.policy import PolicyReport
from teaming.report.deferral import DeferralComparison
from teaming.report.plots import binned_accuracy_png, confusion_png, threshold_curve_png
from teaming.report.summary import TeamSummary
from teaming.templates import render


@dataclass
class Section:
    heading: str
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    figure: tuple[str, bytes] | None = None


@dataclass
class Report:
    title: str
    sections: list[Section]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _methods_section(c: DeferralComparison) -> Section:
    rows = [
        [name, *(f"{100 * m:.2f}% ± {100 * sd:.2f}" for m, sd in zip(a.mean(0), a.std(0)))]
        for name, a in c.accuracy.items()
    ]
    tests = "; ".join(
        f"{name.split(' (')[0]} {100 * gain:+.2f} points over {best} at {r:.0%} (p {p:.2g}, corrected {pc:.2g})"
        for name, best, r, gain, p, pc in c.tests
    )
    return Section(
        "Deferral methods at fixed budgets",
        f"Each method fitted on a random half of these items and scored on the other, over {c.splits} halvings "
        "(mean ± sd); a deferred item counts its expected human accuracy. Learned methods against the "
        f"best threshold rule: {tests}. The oracle rows bound what knowing people's or the model's mistakes gives.",
        ["method", *(f"{r:.0%} deferred" for r in c.rates)],
        rows,
    )


def _interval(i: Interval) -> str:
    return _pct(i.mean) if i.n < 2 else f"{_pct(i.mean)} ({_pct(i.low)} to {_pct(i.high)})"


def build_report(s: TeamSummary) -> Report:
    """The report's sections, in the order people read them: the gain first, then why, then where each errs."""
    reliability = Section(
        "Reliability",
        "Machine accuracy against its calibrated confidence.",
        figure=("reliability.png", reliability_png({"machine": s.data.probs}, s.data.y, "Reliability on these items")),
    )
    sections = [_gain_section(s), _curve_section(s), _fit_section(s.policy), reliability]
    if s.methods is not None:
        sections.append(_methods_section(s.methods))
    sections.append(
        _binned(
            "Accuracy by machine confidence",
            "Where people stay accurate while the machine is unsure, deferring pays.",
            s.by_confidence,
            f"machine confidence ({s.policy.score})",
            "per unit of confidence",
        )
    )
    if s.by_disagreement is not None:
        sections.append(
            _binned(
                "Accuracy by human disagreement",
                "Accuracy as people disagree more (entropy of the human votes).",
                s.by_disagreement,
                "entropy of human votes (nats)",
                "per nat",
            )
        )
    sections.append(_errors_section(s))
    return Report(s.title, sections)


def _gain_section(s: TeamSummary) -> Section:
    """The headline and the table: machine, human, team under the policy, best in hindsight, the oracle."""
    fitted = f" ({s.left_out} items the policy was fitted on are left out)" if s.left_out else ""
    draws = (
        f"mean over {s.human_interval.n} draws of the sampled people, 95% interval" if s.human_interval.n > 1 else ""
    )
    return Section(
        "Teaming gain",
        f"{s.data.y.size} items{fitted}. {headline(s)}"
        f"{' Every deferred item costs a review.' if s.deferral_rate else ''}"
        f"{' Human and team: ' + draws + '.' if draws else ''}",
        ["who answers", "accuracy", "deferred"],
        [
            ["machine alone", _pct(s.machine_accuracy), "0.00%"],
            ["human alone", _interval(s.human_interval), "100.00%"],
            [
                f"team, policy {s.policy_version} (threshold {s.threshold:.2f})",
                _interval(s.team_interval),
                _pct(s.deferral_rate) + (f" ({_pct(s.unfamiliar_rate)} as unfamiliar)" if s.unfamiliar_rate else ""),
            ],
            [
                f"team, best threshold in hindsight ({s.hindsight.threshold:.2f}, confidence alone, no guard)",
                _pct(s.hindsight.accuracy),
                _pct(s.hindsight.deferral_rate),
            ],
            ["oracle bound (right if either is right)", _pct(s.oracle), ""],
        ],
    )


def _curve_section(s: TeamSummary) -> Section:
    return Section(
        "Accuracy against threshold",
        "Team accuracy over 10 folds of these items (band: 95% interval) and the share deferred; the black line "
        "is the policy's threshold, the dashed one the best by mean on these items. The curve defers by "
        "confidence alone and takes the first draw of the sampled people"
        + (
            "; the table's team row also applies the familiarity guard and averages every draw."
            if s.unfamiliar_rate or s.human_interval.n > 1
            else "."
        ),
        figure=("threshold_curve.png", threshold_curve_png(s.curve, s.threshold)),
    )


def _errors_section(s: TeamSummary) -> Section:
    m = s.matching
    balanced = f"both wrong {_pct(m.both_wrong)}, same answer {_pct(m.same_wrong_answer)}"
    return Section(
        "Where each errs",
        f"Share of each one's mistakes by true class (rows) and wrong answer (columns). Both wrong on "
        f"{_pct(s.both_wrong)} of items; then the same wrong answer {_pct(s.same_wrong_answer)} of the "
        f"time (class-balanced sample: {balanced}).",
        figure=("error_confusion.png", confusion_png(s.error_shares, s.data.classes, "wrong answer", "true class")),
    )


def headline(s: TeamSummary) -> str:
    """The report's first sentence, each comparison with its own verdict: the team against the machine alone and
    against the person alone, and whether the difference clears the team's 95% interval."""
    one = s.team_interval.n < 2

    def versus(who: str, accuracy: float, their_high: float) -> str:
        diff = 100 * (s.team_accuracy - accuracy)
        if one:
            return f"{diff:+.2f} points over {who}"
        clear = s.team_interval.low > their_high if diff > 0 else s.team_interval.high < accuracy
        said = "significant" if clear else "within the interval: no clear difference"
        return f"{diff:+.2f} points over {who} ({said})"

    machine = versus("the machine alone", s.machine_accuracy, s.machine_accuracy)
    person = versus("the person alone", s.human_accuracy, s.human_interval.high)
    beats = s.team_interval.low > max(s.machine_accuracy, s.human_interval.high)
    if one:
        verdict = "beats both" if s.team_accuracy > max(s.machine_accuracy, s.human_accuracy) else "does not beat both"
    else:
        verdict = "clearly beats both" if beats else "does not clearly beat both"
    return f"The team {verdict} the machine alone and the person alone: {machine}, {person}."


def _fit_section(r: PolicyReport) -> Section:
    """The tests behind the policy's threshold: every tenth candidate, the chosen one and the best."""
    shown = [
        c for c in r.candidates if round(c.threshold * 10, 6) % 1 == 0 or c.threshold in (r.threshold, r.best_threshold)
    ]
    if r.kind == "threshold":
        return Section(
            "Paired t-tests from the policy's fit",
            f"Each threshold against the best ({r.best_threshold:.2f}) over {r.n_resamples} {r.resample}; "
            f"alpha {r.alpha}. Chosen: {r.threshold:.2f}.",
            ["threshold", "deferred", "team accuracy", "95% interval", "t", "p", "not worse"],
            [
                [
                    f"{c.threshold:.2f}",
                    _pct(c.deferral_rate),
                    _pct(c.mean_accuracy),
                    f"{_pct(c.ci_low)} to {_pct(c.ci_high)}",
                    f"{c.t:.2f}",
                    f"{c.p:.4f}",
                    "yes" if c.eligible else "no",
                ]
                for c in shown
            ],
        )
    return Section(
        "Binomial tests from the policy's fit",
        f"The {r.rule}, tested in fixed sequence at delta {r.alpha}. Chosen: {r.threshold:.2f}.",
        ["threshold", "deferred", "auto-answered", "errors", "p", "certified"],
        [
            [f"{c.threshold:.2f}", _pct(c.deferral_rate), str(c.accepted), str(c.errors), f"{c.p:.4f}"]
            + ["yes" if c.eligible else "no"]
            for c in shown
        ],
    )


def _binned(heading: str, lead: str, bins: dict[str, BinnedAccuracy], xlabel: str, unit: str) -> Section:
    """Machine and human accuracy per bin, with OLS slopes in the text and a figure."""
    slopes = "; ".join(f"{k}: OLS slope {b.slope:+.3f} {unit}" for k, b in bins.items())
    name = heading.lower().replace(" ", "_") + ".png"
    return Section(heading, f"{lead} {slopes}.", figure=(name, binned_accuracy_png(bins, xlabel, heading)))


def to_markdown(report: Report, figure_dir: str) -> str:
    """The report in Markdown (templates/report.md.j2), its figures linked from `figure_dir`."""
    return render("report.md.j2", report=report, figure_dir=figure_dir).removesuffix("\n")


def to_html(report: Report) -> str:
    """The report as one self-contained HTML page (templates/report.html.j2), its figures inlined."""
    return render("report.html.j2", report=report).removesuffix("\n")


def check_report_path(path: str | Path) -> Path:
    """A report path ends in .html or .md; checked before any work is done."""
    path = Path(path)
    if path.suffix not in (".html", ".md"):
        raise InputError(f"report path must end in .html or .md, got {path.name!r}")
    return path


def write_report(report: Report, path: str | Path) -> Path:
    """HTML (.html, self-contained) or Markdown (.md, figures in '<stem>_figures/')."""
    path = check_report_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".html":
        path.write_text(to_html(report))
    else:
        fig_dir = path.parent / f"{path.stem}_figures"
        fig_dir.mkdir(exist_ok=True)
        for s in report.sections:
            if s.figure:
                (fig_dir / s.figure[0]).write_bytes(s.figure[1])
        path.write_text(to_markdown(report, fig_dir.name))
    return path
