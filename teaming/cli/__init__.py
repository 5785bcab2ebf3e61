"""The `teaming` command line: parse, call the library, print. Every default lives in the library (its config
dataclasses and estimators); the options only restate it for the help text."""

from __future__ import annotations

import typer

from teaming.cli import export, importing, model, ops, policy

app = typer.Typer(
    help="Human-AI teaming: train calibrated classifiers on human labels, fit deferral policies, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("train")(model.train_cmd)
app.command("evaluate")(model.evaluate_cmd)
app.command("fit-guard")(model.fit_guard_cmd)
app.command("export")(export.export_cmd)
app.command("import")(importing.import_cmd)
app.command("fit-policy")(policy.fit_policy_cmd)
app.command("report")(policy.report_cmd)
app.command("retune")(ops.retune_cmd)
app.command("reviewers")(ops.reviewers_cmd)
app.command("migrate")(ops.migrate_cmd)
app.command("simulate")(ops.simulate_cmd)
webhooks = typer.Typer(help="The webhook outbox: events for callers.", no_args_is_help=True)
webhooks.command("redeliver")(ops.redeliver_cmd)
app.add_typer(webhooks, name="webhooks")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
