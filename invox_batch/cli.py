"""The ``invox-batch`` command: run the sandbox, transcribe files (more commands arrive with the flow)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from pydantic import ValidationError

from invox import (
    InvoxClient,
    InvoxError,
    InvoxSettings,
    PollPolicy,
    Transcription,
    check_callback_url,
)
from sandbox.settings import SandboxSettings

from .callbacks import callback_options, serve_callbacks
from .embedded import resolve_api
from .files import PRIVATE_FILES_ENV, private_files
from .manifest import FORMATS, ManifestError, read_manifest
from .output import Output
from .parameters import Callbacks, Captions, Polling, Scale, Spend, StateStorage

app = typer.Typer(
    name="invox-batch",
    help="Batch-transcribe clinical audio through the Invox Medical API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [defaults] in brackets, literally
)

EXIT_OK, EXIT_FAILED_ROWS, EXIT_USAGE = 0, 1, 2


def _say(message: str) -> None:
    """One line for the operator, on stderr so stdout stays pipeable."""
    typer.echo(message, err=True)


def _fail_usage(message: str) -> typer.Exit:
    """Print a usage/configuration problem and pick exit status 2."""
    _say(f"error: {message}")
    return typer.Exit(EXIT_USAGE)


def _problems(exc: ValidationError, prefix: str) -> str:
    """One line naming each bad setting, e.g. ``INVOX_SANDBOX_FAULTS.rate_503.token: ...``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]).upper().replace(".", "__", 1)
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(message if message.startswith(prefix) else f"{prefix}{where}: {message}")
    return "; ".join(parts)


def _client_settings() -> InvoxSettings:
    """Read INVOX_* settings, turning validation errors into one readable line."""
    try:
        return InvoxSettings()
    except ValidationError as exc:
        raise _fail_usage(_problems(exc, "INVOX_")) from None


def _fault_overrides(**flags: Any) -> dict[str, Any]:
    """The fault flags the user actually gave, shaped like ``Faults`` fields."""
    every = ("token", "presign", "upload", "status")
    faults: dict[str, Any] = {}
    if flags["rate_429"] is not None:
        faults["rate_429"] = dict.fromkeys(every, flags["rate_429"])
    if flags["rate_503"] is not None:
        faults["rate_503"] = dict.fromkeys(every, flags["rate_503"])
    if flags["rate_500"] is not None:
        faults["rate_500"] = dict.fromkeys(every, flags["rate_500"])
    if flags["latency"] is not None:
        faults["latency_s"] = dict.fromkeys(every, flags["latency"])
    if flags["processing_delay"] is not None:
        faults["processing_delay_s"] = flags["processing_delay"]
    scalar = {
        "processing_rtf": "processing_rtf",
        "max_inflight": "max_inflight",
        "token_ttl": "token_ttl_s",
        "url_ttl": "url_ttl_s",
        "job_error_rate": "job_error_rate",
        "drop_callback_rate": "drop_callback_rate",
        "seed": "seed",
    }
    faults.update({field: flags[flag] for flag, field in scalar.items() if flags[flag] is not None})
    return faults


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    app_id: Annotated[str | None, typer.Option(help="Accepted app id [sandbox-app].")] = None,
    api_key: Annotated[str | None, typer.Option(help="Accepted api key [sandbox-key].")] = None,
    processing: Annotated[
        str | None, typer.Option(help="asr (real recognition) or instant (hash-derived text).")
    ] = None,
    asr_model: Annotated[str | None, typer.Option(help="clinical or general.")] = None,
    rate_429: Annotated[float | None, typer.Option(help="P(429) on every endpoint.")] = None,
    rate_503: Annotated[float | None, typer.Option(help="P(503) on every endpoint.")] = None,
    rate_500: Annotated[float | None, typer.Option(help="P(500) on every endpoint.")] = None,
    latency: Annotated[float | None, typer.Option(help="Seconds added to every answer.")] = None,
    processing_delay: Annotated[
        tuple[float, float] | None, typer.Option(help="MIN MAX seconds before a job ends.")
    ] = None,
    processing_rtf: Annotated[
        tuple[float, float] | None,
        typer.Option(help="MIN MAX factor: a job takes its audio's duration times this."),
    ] = None,
    max_inflight: Annotated[
        int | None, typer.Option(help="API requests served at once; more get 429.")
    ] = None,
    token_ttl: Annotated[float | None, typer.Option(help="Token lifetime, seconds.")] = None,
    url_ttl: Annotated[float | None, typer.Option(help="Upload URL lifetime, seconds.")] = None,
    job_error_rate: Annotated[float | None, typer.Option(help="P(job ends ERROR).")] = None,
    drop_callback_rate: Annotated[float | None, typer.Option(help="P(callback lost).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible faults.")] = None,
) -> None:
    """Serve the local Invox API double (INVOX_SANDBOX_* variables set the defaults)."""
    from sandbox.server import serve

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "app_id": app_id,
            "api_key": api_key,
            "processing": processing,
            "asr_model": asr_model,
        }.items()
        if v is not None
    }
    try:
        base = SandboxSettings()
        fault_flags = _fault_overrides(
            rate_429=rate_429,
            rate_503=rate_503,
            rate_500=rate_500,
            latency=latency,
            processing_delay=processing_delay,
            processing_rtf=processing_rtf,
            max_inflight=max_inflight,
            token_ttl=token_ttl,
            url_ttl=url_ttl,
            job_error_rate=job_error_rate,
            drop_callback_rate=drop_callback_rate,
            seed=seed,
        )
        faults = base.faults.model_copy(update=fault_flags)
        settings = SandboxSettings.model_validate(
            {**base.model_dump(), **overrides, "faults": faults.model_dump()}
        )
    except ValidationError as exc:
        raise _fail_usage(_problems(exc, "INVOX_SANDBOX_")) from None
    serve(settings, host=host, port=port)


def _expand(inputs: list[Path]) -> list[Path]:
    """Audio paths from the arguments; a manifest argument contributes its audio files."""
    files: list[Path] = []
    for item in inputs:
        if item.suffix.lower() not in FORMATS:
            files.append(item)
            continue
        try:
            files.extend(Path(row.location) for row in read_manifest(str(item)).rows)
        except ManifestError as exc:
            raise _fail_usage(str(exc)) from None
    return files


async def _transcribe_all(
    settings: InvoxSettings, files: list[Path], concurrency: int, timeout_s: float
) -> list[tuple[Path, Transcription | InvoxError]]:
    """Run the whole presign → upload → poll sequence for each file, a few at a time."""
    gate = asyncio.Semaphore(concurrency)
    policy = PollPolicy(timeout_s=timeout_s, first_delay_s=0.5, max_delay_s=5.0)
    async with InvoxClient(settings) as client:
        await client.authenticate()

        async def one(path: Path) -> tuple[Path, Transcription | InvoxError]:
            async with gate:
                try:
                    return path, await client.transcribe_file(path, policy=policy)
                except InvoxError as exc:
                    return path, exc

        return await asyncio.gather(*(one(p) for p in files))


def _report(path: Path, outcome: Transcription | InvoxError) -> bool:
    """Print one file's outcome; True when it completed."""
    if isinstance(outcome, InvoxError):
        typer.echo(f"{path.name}: failed [{outcome.error_type}] {outcome.message}")
        return False
    if outcome.status == "ERROR":
        typer.echo(f"{path.name}: failed [provider_error] {outcome.error_message or ''}")
        return False
    typer.echo(f"{path.name} ({outcome.request_id}): {outcome.text}")
    return True


@app.command()
def transcribe(
    inputs: Annotated[
        list[Path], typer.Argument(help="Audio files, or manifests (.csv, .jsonl, .parquet).")
    ],
    concurrency: Annotated[int, typer.Option(min=1, help="Files in flight at once.")] = 4,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait per result.")] = 300.0,
) -> None:
    """Transcribe files through the client and print each transcript (a quick end-to-end check)."""
    files = _expand(inputs)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise _fail_usage(f"not a readable file: {', '.join(missing)}")
    settings = _client_settings()
    try:
        with resolve_api(settings, _say) as resolved:
            outcomes = asyncio.run(_transcribe_all(resolved, files, concurrency, timeout))
    except InvoxError as exc:
        raise _fail_usage(exc.message) from None
    completed = [_report(path, outcome) for path, outcome in outcomes]
    _say(f"{sum(completed)} of {len(completed)} files transcribed")
    raise typer.Exit(EXIT_OK if all(completed) else EXIT_FAILED_ROWS)


def _credentials_checked(settings: InvoxSettings) -> InvoxSettings:
    """With INVOX_BASE_URL set, the credential must be complete before anything is written."""
    if not settings.base_url:
        return settings  # the embedded sandbox brings its own
    if not settings.api_key.get_secret_value():
        from flows.credentials import with_secret_block

        settings = asyncio.run(with_secret_block(settings))
    if not (settings.app_id and settings.api_key.get_secret_value()):
        raise _fail_usage(
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


def _print_summary(summary: dict[str, Any], out: str) -> None:
    """A few plain lines: counts, errors, calls, where the Parquet and the HTML report went."""
    typer.echo(
        f"{summary['completed']} of {summary['rows']} files completed, {summary['failed']} failed, "
        f"{summary['from_cache']} from cache; {summary['audio_hours']} audio hours; "
        f"{summary['wall_s']} s"
    )
    if summary["error_types"]:
        typer.echo(
            "failures by type: " + ", ".join(f"{k}={v}" for k, v in summary["error_types"].items())
        )
    typer.echo("API calls: " + ", ".join(f"{k}={v}" for k, v in summary["api_calls"].items()))
    typer.echo(f"files:    {summary['files_path']}")
    typer.echo(f"segments: {summary['segments_path']}")
    output = Output.parse(out)
    report = Path("reports") / f"{summary['flow_run_id']}.html"
    if output.is_remote or (output.local and (output.local / report).is_file()):
        typer.echo(f"report:   {output.location(report)}")


def _exit_status(summary: dict[str, Any]) -> int:
    """0 all completed; 2 when the credential or configuration was refused; else 1."""
    if summary.get("fatal_error_type") in ("unauthorized", "forbidden", "configuration_error"):
        _say(f"error: {summary.get('fatal_error_message')}")
        return EXIT_USAGE
    if summary.get("fatal_error_type") == "api_unreachable":
        _say(f"error: {summary.get('fatal_error_message')}")
    return EXIT_OK if summary["failed"] == 0 else EXIT_FAILED_ROWS


@app.command()
def run(
    manifest: Annotated[str, typer.Argument(help="Manifest path or URI (.csv, .jsonl, .parquet).")],
    out: Annotated[str, typer.Option(help="Output folder or URI of the Parquet dataset.")] = "out",
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
    shared_files: Annotated[
        bool, typer.Option(help="New files follow the umask instead of owner-only.")
    ] = False,
) -> None:
    """Run the transcribe-batch flow over a manifest and write the Parquet dataset."""
    from flows.transcribe_batch import transcribe_batch

    from .progress import progress_display

    _file_permissions(shared_files)
    if max_audio_hours is not None and not (math.isfinite(max_audio_hours) and max_audio_hours > 0):
        raise _fail_usage("--max-audio-hours must be a positive number of hours")
    try:
        read_manifest(manifest)
        output = Output.parse(out)
    except ManifestError as exc:
        raise _fail_usage(str(exc)) from None
    except InvoxError as exc:
        raise _fail_usage(f"--out: {exc.message}") from None
    if output.local and output.local.exists() and not output.local.is_dir():
        raise _fail_usage(f"--out {out} is a file; give a folder for the dataset")
    settings = _credentials_checked(_client_settings())
    if api_version:
        try:
            InvoxSettings(api_version=api_version)  # validate only: keep the checked credential
        except ValidationError:
            raise _fail_usage("--api-version must be a date such as 2025-11-01") from None
    if callback_url:
        try:
            check_callback_url(callback_url)
        except InvoxError as exc:
            raise _fail_usage(f"--callback-url: {exc.message}") from None
    try:
        hybrid = callback_options(
            settings, completion, callback_grace, callback_store, callback_listen, callback_url
        )
    except InvoxError as exc:
        raise _fail_usage(exc.message) from None
    try:
        groups = {
            "spend": Spend(
                max_audio_hours=max_audio_hours, max_resubmits=max_resubmits, force=force
            ),
            "polling": Polling(poll_timeout_s=poll_timeout),
            "callbacks": Callbacks(callback_url=callback_url, **hybrid),
            "captions": Captions(vtt=vtt, srt=srt),
            "scale": Scale(max_concurrency=concurrency),
            "state": StateStorage(result_storage=result_storage),
        }
    except ValidationError as exc:
        raise _fail_usage(_problems(exc, "--")) from None
    quiet_task_logs()
    try:
        with resolve_api(settings, _say) as resolved, progress_display():
            _export_api(resolved)
            state: Any = asyncio.run(
                cast(
                    Coroutine[Any, Any, Any],
                    transcribe_batch(
                        manifest=manifest,
                        out=out,
                        api_version=api_version,
                        return_state=True,
                        **groups,
                    ),
                )
            )
    except InvoxError as exc:
        raise _fail_usage(exc.message) from None
    summary = _read_summary(out, state)
    if summary is None:
        _say(f"error: the run did not finish: {state.message}")
        raise typer.Exit(EXIT_FAILED_ROWS)
    _print_summary(summary, out)
    if summary.get("budget"):
        from .budget import budget_line

        typer.echo(budget_line(summary["budget"]))
    raise typer.Exit(_exit_status(summary))


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
        serve_callbacks(_client_settings(), port, host, out, store, scheme, _say)
    except InvoxError as exc:
        raise _fail_usage(exc.message) from None
    raise typer.Exit(EXIT_OK)


@app.command()
def validate(
    manifest: Annotated[str, typer.Argument(help="Manifest path or URI (.csv, .jsonl, .parquet).")],
    rate_per_hour: Annotated[
        float | None, typer.Option(min=0.0, help="Price per audio hour, to estimate the cost.")
    ] = None,
) -> None:
    """Check every row locally, without calling the API: files, types, sizes, durations."""
    from .validate import render_report, validate_manifest

    settings = _client_settings()
    with tempfile.TemporaryDirectory(prefix="invox-validate-") as spool:
        try:
            report = validate_manifest(manifest, settings.mime_types, Path(spool))
        except ManifestError as exc:
            raise _fail_usage(str(exc)) from None
        render_report(report, sys.stdout)
    if rate_per_hour is not None:
        from .budget import cost_line

        typer.echo(cost_line(report.total_duration_s, rate_per_hour, report.unknown_duration))
    raise typer.Exit(EXIT_FAILED_ROWS if report.bad else EXIT_OK)


@app.command()
def report(
    out: Annotated[str, typer.Argument(help="Output folder of `invox-batch run`.")],
    run: Annotated[str | None, typer.Option("--run", help="Only this flow run id.")] = None,
    html: Annotated[
        Path | None, typer.Option(help="Also write a self-contained HTML report.")
    ] = None,
) -> None:
    """Summarise the Parquet dataset with DuckDB: statuses, errors, hours, timings, quality."""
    from .errors import ReportError
    from .report import print_report

    try:
        print_report(out, run, html)
    except ReportError as exc:
        raise _fail_usage(str(exc)) from None


def _file_permissions(shared: bool) -> None:
    """--shared-files wins over INVOX_BATCH_PRIVATE_FILES; a bad value of the latter exits 2."""
    if shared:
        os.environ[PRIVATE_FILES_ENV] = "false"
    try:
        private_files()
    except ValueError as exc:
        raise _fail_usage(str(exc)) from None


def quiet_task_logs() -> None:
    """Per-task INFO lines are noise on a terminal; the flow's own summary lines stay."""
    logging.getLogger("prefect.task_runs").setLevel(logging.WARNING)


def main() -> None:
    """Console-script entry point; offline-friendly Prefect defaults unless the user set them."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")
    app()
