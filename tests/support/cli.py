"""The `teaming` command line run in-process through typer's CliRunner, as a user runs it."""

from __future__ import annotations

from typer.testing import CliRunner

from teaming.cli import app


class Run:
    """What one command printed and how it exited."""

    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = exit_code, stdout, stderr


def cli(*args: str) -> Run:
    """Run `teaming ARGS...`; an exception other than the command's own exit is raised, not hidden."""
    r = CliRunner().invoke(app, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return Run(r.exit_code, r.stdout, r.stderr)
