"""The ``transcribe-batch`` flow: manifest → presign/upload/poll per unique audio → Parquet dataset."""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import datetime as dt
import gc
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import State, flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from pydantic import Field

from invox import (
    ConfigurationError,
    InvoxError,
    InvoxSettings,
    check_callback_url,
)
from invox_batch.audio import AudioCheck, inspect_audio
from invox_batch.budget import BudgetPlan
from invox_batch.caption_files import write_file_captions
from invox_batch.check_cache import CheckCache
from invox_batch.dataset import write_run
from invox_batch.manifest import Manifest, ManifestRow, read_manifest
from invox_batch.output import Output
from invox_batch.quality import assign_quality, count_flags
from invox_batch.report import build_run_report, report_section, summarise, write_summary
from tasks.ledger import Ledger, audio_identity

from .callback_mode import (
    CompletionMode,
    check_completion,
    completion_for,
)
from .credentials import with_secret_block
from .dask_runner import dask_task_runner, settle_on_dask
from .outcomes import Outcome, RunContext, file_row, segment_rows
from .reporting import publish_outcomes
from .settling import FATAL_ERROR_TYPES, Options, Unit, settle_all
from .sharding import fan_out, parse_shard, should_fan_out, take_shard, worker_host

__all__ = ["FATAL_ERROR_TYPES", "transcribe_batch"]


@dataclass(frozen=True)
class Execution:
    """How the run settles its files: completion mode, receiver, task runner, concurrency."""

    completion: CompletionMode
    callback_grace_s: float
    callback_store: Path
    callback_listen: str | None
    task_runner: Literal["default", "dask"]
    dask_address: str | None
    max_concurrency: int


@dataclass(frozen=True)
class Settled:
    """What settling the units gave: outcomes, calls made, a fatal stop, the budget."""

    outcomes: dict[str, Outcome]
    calls: dict[str, int]
    stop: InvoxError | None
    plan: BudgetPlan

    def summary(self) -> dict[str, Any]:
        """The run summary's part about the API: calls, the fatal stop, the budget."""
        return {
            "api_calls": self.calls,
            "fatal_error_type": self.stop.error_type if self.stop else None,
            "fatal_error_message": self.stop.message if self.stop else None,
            "budget": self.plan.summary() or None,
        }


def _local_failure(check: AudioCheck) -> Outcome:
    """A row that never reached the API because a local check failed."""
    return Outcome(status="failed", error_type=check.error_type, error_message=check.error_message)


async def _inspect_all(
    manifest: Manifest, settings: InvoxSettings, state_dir: Path
) -> list[AudioCheck]:
    """Every local check (hashing included) off the event loop, a few files at a time; files
    unchanged since an earlier run are taken from the check cache without being read."""
    cache = CheckCache.load(state_dir / "audio-checks.json")
    mime_types, spool = settings.mime_types, state_dir / "spool"
    keys = await asyncio.to_thread(lambda: [cache.key(r, mime_types) for r in manifest.rows])
    limiter = asyncio.Semaphore(4)

    async def one(row: ManifestRow, key: str | None) -> AudioCheck:
        if (known := cache.get(key, row)) is not None:
            return known
        async with limiter:
            check = await asyncio.to_thread(inspect_audio, row, mime_types, spool)
        cache.put(key, check)
        return check

    checks = await asyncio.gather(*(one(r, k) for r, k in zip(manifest.rows, keys, strict=True)))
    await asyncio.to_thread(cache.save)
    return checks


def _identity(check: AudioCheck, settings: InvoxSettings, api_version: str) -> str | None:
    """The row's audio identity, or None when a local check failed (nothing to pay for)."""
    if not (check.ok and check.sha256 and check.local_path and check.mime_type):
        return None
    return audio_identity(check.sha256, settings.environment, api_version)


def _units(
    manifest: Manifest, checks: list[AudioCheck], identities: list[str | None]
) -> dict[str, Unit]:
    """Unique identities among the rows that passed local checks (first row names the unit)."""
    units: dict[str, Unit] = {}
    for row, check, identity in zip(manifest.rows, checks, identities, strict=True):
        if identity is not None and identity not in units:
            assert check.local_path and check.mime_type  # _identity only names uploadable rows
            path, mime = str(check.local_path), check.mime_type
            units[identity] = Unit(identity, row.file_id, path, mime, check.duration_s)
    return units


def _run_date() -> dt.date:
    """The partition date: the run's scheduled start in UTC, stable across UI retries."""
    scheduled = flow_run.scheduled_start_time
    return scheduled.astimezone(dt.UTC).date() if scheduled else dt.datetime.now(dt.UTC).date()


def _write_captions(
    out: Path, rows: list[tuple[ManifestRow, Outcome]], vtt: bool, srt: bool
) -> tuple[list[Path], int]:
    """``<out>/captions/<file_id>.vtt|.srt`` for completed files, and how many had unusable times."""
    written: list[Path] = []
    unusable = 0
    for row, outcome in rows:
        if outcome.status != "completed":
            continue
        try:
            written += write_file_captions(
                out, row.file_id, outcome.vtt, outcome.segments, vtt=vtt, srt=srt
            )
        except ValueError as exc:  # the provider's timings: the transcript itself is still kept
            unusable += 1
            get_run_logger().warning("no captions for %s: %s", row.file_id, exc)
    return written, unusable


@flow(name="transcribe-batch", persist_result=False, validate_parameters=True)
async def transcribe_batch(
    manifest: str,
    out: str = "out",
    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 8,
    poll_timeout_s: Annotated[float, Field(gt=0)] = 900.0,
    force: bool = False,
    callback_url: str | None = None,
    api_version: str | None = None,
    max_resubmits: Annotated[int, Field(ge=0, le=10)] = 2,
    vtt: bool = False,
    result_storage: str | None = None,
    cache_expiration_days: Annotated[float, Field(gt=0)] | None = None,
    first_poll_ratio: Annotated[float, Field(gt=0)] = 0.5,
    max_poll_interval_s: Annotated[float, Field(gt=0)] = 30.0,
    retries: Annotated[int, Field(ge=0, le=20)] = 6,
    retry_base_delay_s: Annotated[float, Field(ge=0)] = 1.0,
    completion: CompletionMode = "poll",
    callback_grace_s: Annotated[float, Field(ge=0)] = 60.0,
    callback_store: str | None = None,
    callback_listen: str | None = None,
    max_audio_hours: Annotated[float, Field(gt=0)] | None = None,
    srt: bool = False,
    shard_size: Annotated[int, Field(ge=1)] = 1000,
    shard: Annotated[str, Field(pattern=r"^(\d+/\d+)?$")] = "",
    shard_deployment: str = "transcribe-batch/shard",
    task_runner: Literal["default", "dask"] = "default",
    dask_address: str | None = None,
    files_per_task: Annotated[int, Field(ge=0, le=1000)] = 0,
) -> dict[str, Any] | State[Any]:
    """Transcribe every audio file of a manifest, paying once per audio content, into Parquet.

    Args:
        manifest: Manifest path or URI (.csv, .jsonl or .parquet) with an audio_path column.
        out: Output folder or URI (file://, or s3:// etc. with its fsspec backend installed).
        max_concurrency: Files in flight at once.
        poll_timeout_s: Stop polling a job after this many seconds; a rerun resumes it.
        force: Resubmit every file, even ones already completed.
        callback_url: HTTPS URL the provider POSTs results to (polling still decides).
        api_version: X-Invox-Medical-Api-Version to send; empty means INVOX_API_VERSION.
        max_resubmits: Resubmissions per audio content after provider errors, across runs.
        vtt: Also write <out>/captions/<file_id>.vtt for completed files.
        result_storage: Folder for the never-pay-twice records; empty means <out>/.state.
        cache_expiration_days: Forget completed results after this many days.
        first_poll_ratio: First poll after audio duration times this (the provider's speed).
        max_poll_interval_s: Longest wait between two polls of one job.
        retries: Retries of one call after transient errors (429, 5xx, network).
        retry_base_delay_s: First retry delay in seconds; doubles each time, capped at 30.
        completion: "poll", or "callback": fetch each result once its callback is recorded.
        callback_grace_s: In callback mode, poll a job with no callback this long after it
            should have ended.
        callback_store: Folder the callback receiver records to; empty means <state>/callbacks.
        callback_listen: host:port for a receiver run inside this flow (callback mode).
        max_audio_hours: Submit no more new audio than this; the rest fail as budget_exceeded.
        srt: Also write <out>/captions/<file_id>.srt for completed files.
        shard_size: From a deployment, a manifest with more rows runs as child runs of this size.
        shard: The slice of the manifest this child run handles ("3/8"); set by the parent.
        shard_deployment: The deployment ("flow/name") the parent starts its shard runs on.
        task_runner: "dask" settles each file as a task on a Dask cluster (prefect-dask).
        dask_address: Dask scheduler address; empty means a LocalCluster in the flow's process.
        files_per_task: Files settled per Prefect task run; 0 means one each up to 100 files,
            else 50 (and at most an hour of audio) per task run.
    """
    started = time.monotonic()
    _freeze_long_lived_objects()
    output = Output.parse(out)
    settings = await _run_settings(api_version, callback_url, completion, callback_listen)
    parse_shard(shard)  # a bad slice is refused before any audio is read
    state_dir = Path(result_storage) if result_storage else output.default_state_dir()
    parsed = read_manifest(manifest)
    if should_fan_out(len(parsed.rows), shard_size, shard):
        return await fan_out(parsed, output, shard_size, shard_deployment)
    parsed = take_shard(parsed, shard)
    checks = await _inspect_all(parsed, settings, state_dir)
    identities = [_identity(check, settings, settings.api_version) for check in checks]
    units = _units(parsed, checks, identities)
    get_run_logger().info("%d rows, %d unique audio files to settle", len(parsed.rows), len(units))

    expiration = dt.timedelta(days=cache_expiration_days) if cache_expiration_days else None
    ledger = await Ledger.open(state_dir / "results", expiration)
    options = Options(
        force=force,
        max_resubmits=max_resubmits,
        callback_url=callback_url,
        poll_timeout_s=poll_timeout_s,
        first_poll_ratio=first_poll_ratio,
        max_poll_interval_s=max_poll_interval_s,
        retries=retries,
        retry_base_delay_s=retry_base_delay_s,
        max_audio_hours=max_audio_hours,
        files_per_task=files_per_task,
    )
    execution = Execution(
        completion=completion,
        callback_grace_s=callback_grace_s,
        callback_store=Path(callback_store) if callback_store else state_dir / "callbacks",
        callback_listen=callback_listen,
        task_runner=task_runner,
        dask_address=dask_address,
        max_concurrency=max_concurrency,
    )
    try:
        settled = await _settle_units(settings, ledger, options, units, execution)
    finally:
        shutil.rmtree(state_dir / "spool", ignore_errors=True)  # copies of remote medical audio

    context = RunContext(flow_run_id=str(flow_run.id or "local"), api_version=settings.api_version)
    per_row = [
        (row, check, settled.outcomes[identity] if identity else _local_failure(check))
        for row, check, identity in zip(parsed.rows, checks, identities, strict=True)
    ]
    file_rows = [file_row(r, c, o, context) for r, c, o in per_row]
    file_rows = assign_quality(file_rows, [o.segments for _, _, o in per_row])
    segments = [s for r, c, o in per_row for s in segment_rows(r, c, o, context)]
    staging = output.local or state_dir / "staging" / context.flow_run_id
    written = write_run(
        staging, context.flow_run_id, _run_date(), file_rows, segments, parsed.metadata_schema
    )
    captions, captions_failed = _write_captions(staging, [(r, o) for r, _, o in per_row], vtt, srt)
    summary = {
        **summarise(file_rows),
        "flow_run_id": context.flow_run_id,
        "manifest": manifest,
        "shard": shard,
        "host": worker_host(),
        "api_version": settings.api_version,
        "unique_audio": len(units),
        **settled.summary(),
        "wall_s": round(time.monotonic() - started, 3),
        "files_path": output.location(written.files_path.relative_to(staging)),
        "segments_path": output.location(written.segments_path.relative_to(staging)),
        "quality": count_flags(file_rows),
        "captions_failed": captions_failed,
    }
    parts = [written.files_path, written.segments_path, *captions]
    return await _conclude(output, staging, summary, file_rows, parts)


def _freeze_long_lived_objects() -> None:
    """Keep full collections off the imports' million objects, which live as long as the
    process; unfrozen at exit so extension modules see their objects freed."""
    if not gc.get_freeze_count():
        atexit.register(gc.unfreeze)
    gc.freeze()


async def _run_settings(
    api_version: str | None,
    callback_url: str | None,
    completion: CompletionMode,
    callback_listen: str | None,
) -> InvoxSettings:
    """The run's API settings, refused up front (before any audio is read) when unusable."""
    settings = InvoxSettings(api_version=api_version) if api_version else InvoxSettings()
    if not settings.base_url:
        raise ConfigurationError(
            "INVOX_BASE_URL is not set for this flow run: set it and INVOX_APP_ID in the "
            "worker's environment (the key as INVOX_API_KEY or the Secret block invox-api-key), "
            "or use `invox-batch run`"
        )
    if callback_url:
        check_callback_url(callback_url)
    check_completion(completion, callback_url, callback_listen)
    return await with_secret_block(settings)


async def _settle_units(
    settings: InvoxSettings,
    ledger: Ledger,
    options: Options,
    units: dict[str, Unit],
    execution: Execution,
) -> Settled:
    """Settle every unit in the run's completion mode, on the flow's loop or on Dask."""
    with completion_for(
        execution.completion,
        grace_s=execution.callback_grace_s,
        store_dir=execution.callback_store,
        listen=execution.callback_listen,
        callback_url=options.callback_url,
        settings=settings,
    ) as (waiter, url):
        options = dataclasses.replace(options, callback_url=url, completion=waiter)
        if execution.task_runner == "dask":
            runner = dask_task_runner(execution.dask_address, execution.max_concurrency)
            return Settled(
                *await settle_on_dask(settings, ledger, options, units, runner, str(flow_run.id))
            )
        return Settled(
            *await settle_all(settings, ledger, options, units, execution.max_concurrency)
        )


async def _conclude(
    output: Output,
    staging: Path,
    summary: dict[str, Any],
    file_rows: list[dict[str, Any]],
    parts: list[Path],
) -> State[Any]:
    """Write the summary and the HTML report, publish a remote output, say how the run ended."""
    flow_run_id = summary["flow_run_id"]
    summary_path = write_summary(staging, flow_run_id, summary)
    report = await build_run_report(staging, flow_run_id, get_run_logger())
    report_parts = [report.html] if report else []
    if output.is_remote:
        every = [*parts, summary_path, *report_parts]
        output.publish(staging, [p.relative_to(staging) for p in every], flow_run_id)
        shutil.rmtree(staging, ignore_errors=True)
    report_at = output.location(report.html.relative_to(staging)) if report else None
    await publish_outcomes(summary, file_rows, extra=report_section(report, report_at))
    get_run_logger().info(
        "%d completed, %d failed (%d from cache); API calls %s",
        summary["completed"],
        summary["failed"],
        summary["from_cache"],
        summary["api_calls"],
    )
    if summary["failed"]:
        kinds = ", ".join(f"{k}={v}" for k, v in summary["error_types"].items())
        return Failed(message=f"{summary['failed']} of {summary['rows']} files failed ({kinds})")
    return Completed(message=f"{summary['completed']} files completed", data=summary)
