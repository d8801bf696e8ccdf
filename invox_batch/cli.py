"""The ``invox-batch`` command: run the sandbox, transcribe files (more commands arrive with the flow)."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from invox import InvoxClient, InvoxError, InvoxSettings, PollPolicy, Transcription
from sandbox.settings import SandboxSettings

from .embedded import resolve_api

app = typer.Typer(
    name="invox-batch",
    help="Batch-transcribe clinical audio through the Invox Medical API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
    if flags["latency"] is not None:
        faults["latency_s"] = dict.fromkeys(every, flags["latency"])
    if flags["processing_delay"] is not None:
        faults["processing_delay_s"] = flags["processing_delay"]
    scalar = {
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
    latency: Annotated[float | None, typer.Option(help="Seconds added to every answer.")] = None,
    processing_delay: Annotated[
        tuple[float, float] | None, typer.Option(help="MIN MAX seconds before a job ends.")
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
            latency=latency,
            processing_delay=processing_delay,
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
    """Audio paths from the arguments; a .csv argument contributes its audio_path column."""
    files: list[Path] = []
    for item in inputs:
        if item.suffix.lower() != ".csv":
            files.append(item)
            continue
        with item.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
        if rows and "audio_path" not in rows[0]:
            raise _fail_usage(f"{item}: no audio_path column")
        files.extend(item.parent / row["audio_path"] for row in rows)
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
        list[Path], typer.Argument(help="Audio files, or a manifest .csv with audio_path.")
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


def main() -> None:
    """Console-script entry point."""
    app()
