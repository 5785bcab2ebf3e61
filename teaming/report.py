"""A teaming report for one labelled item set: what the machine, the person and the team get right, with figures.

Writes self-contained HTML (figures inlined) or Markdown (figures beside it).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from teaming.analysis import (
    accuracy_by_bins,
    best_in_hindsight,
    error_confusion,
    matching_percentage,
    oracle_accuracy,
)
from teaming.labels import HumanLabels
from teaming.plots import binned_accuracy_png, confusion_png, reliability_png, threshold_curve_png
from teaming.policy import CertifiedPolicy, PolicyError, ThresholdPolicy, check_labels, check_probs, confidence


@dataclass
class TeamData:
    """One labelled item set: calibrated machine probabilities, one human answer and a reference label per item."""

    probs: np.ndarray
    human: np.ndarray
    y: np.ndarray
    classes: list[str]
    human_counts: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.probs = check_probs(self.probs)
        if self.probs.ndim != 2:
            raise PolicyError(f"a report takes N x C probabilities, got {self.probs.shape}")
        n, c = self.probs.shape
        if len(self.classes) != c:
            raise PolicyError(f"{len(self.classes)} class names for {c} probability columns")
        self.human = check_labels(self.human, n, c, "human answers")
        self.y = check_labels(self.y, n, c, "reference labels")


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


def build_report(data: TeamData, policy: ThresholdPolicy | CertifiedPolicy, title: str) -> Report:
    """Score the policy's team on these items and draw the figures people look at first."""
    p, y, h = data.probs, data.y, data.human
    pred = p.argmax(1)
    conf = confidence(p, policy.score)
    defer = policy.decide(p)
    team = np.where(defer, h == y, pred == y)
    hindsight = best_in_hindsight(p, h, y)
    sections = []

    rows = [
        ["machine alone", _pct((pred == y).mean()), "0.00%"],
        ["human alone", _pct((h == y).mean()), "100.00%"],
        [f"team, policy {policy.version} (threshold {policy.threshold_:.2f})", _pct(team.mean()), _pct(defer.mean())],
        [
            f"team, best threshold in hindsight ({hindsight.threshold:.2f})",
            _pct(hindsight.accuracy),
            _pct(hindsight.deferral_rate),
        ],
        ["oracle bound (right if either is right)", _pct(oracle_accuracy(pred, h, y)), ""],
    ]
    gain = team.mean() - max((pred == y).mean(), (h == y).mean())
    verdict = "beats" if gain > 0 else "does not beat"
    sections.append(
        Section(
            "Teaming gain",
            f"{len(y)} items. The team {verdict} the better of machine and human alone ({100 * gain:+.2f} points).",
            ["who answers", "accuracy", "deferred"],
            rows,
        )
    )

    curve = ThresholdPolicy(score=policy.score).fit(p, h, y, data.classes).report_
    sections.append(
        Section(
            "Accuracy against threshold",
            "Team accuracy over 10 folds of these items (band: 95% interval) and the share deferred; the black line "
            "is the policy's threshold, the dashed one the best by mean on these items.",
            figure=("threshold_curve.png", threshold_curve_png(curve, policy.threshold_)),
        )
    )
    fit_report = policy.report_
    if isinstance(policy, ThresholdPolicy):
        chosen = policy.threshold_
        shown = [c for c in fit_report.candidates if round(c.threshold * 10, 6) % 1 == 0 or c.threshold == chosen]
        sections.append(
            Section(
                "Paired t-tests from the policy's fit",
                f"Each threshold against the best ({fit_report.best_threshold:.2f}) over {fit_report.n_resamples} "
                f"{fit_report.resample}; alpha {fit_report.alpha}. Chosen: {chosen:.2f}.",
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
        )

    sections.append(
        Section(
            "Reliability",
            "Machine accuracy against its calibrated confidence.",
            figure=("reliability.png", reliability_png({"machine": p}, y, "Reliability on these items")),
        )
    )

    edges = np.linspace(conf.min(), 1, 11) if policy.score == "max_prob" else np.linspace(0, 1, 11)
    sections.append(
        _binned_section(
            "Accuracy by machine confidence",
            "Where people stay accurate while the machine is unsure, deferring pays.",
            pred == y,
            h == y,
            conf,
            edges,
            f"machine confidence ({policy.score})",
            "per unit of confidence",
        )
    )
    if data.human_counts is not None:
        ent = HumanLabels.from_counts(data.human_counts, data.classes).entropy()
        sections.append(
            _binned_section(
                "Accuracy by human disagreement",
                "Accuracy as people disagree more (entropy of the human votes).",
                pred == y,
                h == y,
                ent,
                np.linspace(0, max(ent.max(), 1e-6), 8),
                "entropy of human votes (nats)",
                "per nat",
            )
        )

    c = len(data.classes)
    errs = {}
    for name, ans in (("machine", pred), ("human", h)):
        m = np.zeros((c, c))
        wrong = ans != y
        np.add.at(m, (y[wrong], ans[wrong]), 1)
        errs[f"{name} errors ({int(wrong.sum())})"] = m / max(wrong.sum(), 1)
    both = error_confusion(pred, h, y, c)
    match = matching_percentage(pred, h, y)
    both_wrong = _pct(((pred != y) & (h != y)).mean())
    balanced = f"both wrong {_pct(match.both_wrong)}, same answer {_pct(match.same_wrong_answer)}"
    sections.append(
        Section(
            "Where each errs",
            f"Share of each one's mistakes by true class (rows) and wrong answer (columns). Both wrong on "
            f"{both_wrong} of items; then the same wrong answer {_pct(np.trace(both))} of the "
            f"time (class-balanced sample: {balanced}).",
            figure=("error_confusion.png", confusion_png(errs, data.classes, "wrong answer", "true class")),
        )
    )
    return Report(title, sections)


def _binned_section(
    heading: str,
    lead: str,
    machine_ok: np.ndarray,
    human_ok: np.ndarray,
    value: np.ndarray,
    edges: np.ndarray,
    xlabel: str,
    unit: str,
) -> Section:
    """Machine and human accuracy per bin of `value`, with OLS slopes in the text and a figure."""
    bins = {"machine": accuracy_by_bins(machine_ok, value, edges), "human": accuracy_by_bins(human_ok, value, edges)}
    slopes = "; ".join(f"{k}: OLS slope {b.slope:+.3f} {unit}" for k, b in bins.items())
    name = heading.lower().replace(" ", "_") + ".png"
    return Section(heading, f"{lead} {slopes}.", figure=(name, binned_accuracy_png(bins, xlabel, heading)))


def _table_md(s: Section) -> list[str]:
    if not s.rows:
        return []
    lines = ["| " + " | ".join(s.header) + " |", "|" + "---|" * len(s.header)]
    lines += ["| " + " | ".join(r) + " |" for r in s.rows]
    return lines + [""]


def to_markdown(report: Report, figure_dir: str) -> str:
    lines = [f"# {report.title}", ""]
    for s in report.sections:
        lines += [f"## {s.heading}", "", s.text, ""] + _table_md(s)
        if s.figure:
            lines += [f"![{s.heading}]({figure_dir}/{s.figure[0]})", ""]
    return "\n".join(lines)


def to_html(report: Report) -> str:
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}</style>",
        f"</head><body><h1>{html.escape(report.title)}</h1>",
    ]
    for s in report.sections:
        out.append(f"<h2>{html.escape(s.heading)}</h2><p>{html.escape(s.text)}</p>")
        if s.rows:
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in s.header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in s.rows]
            out.append("</table>")
        if s.figure:
            b64 = base64.b64encode(s.figure[1]).decode()
            out.append(f"<img alt='{html.escape(s.heading)}' src='data:image/png;base64,{b64}'>")
    return "\n".join(out + ["</body></html>"])


def write_report(report: Report, path: str | Path) -> Path:
    """HTML (.html, self-contained) or Markdown (.md, figures in '<stem>_figures/')."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".html":
        path.write_text(to_html(report))
    elif path.suffix == ".md":
        fig_dir = path.parent / f"{path.stem}_figures"
        fig_dir.mkdir(exist_ok=True)
        for s in report.sections:
            if s.figure:
                (fig_dir / s.figure[0]).write_bytes(s.figure[1])
        path.write_text(to_markdown(report, fig_dir.name))
    else:
        raise PolicyError(f"report path must end in .html or .md, got {path.name!r}")
    return path
