"""What every command shares: the console, how errors exit, defaults read from the library, the command line
a run records."""

from __future__ import annotations

import inspect
import shlex
from typing import Callable

import typer
from rich.console import Console

console = Console()
HELD_OUT_HELP = "positions to score (default: every item the model was not trained, calibrated or guarded on)"


def default(func: Callable, name: str):
    """The default of parameter `name` of `func` (an estimator's __init__ or a config function)."""
    return inspect.signature(func).parameters[name].default


def fmt(value: float | int | None) -> str:
    return "" if value is None else str(value) if isinstance(value, int) else f"{value:.4f}"


def fail(err: Exception) -> None:
    """Exit 2 with one line: `error: <what to change>`."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def command_line(ctx: typer.Context) -> str:
    """The running command as a user would type it: its name and every option not left at its default."""
    parts = ["teaming", ctx.info_name or ""]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name == "DEFAULT":
            continue
        value = ctx.params.get(param.name)
        if param.param_type_name == "argument":
            parts.append(str(value))
        elif getattr(param, "is_flag", False):
            parts.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            parts += [param.opts[0], str(value)]
    return shlex.join(parts)
