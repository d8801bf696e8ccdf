"""``run``: the flow over a manifest."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from pydantic import ValidationError

from invox import (
    InvoxError,
    InvoxSettings,
    check_callback_url,
)

from ..callbacks import callback_options
from ..files import PRIVATE_FILES_ENV, private_files
from ..manifest import ManifestError, read_manifest
from ..output import Output
from ..parameters import Callbacks, Captions, Polling, Scale, Spend, StateStorage
from ..stopping import stop_scope
from ._app import (
    EXIT_FAILED_ROWS,
    EXIT_OK,
    EXIT_USAGE,
    app,
    client_settings,
    fail_usage,
    quiet_task_logs,
    say,
)
from ._sandbox import resolve_api, sandbox_settings

__all__ = ["run"]


def _credentials_checked(settings: InvoxSettings) -> InvoxSettings:
    """With INVOX_BASE_URL set, the credential must be complete before anything is written."""
    if not settings.base_url:
        return settings  # the embedded sandbox brings its own
    if not settings.api_key.get_secret_value():
        from flows.credentials import with_secret_block

        settings = asyncio.run(with_secret_block(settings))
    if not (settings.app_id and settings.api_key.get_secret_value()):
        raise fail_usage(
            "INVOX_BASE_URL is set but the credential is incomplete: set INVOX_APP_ID and "
            "INVOX_API_KEY (or save the key as the Prefect Secret block invox-api-key)"
        )
    return settings


def _export_api(settings: InvoxSettings) -> None:
    """The flow reads INVOX_* itself: hand it the API this command resolved (maybe a sandbox)."""
    os.environ["INVOX_BASE_URL"] = settings.base_url or ""
    os.environ["INVOX_APP_ID"] = settings.app_id
    os.environ["INVOX_API_KEY"] = settings.api_key.get_secret_value()
    if settings.cache_namespace:
        os.environ["INVOX_CACHE_NAMESPACE"] = settings.cache_namespace


def _read_summary(out: str, state: Any) -> dict[str, Any] | None:
    """The summary the flow wrote for this flow run, if it got that far."""
    text = Output.parse(out).read_text(Path("runs") / f"{state.state_details.flow_run_id}.json")
    return None if text is None else cast(dict[str, Any], json.loads(text))


# Failed files named on the console (a screenful); the run summary JSON lists every one.
_FAILED_SHOWN = 20


def _print_summary(summary: dict[str, Any], out: str) -> None:
    """A few plain lines: counts, hours, errors and the failed files, calls, where things went."""
    typer.echo(
        f"{summary['completed']} of {summary['rows']} files completed, {summary['failed']} failed, "
        f"{summary['from_cache']} from cache; {_hours(summary)}; {summary['wall_s']} s"
    )
    if summary["error_types"]:
        typer.echo(
            "failures by type: " + ", ".join(f"{k}={v}" for k, v in summary["error_types"].items())
        )
    output = Output.parse(out)
    _print_failed(summary, output)
    typer.echo("API calls: " + ", ".join(f"{k}={v}" for k, v in summary["api_calls"].items()))
    typer.echo(f"files:    {summary['files_path']}")
    typer.echo(f"segments: {summary['segments_path']}")
    report = Path("reports") / f"{summary['flow_run_id']}.html"
    if output.is_remote or (output.local and (output.local / report).is_file()):
        typer.echo(f"report:   {output.location(report)}")


def _hours(summary: dict[str, Any]) -> str:
    """Unique audio hours, and how much of it this run paid for and how much came from cache."""
    line = f"{summary['audio_hours']:.4f} audio hours"
    if "audio_hours_paid" in summary:
        line += (
            f" ({summary['audio_hours_paid']:.4f} paid in this run, "
            f"{summary['audio_hours_from_cache']:.4f} from cache)"
        )
    return line


def _print_failed(summary: dict[str, Any], output: Output) -> None:
    """The failed files by id and error type, a screenful at most, then where the rest are."""
    failed = summary.get("failed_files") or []
    if not failed:
        return
    typer.echo("failed files:")
    for entry in failed[:_FAILED_SHOWN]:
        typer.echo(f"  {_one_line(str(entry['file_id']))}: {entry['error_type']}")
    if len(failed) > _FAILED_SHOWN:
        where = output.location(Path("runs") / f"{summary['flow_run_id']}.json")
        typer.echo(f"  ... and {len(failed) - _FAILED_SHOWN} more; full list in {where}")


def _one_line(text: str) -> str:
    """A file id on one console line whatever it contains."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _exit_status(summary: dict[str, Any]) -> int:
    """0 all completed; 2 when the credential or configuration was refused; else 1."""
    if summary.get("fatal_error_type") in ("unauthorized", "forbidden", "configuration_error"):
        say(f"error: {summary.get('fatal_error_message')}")
        return EXIT_USAGE
    if summary.get("fatal_error_type") == "api_unreachable":
        say(f"error: {summary.get('fatal_error_message')}")
    return EXIT_OK if summary["failed"] == 0 else EXIT_FAILED_ROWS


@app.command()
def run(
    manifest: Annotated[str, typer.Argument(help="Manifest path or URI (.csv, .jsonl, .parquet).")],
    out: Annotated[
        str, typer.Option(help="Output folder or URI of the Parquet dataset; test-written first.")
    ] = "out",
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Files in flight.")] = 8,
    force: Annotated[bool, typer.Option(help="Resubmit everything, even completed files.")] = False,
    poll_timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait per job.")] = 900.0,
    callback_url: Annotated[str | None, typer.Option(help="URL for provider callbacks.")] = None,
    api_version: Annotated[str | None, typer.Option(help="Override INVOX_API_VERSION.")] = None,
    max_resubmits: Annotated[int, typer.Option(min=0, help="Resubmits after job ERROR.")] = 2,
    vtt: Annotated[bool, typer.Option(help="Write <out>/captions/<file_id>.vtt.")] = False,
    result_storage: Annotated[
        str | None, typer.Option(help="Never-pay-twice records [<out>/.state].")
    ] = None,
    completion: Annotated[
        str, typer.Option(help="poll, or callback: fetch results when callbacks arrive.")
    ] = "poll",
    callback_grace: Annotated[
        float, typer.Option(min=0, help="Callback mode: poll after this many seconds more.")
    ] = 60.0,
    callback_store: Annotated[
        str | None, typer.Option(help="Callback records [<state>/callbacks].")
    ] = None,
    callback_listen: Annotated[
        str | None, typer.Option(help="Callback mode: run a receiver on HOST:PORT.")
    ] = None,
    max_audio_hours: Annotated[
        float | None, typer.Option(help="Cap on new audio submitted, in hours.")
    ] = None,
    srt: Annotated[bool, typer.Option(help="Write <out>/captions/<file_id>.srt.")] = False,
    local_ledger: Annotated[
        bool, typer.Option(help="Remote --out: keep the never-pay-twice records on this machine.")
    ] = False,
    shared_files: Annotated[
        bool, typer.Option(help="New files follow the umask instead of owner-only.")
    ] = False,
    ledger_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL ledger every run shares [INVOX_LEDGER_URL; else <state>/ledger.sqlite3].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the transcribe-batch flow over a manifest and write the Parquet dataset.

    Exits 0 when every row completed, 1 when a row failed, 2 on a usage or configuration
    problem (one line, nothing paid). Ctrl-C or SIGTERM stops the run within 10 s: no new
    file starts, uploads in flight are recorded, nothing is written, exit 130 (SIGINT) or
    143 (SIGTERM); rerun the same command to resume, paying nothing twice. A second signal
    exits at once.
    """
    from ..progress import progress_display
    from ._prefect import prefect_api
    from ._signals import Interrupted, SignalStop

    _file_permissions(shared_files)
    # Everything checkable is checked before anything starts or is paid for: flags, settings,
    # the manifest, then test writes of the output and state locations. Each refusal: exit 2.
    if not out.strip():
        raise fail_usage("--out is empty: give a folder or URI for the dataset")
    for flag, number in (("--poll-timeout", poll_timeout), ("--callback-grace", callback_grace)):
        if not math.isfinite(number):
            raise fail_usage(f"{flag} must be a finite number of seconds")
    if max_audio_hours is not None and not (math.isfinite(max_audio_hours) and max_audio_hours > 0):
        raise fail_usage("--max-audio-hours must be a positive number of hours")
    try:
        groups: dict[str, Any] = {
            "spend": Spend(
                max_audio_hours=max_audio_hours, max_resubmits=max_resubmits, force=force
            ),
            "polling": Polling(poll_timeout_s=poll_timeout),
            "captions": Captions(vtt=vtt, srt=srt),
            "scale": Scale(max_concurrency=concurrency),
            "state": StateStorage(result_storage=result_storage, local_ledger=local_ledger),
        }
    except ValidationError as exc:
        raise fail_usage(_flag_problems(exc)) from None
    if api_version:
        try:
            InvoxSettings(api_version=api_version)  # validate only: keep the checked credential
        except ValidationError:
            raise fail_usage("--api-version must be a date such as 2025-11-01") from None
    if callback_url:
        try:
            check_callback_url(callback_url)
        except InvoxError as exc:
            raise fail_usage(f"--callback-url: {exc.message}") from None
    try:
        read_manifest(manifest)
        output = Output.parse(out)
    except ManifestError as exc:
        raise fail_usage(str(exc)) from None
    except InvoxError as exc:
        raise fail_usage(f"--out: {exc.message}") from None
    if output.local and output.local.exists() and not output.local.is_dir():
        raise fail_usage(f"--out {out} is a file; give a folder for the dataset")
    settings = client_settings()
    sandbox = None if settings.base_url else sandbox_settings()
    settings = _credentials_checked(settings)
    try:
        hybrid = callback_options(
            settings, completion, callback_grace, callback_store, callback_listen, callback_url
        )
        groups["callbacks"] = Callbacks(callback_url=callback_url, **hybrid)
        shared = _ledger_checked(ledger_url, output, groups["state"])
        output.check_writable(groups["state"].result_storage, local_ledger, shared)
    except InvoxError as exc:
        raise fail_usage(exc.message) from None
    except ValidationError as exc:
        raise fail_usage(_flag_problems(exc)) from None
    quiet_task_logs()

    def flow() -> Coroutine[Any, Any, Any]:
        from flows.transcribe_batch import transcribe_batch  # imported already: at once

        return cast(
            Coroutine[Any, Any, Any],
            transcribe_batch(
                manifest=manifest, out=out, api_version=api_version, return_state=True, **groups
            ),
        )

    with stop_scope() as stop, SignalStop(stop, say) as signals:
        try:
            with prefect_api() as prefect_ready, resolve_api(settings, say, sandbox) as resolved:
                _export_api(resolved)
                import flows.transcribe_batch  # noqa: F401 (imported while Prefect's server starts)

                prefect_ready()
                with progress_display():
                    state: Any = signals.run_flow(flow)
        except InvoxError as exc:
            raise fail_usage(exc.message) from None
        except (Interrupted, asyncio.CancelledError):  # stopped before the flow, or cut
            signals.say_resume()
            raise typer.Exit(signals.status) from None
        if signals.signum is not None and not (state.is_completed() or state.is_failed()):
            signals.say_resume(state.message if state.is_cancelled() else None)
            raise typer.Exit(signals.status)
    summary = _read_summary(out, state)
    if summary is None:
        say(f"error: the run did not finish: {state.message}")
        raise typer.Exit(EXIT_FAILED_ROWS)
    _print_summary(summary, out)
    if summary.get("budget"):
        from ..budget import budget_line

        typer.echo(budget_line(summary["budget"]))
    raise typer.Exit(_exit_status(summary))


# The flags whose names differ from the parameter they set.
_FLAG_OF = {
    "max_concurrency": "--concurrency",
    "poll_timeout_s": "--poll-timeout",
    "callback_grace_s": "--callback-grace",
}


def _flag_problems(exc: ValidationError) -> str:
    """One line naming each refused flag, e.g. ``--max-resubmits: Input should be ... 10``."""
    return "; ".join(
        f"{_FLAG_OF.get(name, '--' + name.replace('_', '-'))}: {error['msg']}"
        for error in exc.errors()
        for name in [str(error["loc"][-1]) if error["loc"] else "value"]
    )


def _ledger_checked(flag: str | None, output: Output, state: StateStorage) -> bool:
    """Open a named ledger (its schema made, old JSON records imported) before anything is
    paid: a bad URL is one line, its password masked. True when a URL names the ledger."""
    from ..ledger import ENV, Ledger

    source = "--ledger-url" if flag else ENV
    url = (flag or os.environ.get(ENV, "")).strip() or None
    if url is None and os.environ.get("PREFECT_API_URL"):
        from flows.credentials import ledger_url

        found, source = asyncio.run(ledger_url(None))
        url = found.get_secret_value() if found else None
    if url is None:
        return False  # the SQLite default: a file the flow creates in the state folder
    os.environ[ENV] = url  # the flow reads it there: a URL is never a flow parameter
    state_dir = output.state_dir(state.result_storage, state.local_ledger, shared=True)
    days = state.cache_expiration_days
    expiration = dt.timedelta(days=days) if days else None
    asyncio.run(Ledger.open(state_dir, expiration, url, source).check())
    return True


def _file_permissions(shared: bool) -> None:
    """--shared-files wins over INVOX_BATCH_PRIVATE_FILES; a bad value of the latter exits 2."""
    if shared:
        os.environ[PRIVATE_FILES_ENV] = "false"
    try:
        private_files()
    except ValueError as exc:
        raise fail_usage(str(exc)) from None
