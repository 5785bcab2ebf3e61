"""Teaming reports: compute a summary of a policy's team on labelled items (summary), then render it as HTML or
Markdown with figures (render, plots)."""

from teaming.report.render import Report, build_report, check_report_path, write_report
from teaming.report.summary import TeamSummary, summarize

__all__ = ["Report", "TeamSummary", "build_report", "check_report_path", "summarize", "write_report"]
