"""Scale-out: a large manifest becomes child runs of a shard deployment, one slice each."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import State, get_run_logger
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import arun_deployment
from prefect.runtime import deployment, flow_run
from prefect.states import AwaitingRetry, Completed, Failed

from invox import ConfigurationError
from invox_batch.callbacks import parse_listen
from invox_batch.manifest import Manifest
from invox_batch.output import Output
from invox_batch.parameters import Callbacks, Scale, Spend
from invox_batch.report import write_summary
from invox_batch.shards import shard_bounds, shard_count

from .artifacts import publish_failed_files, publish_summary
from .events import emit_run_events

__all__ = [
    "aggregate",
    "child_parameters",
    "fan_out",
    "shard_key",
    "should_fan_out",
    "worker_host",
]

POLL_INTERVAL_S = 2.0


def worker_host() -> str:
    """Who executed this run: ``INVOX_BATCH_WORKER_NAME`` if set, else the host name."""
    return os.environ.get("INVOX_BATCH_WORKER_NAME") or socket.gethostname()


def should_fan_out(
    rows: int, shard_size: int, shard: str, deployment_id: str | None = None
) -> bool:
    """Shard only a whole manifest above the threshold, and only from a deployment run."""
    if shard or rows <= shard_size:
        return False  # decided without asking the API which deployment this run came from
    return bool(deployment_id or deployment.id)


def shard_key(manifest_sha256: str, parent_flow_run_id: str, number: int, count: int) -> str:
    """Idempotency key of one child: a retried parent gets the same children back."""
    return f"transcribe-batch:{parent_flow_run_id}:{manifest_sha256[:16]}:shard-{number}-of-{count}"


def child_parameters(
    parameters: dict[str, Any],
    spend: Spend,
    callbacks: Callbacks,
    scale: Scale,
    rows: int,
    number: int,
    count: int,
) -> dict[str, Any]:
    """A child's parameters: its slice, its share of the audio-hours cap, a receiver port of its own.

    The cap is split in proportion to each shard's rows, so the children together never submit
    more than the parent's ``max_audio_hours``.
    """
    start, end = shard_bounds(rows, number, count)
    if spend.max_audio_hours:
        spend = spend.model_copy(
            update={"max_audio_hours": spend.max_audio_hours * (end - start) / rows}
        )
    if callbacks.callback_listen:
        if callbacks.callback_url:
            raise ConfigurationError(
                "callback_listen with a fixed callback_url cannot serve several shard runs: run "
                "`invox-batch callbacks` behind that URL and pass callback_store instead"
            )
        host, _ = parse_listen(callbacks.callback_listen)
        listen = f"[{host}]:0" if ":" in host else f"{host}:0"
        callbacks = callbacks.model_copy(update={"callback_listen": listen})
    groups = {
        "spend": spend,
        "callbacks": callbacks,
        "scale": scale.model_copy(update={"shard": f"{number}/{count}"}),
    }
    return {**parameters, **{k: v.model_dump(mode="json") for k, v in groups.items()}}


def _budget(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The children's budgets summed (each child had its share of the parent's cap)."""
    budgets = [child["budget"] for child in summaries if child.get("budget")]
    if not budgets:
        return None
    keys = (
        "max_audio_hours",
        "submitted_audio_hours",
        "cap_hours_left",
        "not_submitted_files",
        "not_submitted_audio_hours",
    )
    return {k: round(sum(b[k] for b in budgets), 4) for k in keys}


def aggregate(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The parent's counts: the sum of its children's summaries, and all their failed files."""
    errors: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    hours: dict[str, float] = dict.fromkeys(_HOURS, 0.0)
    failed: list[dict[str, Any]] = []
    for child in summaries:
        for key in ("rows", "completed", "failed", "from_cache", "unique_audio"):
            totals[key] += int(child.get(key, 0))
        errors.update(child.get("error_types", {}))
        calls.update(child.get("api_calls", {}))
        for key in _HOURS:
            hours[key] += float(child.get(key) or 0.0)
        failed += child.get("failed_files", [])
    return {
        **{k: totals[k] for k in ("rows", "completed", "failed", "from_cache", "unique_audio")},
        "error_types": dict(sorted(errors.items())),
        **{k: round(hours[k], 4) for k in _HOURS},
        "failed_files": failed,
        "api_calls": {k: calls[k] for k in ("token", "presign", "upload", "status")},
        "budget": _budget(summaries),
    }


# Unique audio per shard: an audio in two shards counts in each (shards share no list of sha256).
_HOURS = ("audio_hours", "audio_hours_paid", "audio_hours_from_cache")


async def _start_shard(
    client: PrefectClient, deployment: str, parameters: dict[str, Any], key: str
) -> FlowRun:
    """Create the child once (idempotency key); a child that ended badly is re-armed, as in the UI."""
    child = await arun_deployment(
        deployment, client=client, parameters=parameters, idempotency_key=key, timeout=0
    )
    if child.state and child.state.is_final() and not child.state.is_completed():
        get_run_logger().info("re-arming shard run %s (%s)", child.name, child.state.name)
        await client.set_flow_run_state(child.id, AwaitingRetry(), force=True)
    return child


async def _wait(client: PrefectClient, child: FlowRun) -> FlowRun:
    """Poll one child until it reaches a final state."""
    while True:
        current = await client.read_flow_run(child.id)
        if current.state and current.state.is_final():
            return current
        await asyncio.sleep(POLL_INTERVAL_S)


def _child_summary(output: Output, child: FlowRun, shard: str) -> dict[str, Any]:
    """The child's written summary, or a stand-in saying it left none (crashed, cancelled)."""
    text = output.read_text(Path("runs") / f"{child.id}.json")
    if text is None:
        state = child.state.name if child.state else "unknown"
        return {"flow_run_id": str(child.id), "shard": shard, "missing": state}
    return {**json.loads(text), "shard": shard}


async def fan_out(
    manifest: Manifest, output: Output, spend: Spend, callbacks: Callbacks, scale: Scale
) -> State[Any]:
    """Run the manifest as child runs of ``deployment`` and summarise them as this run."""
    started = time.monotonic()
    parent = str(flow_run.id)
    count = shard_count(len(manifest.rows), scale.shard_size)
    rows, deployment = len(manifest.rows), scale.shard_deployment
    children_parameters = [
        child_parameters(dict(flow_run.parameters), spend, callbacks, scale, rows, n, count)
        for n in range(1, count + 1)
    ]
    get_run_logger().info("%d rows: %d shard runs of %s", rows, count, deployment)
    async with get_client() as client:
        children = [
            await _start_shard(
                client, deployment, parameters, shard_key(manifest.sha256, parent, n, count)
            )
            for n, parameters in enumerate(children_parameters, 1)
        ]
        finished = await asyncio.gather(*(_wait(client, child) for child in children))
    shards = [_child_summary(output, c, f"{n}/{count}") for n, c in enumerate(finished, 1)]
    return await _conclude(output, parent, manifest.source, shards, started)


async def _conclude(
    output: Output, parent: str, manifest: str, shards: list[dict[str, Any]], started: float
) -> State[Any]:
    """Write and publish the parent's summary; Failed if any shard failed rows or left none."""
    missing = [s for s in shards if "missing" in s]
    summary = {
        **aggregate([s for s in shards if "missing" not in s]),
        "flow_run_id": parent,
        "manifest": manifest,
        "host": worker_host(),
        "shards": [
            {
                k: s[k]
                for k in ("shard", "flow_run_id", "host", "completed", "failed", "missing")
                if k in s
            }
            for s in shards
        ],
        "wall_s": round(time.monotonic() - started, 3),
        "files_path": output.location(Path("files")),
        "segments_path": output.location(Path("segments")),
    }
    staging = output.local or Path(output.default_state_dir()) / "staging" / parent
    path = write_summary(staging, parent, summary)
    if output.is_remote:
        output.publish(staging, [path.relative_to(staging)], parent)
    await publish_summary(summary, manifest)
    await publish_failed_files(summary, manifest)
    emit_run_events(summary, per_file=False)  # each shard emitted its own files' events
    problems = [f"{summary['failed']} of {summary['rows']} files failed"] * bool(summary["failed"])
    problems += [f"{len(missing)} of {len(shards)} shard runs left no summary"] * bool(missing)
    if problems:
        return Failed(message="; ".join(problems))
    return Completed(message=f"{summary['completed']} files completed in {len(shards)} shards")
