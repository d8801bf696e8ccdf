"""The commands around a run: ``callbacks`` (the receiver), ``validate`` and ``report``."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from invox import InvoxError

from ..callbacks import serve_callbacks
from ..manifest import ManifestError
from ._app import EXIT_FAILED_ROWS, EXIT_OK, app, client_settings, fail_usage, say

__all__ = ["callbacks", "report", "validate"]


@app.command()
def callbacks(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8766,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    out: Annotated[str, typer.Option(help="The batch output, for the default store.")] = "out",
    store: Annotated[
        str | None, typer.Option(help="Record folder [<out>/.state/callbacks].")
    ] = None,
    scheme: Annotated[
        str | None,
        typer.Option(help="hmac-sha256 or none [from INVOX_VERIFY_CALLBACK_SIGNATURES]."),
    ] = None,
) -> None:
    """Receive provider callbacks: verify, refuse stale and replayed ones, record each once."""
    try:
        serve_callbacks(client_settings(), port, host, out, store, scheme, say)
    except InvoxError as exc:
        raise fail_usage(exc.message) from None
    raise typer.Exit(EXIT_OK)


@app.command()
def validate(
    manifest: Annotated[str, typer.Argument(help="Manifest path or URI (.csv, .jsonl, .parquet).")],
    rate_per_hour: Annotated[
        float | None, typer.Option(min=0.0, help="Price per audio hour, to estimate the cost.")
    ] = None,
) -> None:
    """Check every row locally, without calling the API: files, types, sizes, durations."""
    from ..validate import render_report, validate_manifest

    settings = client_settings()
    with tempfile.TemporaryDirectory(prefix="invox-validate-") as spool:
        try:
            report = validate_manifest(
                manifest,
                settings.mime_types,
                Path(spool),
                max_upload_bytes=settings.max_upload_bytes,
            )
        except ManifestError as exc:
            raise fail_usage(str(exc)) from None
        render_report(report, sys.stdout)
    if rate_per_hour is not None:
        from ..budget import cost_line

        typer.echo(
            cost_line(
                report.total_duration_s, rate_per_hour, report.unknown_duration, report.duplicates
            )
        )
    raise typer.Exit(EXIT_FAILED_ROWS if report.bad else EXIT_OK)


@app.command()
def report(
    out: Annotated[
        str, typer.Argument(help="Output folder or URI (s3://...) of `invox-batch run`.")
    ],
    run: Annotated[str | None, typer.Option("--run", help="Only this flow run id.")] = None,
    html: Annotated[
        Path | None, typer.Option(help="Also write a self-contained HTML report.")
    ] = None,
) -> None:
    """Summarise the Parquet dataset with DuckDB: statuses, errors, hours, timings, quality."""
    from ..errors import ReportError
    from ..report import print_report

    try:
        print_report(out, run, html)
    except ReportError as exc:
        raise fail_usage(str(exc)) from None
