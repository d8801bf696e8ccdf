"""The ``transcribe-batch`` flow: manifest → local checks → settle each unique audio → dataset."""

from __future__ import annotations

import atexit
import datetime as dt
import gc
import shutil
import time
from pathlib import Path
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from invox import ConfigurationError, InvoxSettings
from invox_batch.budget import BudgetPlan
from invox_batch.callbacks import completion_for
from invox_batch.captions import write_run_captions
from invox_batch.checks import Checked, check_all, units_of
from invox_batch.dataset import file_row, segment_rows, write_run
from invox_batch.ledger import Ledger
from invox_batch.manifest import read_manifest
from invox_batch.output import Output
from invox_batch.parameters import (
    Callbacks,
    Captions,
    Polling,
    Retrying,
    Scale,
    Spend,
    StateStorage,
)
from invox_batch.progress import ProgressTracker
from invox_batch.quality import assign_quality, count_flags
from invox_batch.records import Outcome
from invox_batch.report import build_run_report, report_section, summarise, write_summary
from invox_batch.settling import Run, Unit, counted_client, settle_all
from tasks.settle import OnDask, OnLoop, authenticate

from .credentials import with_secret_block
from .reporting import ProgressArtifact, publish_outcomes
from .sharding import fan_out, parse_shard, should_fan_out, take_shard, worker_host

__all__ = ["transcribe_batch"]


@flow(name="transcribe-batch", persist_result=False, validate_parameters=True)
async def transcribe_batch(
    manifest: str,
    out: str = "out",
    api_version: str | None = None,
    spend: Spend = Spend(),
    polling: Polling = Polling(),
    retrying: Retrying = Retrying(),
    callbacks: Callbacks = Callbacks(),
    captions: Captions = Captions(),
    scale: Scale = Scale(),
    state: StateStorage = StateStorage(),
) -> dict[str, Any] | State[Any]:
    """Transcribe every audio file of a manifest, paying once per audio content, into Parquet.

    Args:
        manifest: Manifest path or URI (.csv, .jsonl or .parquet) with an audio_path column.
        out: Output folder or URI (file://, or s3:// etc. with its fsspec backend installed).
        api_version: X-Invox-Medical-Api-Version to send; empty means INVOX_API_VERSION.
        spend: What the run may pay for: audio-hours cap, resubmissions, force.
        polling: When each job is first polled, how often again, and for how long.
        retrying: Retries of one call after 429, 5xx and network errors, and their delays.
        callbacks: Provider callbacks, and whether they decide when a result is fetched.
        captions: Caption files (WebVTT, SRT) written beside the dataset.
        scale: Concurrency, task grouping, Dask, and sharding into child runs.
        state: The never-pay-twice records: their folder, and how long results count.
    """
    started = time.monotonic()
    _freeze_long_lived_objects()
    output = Output.parse(out)
    settings = await _run_settings(api_version)
    parse_shard(scale.shard)  # a bad slice is refused before any audio is read
    state_dir = Path(state.result_storage) if state.result_storage else output.default_state_dir()
    parsed = read_manifest(manifest)
    if should_fan_out(len(parsed.rows), scale.shard_size, scale.shard):
        return await fan_out(parsed, output, spend, callbacks, scale)
    parsed = take_shard(parsed, scale.shard)
    checked = await check_all(parsed, settings, state_dir)
    units = units_of(checked)
    get_run_logger().info("%d rows, %d unique audio files to settle", len(checked), len(units))
    try:
        outcomes, run = await _settle(
            settings, units, state_dir, spend, polling, retrying, callbacks, scale, state
        )
    finally:
        shutil.rmtree(state_dir / "spool", ignore_errors=True)  # copies of remote medical audio
    per_row = [(c, outcomes[c.identity] if c.identity else c.local_failure()) for c in checked]
    staging = output.local or state_dir / "staging" / str(flow_run.id or "local")
    summary = _write(staging, per_row, settings.api_version, captions, parsed.metadata_schema)
    summary.update(
        manifest=manifest,
        shard=scale.shard,
        host=worker_host(),
        unique_audio=len(units),
        api_calls=run.calls.as_dict(),
        fatal_error_type=run.stop.error_type if run.stop else None,
        fatal_error_message=run.stop.message if run.stop else None,
        budget=run.budget.summary() or None,
        wall_s=round(time.monotonic() - started, 3),
    )
    return await _conclude(output, staging, summary)


def _freeze_long_lived_objects() -> None:
    """Keep full collections off the imports' million objects, which live as long as the
    process; unfrozen at exit so extension modules see their objects freed."""
    if not gc.get_freeze_count():
        atexit.register(gc.unfreeze)
    gc.freeze()


async def _run_settings(api_version: str | None) -> InvoxSettings:
    """The run's API settings, refused up front (before any audio is read) when unusable."""
    settings = InvoxSettings(api_version=api_version) if api_version else InvoxSettings()
    if not settings.base_url:
        raise ConfigurationError(
            "INVOX_BASE_URL is not set for this flow run: set it and INVOX_APP_ID in the "
            "worker's environment (the key as INVOX_API_KEY or the Secret block invox-api-key), "
            "or use `invox-batch run`"
        )
    return await with_secret_block(settings)


async def _settle(
    settings: InvoxSettings,
    units: dict[str, Unit],
    state_dir: Path,
    spend: Spend,
    polling: Polling,
    retrying: Retrying,
    callbacks: Callbacks,
    scale: Scale,
    state: StateStorage,
) -> tuple[dict[str, Outcome], Run]:
    """Every unit's outcome, settled on the flow's loop or on Dask, in the run's completion mode."""
    expiration = (
        dt.timedelta(days=state.cache_expiration_days) if state.cache_expiration_days else None
    )
    ledger = Ledger.open(state_dir / "results", expiration)
    tracker = ProgressTracker(len(units))
    store = Path(callbacks.callback_store) if callbacks.callback_store else state_dir / "callbacks"
    async with counted_client(settings) as (client, calls), ProgressArtifact(tracker):
        with completion_for(
            callbacks.completion,
            grace_s=callbacks.callback_grace_s,
            store_dir=store,
            listen=callbacks.callback_listen,
            callback_url=callbacks.callback_url,
            settings=settings,
            log=get_run_logger(),
        ) as (completion, callback_url):
            run = Run(
                client,
                ledger,
                spend=spend,
                polling=polling,
                retrying=retrying,
                log=get_run_logger(),
                flow_run_id=str(flow_run.id) if flow_run.id else None,
                concurrency=scale.max_concurrency,
                completion=completion,
                callback_url=callback_url,
                budget=BudgetPlan(spend.max_audio_hours),
                progress=tracker,
                calls=calls,
            )
            executor = (
                OnDask(settings, scale.dask_address, scale.max_concurrency)
                if scale.task_runner == "dask"
                else OnLoop(scale.files_per_task, scale.max_concurrency)
            )
            outcomes = await settle_all(run, units, executor, lambda: authenticate(client))
    return outcomes, run


def _run_date() -> dt.date:
    """The partition date: the run's scheduled start in UTC, stable across UI retries."""
    scheduled = flow_run.scheduled_start_time
    return scheduled.astimezone(dt.UTC).date() if scheduled else dt.datetime.now(dt.UTC).date()


def _write(
    staging: Path,
    per_row: list[tuple[Checked, Outcome]],
    api_version: str,
    captions: Captions,
    metadata_schema: Any,
) -> dict[str, Any]:
    """The run's Parquet parts and caption files, staged; the summary's counts and locations."""
    flow_run_id = str(flow_run.id or "local")
    rows = [file_row(c.row, c.check, o, flow_run_id, api_version) for c, o in per_row]
    rows = assign_quality(rows, [o.segments for _, o in per_row])
    segments = [s for c, o in per_row for s in segment_rows(c.row, c.check, o, flow_run_id)]
    written = write_run(staging, flow_run_id, _run_date(), rows, segments, metadata_schema)
    completed = [(c.row.file_id, o.vtt, o.segments) for c, o in per_row if o.status == "completed"]
    parts, captions_failed = write_run_captions(
        staging, completed, vtt=captions.vtt, srt=captions.srt, log=get_run_logger()
    )
    return {
        **summarise(rows),
        "flow_run_id": flow_run_id,
        "api_version": api_version,
        "rows_written": rows,
        "parts": [written.files_path, written.segments_path, *parts],
        "files_path": written.files_path.relative_to(staging),
        "segments_path": written.segments_path.relative_to(staging),
        "quality": count_flags(rows),
        "captions_failed": captions_failed,
    }


async def _conclude(output: Output, staging: Path, summary: dict[str, Any]) -> State[Any]:
    """Write the summary and the HTML report, publish a remote output, say how the run ended."""
    rows, parts = summary.pop("rows_written"), summary.pop("parts")
    summary["files_path"] = output.location(summary["files_path"])
    summary["segments_path"] = output.location(summary["segments_path"])
    flow_run_id = summary["flow_run_id"]
    summary_path = write_summary(staging, flow_run_id, summary)
    report = await build_run_report(staging, flow_run_id, get_run_logger())
    report_parts = [report.html] if report else []
    if output.is_remote:
        every = [*parts, summary_path, *report_parts]
        output.publish(staging, [p.relative_to(staging) for p in every], flow_run_id)
        shutil.rmtree(staging, ignore_errors=True)
    report_at = output.location(report.html.relative_to(staging)) if report else None
    await publish_outcomes(summary, rows, extra=report_section(report, report_at))
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
