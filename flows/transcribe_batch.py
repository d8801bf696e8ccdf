"""The ``transcribe-batch`` flow: manifest → local checks → settle each unique audio → dataset."""

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
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed

from invox import ConfigurationError, InvoxError, InvoxSettings
from invox_batch.callbacks import completion_for
from invox_batch.captions import write_run_captions
from invox_batch.checks import Checked, check_all, units_of
from invox_batch.dataset import file_row, write_run
from invox_batch.errors import InvoxBatchError
from invox_batch.ledger import Ledger
from invox_batch.manifest import Manifest, read_manifest
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
from invox_batch.shards import take_shard
from invox_batch.stopping import Stopped, current_stop
from invox_batch.tables import Merged, Tables, split_run
from tasks.limits import api_limit
from tasks.outcomes import ledger_groups, show_cached
from tasks.settle import FEW_FILES, OnDask, OnLoop, authenticating, batch_label

from .artifacts import ProgressArtifact, artifact_key, publish_outcomes, publish_summary
from .credentials import ledger_url, with_secret_block
from .events import emit_run_events
from .sharding import fan_out, should_fan_out, worker_host

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
    try:
        output, settings, state_dir, ledger, parsed = await _inputs(
            manifest, out, api_version, state
        )
        tables = Tables.of(output)
        tables.check_metadata(parsed.metadata_schema)  # a column the table cannot hold
    except (InvoxBatchError, InvoxError) as exc:
        return _refused(exc)
    if should_fan_out(len(parsed.rows), scale.shard_size, scale.shard):
        return await fan_out(parsed, output, spend, callbacks, scale)
    checked = await check_all(take_shard(parsed, scale.shard), settings, state_dir)
    progress_key = artifact_key(manifest, "progress", scale.shard)
    try:
        run, outcomes = await _settle(
            settings,
            units_of(checked),
            state_dir,
            ledger,
            spend,
            polling,
            retrying,
            callbacks,
            scale,
            progress_key,
        )
    except Stopped as stopped:  # a signal: what was accepted is on record, nothing is written
        return Cancelled(message=str(stopped))
    staging = output.local or state_dir / "staging" / _flow_run_id()
    written = _write(staging, checked, outcomes, settings.api_version, captions, parsed, tables)
    summary = _summary(manifest, scale, settings, checked, run, written, output, started)
    return await _conclude(output, staging, summary, written)


def _freeze_long_lived_objects() -> None:
    """Keep full collections off the imports' million objects, which live as long as the
    process; unfrozen at exit so extension modules see their objects freed."""
    if not gc.get_freeze_count():
        atexit.register(gc.unfreeze)
    gc.freeze()


async def _inputs(
    manifest: str, out: str, api_version: str | None, state: StateStorage
) -> tuple[Output, InvoxSettings, Path, Ledger, Manifest]:
    """The output, API settings, state folder, ledger and manifest, each refused up front
    (nothing is read or paid for before the output and state are known to be usable)."""
    output, settings = Output.parse(out), await _run_settings(api_version)
    url, source = await ledger_url(state.ledger_url)
    shared = url is not None
    output.check_writable(state.result_storage, state.local_ledger, shared)
    state_dir = output.state_dir(state.result_storage, state.local_ledger, shared)
    days = state.cache_expiration_days
    ledger = Ledger.open(state_dir, dt.timedelta(days=days) if days else None, url, source)
    return output, settings, state_dir, ledger, read_manifest(manifest)


def _refused(exc: InvoxBatchError | InvoxError) -> State[Any]:
    """Bad parameters or settings: one line in the log and the state message, no traceback."""
    reason = " ".join(str(getattr(exc, "message", None) or exc).split())
    line = f"refused before any audio was read or paid for: {reason}"
    get_run_logger().error(line)
    return Failed(message=line)


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
    ledger: Ledger,
    spend: Spend,
    polling: Polling,
    retrying: Retrying,
    callbacks: Callbacks,
    scale: Scale,
    progress_key: str,
) -> tuple[Run, dict[str, Outcome]]:
    """Every unit's outcome, settled on the flow's loop or on Dask, in the run's completion mode."""
    get_run_logger().info("%d unique audio files to settle", len(units))
    tracker = ProgressTracker(len(units))
    store = Path(callbacks.callback_store) if callbacks.callback_store else state_dir / "callbacks"
    across_runs = asyncio.ensure_future(api_limit())  # asked while the ledger and client open
    try:
        async with (
            ledger,
            counted_client(settings) as (client, calls),
            ProgressArtifact(tracker, progress_key),
        ):
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
                    flow_run_id=_flow_run_id() if flow_run.id else None,
                    concurrency=scale.max_concurrency,
                    completion=completion,
                    callback_url=callback_url,
                    progress=tracker,
                    calls=calls,
                    across_runs=await across_runs,
                    stopping=current_stop(),
                )
                executor = (
                    OnDask(settings, scale.dask_address, scale.max_concurrency)
                    if scale.task_runner == "dask"
                    else OnLoop(scale.files_per_task, scale.max_concurrency)
                )
                outcomes = await settle_all(
                    run, units, executor, lambda: authenticating(client, retrying)
                )
                cached = [u for u in units.values() if outcomes[u.identity].from_cache]
                groups = ledger_groups(cached, FEW_FILES)
                await show_cached([(batch_label(g), g) for g in groups], outcomes)
    finally:
        across_runs.cancel()  # done by now, unless the ledger or the client could not open
        shutil.rmtree(state_dir / "spool", ignore_errors=True)  # copies of remote medical audio
    return run, outcomes


def _flow_run_id() -> str:
    """This flow run's id ("local" outside a run, as in unit tests of the helpers)."""
    return str(flow_run.id or "local")


def _run_date() -> dt.date:
    """The partition date: the run's scheduled start in UTC, stable across UI retries."""
    scheduled = flow_run.scheduled_start_time
    return scheduled.astimezone(dt.UTC).date() if scheduled else dt.datetime.now(dt.UTC).date()


@dataclass(frozen=True)
class Written:
    """What the run staged: its ``files`` rows, every file to publish, what it MERGEd."""

    rows: list[dict[str, Any]]
    parts: list[Path]
    files_path: Path
    captions_failed: int
    merged: Merged


def _write(
    staging: Path,
    checked: list[Checked],
    outcomes: dict[str, Outcome],
    api_version: str,
    captions: Captions,
    manifest: Manifest,
    tables: Tables,
) -> Written:
    """MERGE the transcripts into the tables, then stage the log part and the caption files."""
    flow_run_id = _flow_run_id()
    per_row = [(c, outcomes[c.identity] if c.identity else c.local_failure()) for c in checked]
    rows = [
        {**file_row(c.row, c.check, o, flow_run_id, api_version, c.identity), "text": o.text}
        for c, o in per_row
    ]
    segments = [o.segments for _, o in per_row]
    rows, transcripts, segment_list = split_run(
        assign_quality(rows, segments), segments, manifest.metadata_schema.names
    )
    merged = tables.merge_run(transcripts, segment_list)  # before the log points to them
    written = write_run(staging, flow_run_id, _run_date(), rows, manifest.metadata_schema)
    completed = [(c.row.file_id, o.vtt, o.segments) for c, o in per_row if o.status == "completed"]
    parts, captions_failed = write_run_captions(
        staging, completed, vtt=captions.vtt, srt=captions.srt, log=get_run_logger()
    )
    return Written(rows, [written.files_path, *parts], written.files_path, captions_failed, merged)


def _summary(
    manifest: str,
    scale: Scale,
    settings: InvoxSettings,
    checked: list[Checked],
    run: Run,
    written: Written,
    output: Output,
    started: float,
) -> dict[str, Any]:
    """The run summary: counts, where things went, what the API cost (never transcript text)."""
    staging = written.files_path.parents[2]
    return {
        **summarise(written.rows),
        "flow_run_id": _flow_run_id(),
        "manifest": manifest,
        "shard": scale.shard,
        "host": worker_host(),
        "api_version": settings.api_version,
        "unique_audio": len({c.identity for c in checked if c.identity}),
        "api_calls": run.calls.as_dict(),
        "fatal_error_type": run.stop.error_type if run.stop else None,
        "fatal_error_message": run.stop.message if run.stop else None,
        "budget": run.budget.summary() or None,
        "wall_s": round(time.monotonic() - started, 3),
        "files_path": output.location(written.files_path.relative_to(staging)),
        "tables_path": output.location(Path("tables")),
        "tables_merged": dataclasses.asdict(written.merged),
        "quality": count_flags(written.rows),
        "captions_failed": written.captions_failed,
    }


async def _conclude(
    output: Output, staging: Path, summary: dict[str, Any], written: Written
) -> State[Any]:
    """Write the summary and the HTML report, publish a remote output, say how the run ended."""
    flow_run_id, manifest = summary["flow_run_id"], summary["manifest"]
    shard = summary["shard"] or ""
    summary_path = write_summary(staging, flow_run_id, summary)
    outcomes = asyncio.create_task(publish_outcomes(summary, written.rows, manifest, shard))
    try:  # the per-file artifacts go to Prefect while the report is drawn on its thread
        report = await build_run_report(staging, flow_run_id, get_run_logger())
        report_parts = [report.html] if report else []
        if output.is_remote:
            every = [*written.parts, summary_path, *report_parts]
            output.publish(staging, [p.relative_to(staging) for p in every], flow_run_id)
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        outcomes.cancel()
        raise
    report_at = output.location(report.html.relative_to(staging)) if report else None
    emit_run_events(summary)  # queued: sent while the summary artifact is created
    await asyncio.gather(
        outcomes,
        publish_summary(summary, manifest, shard, extra=report_section(report, report_at)),
    )
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
