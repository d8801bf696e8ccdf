"""The command's frame: the typer app, its exit statuses and how problems are said (one line)."""

from __future__ import annotations

import logging
import os
import re

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from invox import InvoxSettings

__all__ = [
    "EXIT_FAILED_ROWS",
    "EXIT_OK",
    "EXIT_USAGE",
    "app",
    "client_settings",
    "fail_usage",
    "main",
    "problems",
    "quiet_task_logs",
    "say",
]

app = typer.Typer(
    name="invox-batch",
    help="Batch-transcribe clinical audio through the Invox Medical API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [defaults] in brackets, literally
)

EXIT_OK, EXIT_FAILED_ROWS, EXIT_USAGE = 0, 1, 2


def say(message: str) -> None:
    """One line for the operator, on stderr so stdout stays pipeable."""
    typer.echo(message, err=True)


def fail_usage(message: str) -> typer.Exit:
    """Print a usage/configuration problem and pick exit status 2."""
    say(f"error: {message}")
    return typer.Exit(EXIT_USAGE)


def problems(exc: ValidationError | SettingsError, prefix: str) -> str:
    """One line naming each bad setting, e.g. ``INVOX_SANDBOX_FAULTS.rate_503.token: ...``."""
    if isinstance(exc, SettingsError):  # a value that must be JSON and is not
        field = re.search(r'field "([^"]+)"', str(exc))
        name = field.group(1).upper() if field else "?"
        return f"{prefix}{name}: not valid JSON for this setting"
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]).upper().replace(".", "__", 1)
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(message if message.startswith(prefix) else f"{prefix}{where}: {message}")
    return "; ".join(parts)


def client_settings() -> InvoxSettings:
    """Read INVOX_* settings, turning validation errors into one readable line."""
    try:
        return InvoxSettings()
    except (ValidationError, SettingsError) as exc:
        raise fail_usage(problems(exc, "INVOX_")) from None


def quiet_task_logs() -> None:
    """Per-task INFO lines are noise on a terminal; the flow's own summary lines stay. A task run
    Failed by its files' outcome is not repeated either: the summary names every failed file."""
    task_runs = logging.getLogger("prefect.task_runs")
    task_runs.setLevel(logging.WARNING)
    if not any(isinstance(f, _FilesOutcome) for f in task_runs.filters):
        task_runs.addFilter(_FilesOutcome())


class _FilesOutcome(logging.Filter):
    """Drops Prefect's lines about a task run that failed because its files did."""

    def filter(self, record: logging.LogRecord) -> bool:
        return " files failed: " not in record.getMessage()


def main() -> None:
    """Console-script entry point; offline-friendly Prefect defaults unless the user set them."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # the server's analytics
    os.environ.setdefault("DO_NOT_TRACK", "1")  # the SDK's own (Prefect 3.9), which prints a notice
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")
    app()
