"""The commands on a written dataset: ``forget`` (erasure) and ``migrate`` (the upgrade path)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from invox import InvoxError

from ..errors import InvoxBatchError
from ._app import EXIT_OK, app, fail_usage

__all__ = ["forget", "migrate"]


@app.command()
def forget(
    out: Annotated[str, typer.Argument(help="Output folder or URI (s3://...) of `run`.")],
    file_id: Annotated[
        list[str] | None, typer.Option("--file-id", help="A file_id to forget (repeatable).")
    ] = None,
    where: Annotated[
        str | None,
        typer.Option(help="SQL condition on manifest metadata, e.g. \"patient_ref = 'P-123'\"."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Only count what would go.")] = False,
    result_storage: Annotated[
        str | None, typer.Option(help="The run's state folder [<out>/.state].")
    ] = None,
    callback_store: Annotated[
        str | None, typer.Option(help="The run's callback records [<state>/callbacks].")
    ] = None,
    ledger_url: Annotated[
        str | None,
        typer.Option(help="The runs' PostgreSQL ledger [INVOX_LEDGER_URL, else <state>]."),
    ] = None,
) -> None:
    """Erase files' transcripts everywhere under OUT and its state; reruns skip them unless --force."""
    from ..forgetting import forget as erase

    try:
        forgot = erase(
            out,
            file_id or [],
            where,
            state_dir=Path(result_storage) if result_storage else None,
            callback_store=Path(callback_store) if callback_store else None,
            ledger_url=ledger_url or os.environ.get("INVOX_LEDGER_URL") or None,
            dry_run=dry_run,
        )
    except (InvoxBatchError, InvoxError) as exc:
        raise fail_usage(str(exc)) from None
    typer.echo(forgot.line())
    raise typer.Exit(EXIT_OK)


@app.command()
def migrate(
    out: Annotated[str, typer.Argument(help="Output folder or URI written by an older version.")],
) -> None:
    """Import a dataset written before the current tables; log parts lose their text."""
    from ..migration import migrate as upgrade

    try:
        migrated = upgrade(out, _base_url())
    except (InvoxBatchError, InvoxError) as exc:
        raise fail_usage(str(exc)) from None
    typer.echo(migrated.line())
    raise typer.Exit(EXIT_OK)


def _base_url() -> str | None:
    """What the runs' ledger keys audio by, with each row's sha256 and api_version:
    INVOX_CACHE_NAMESPACE, else INVOX_BASE_URL."""
    return os.environ.get("INVOX_CACHE_NAMESPACE") or os.environ.get("INVOX_BASE_URL") or None
