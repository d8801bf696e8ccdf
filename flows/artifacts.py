"""What Prefect shows of a run: the progress, per-file table, failed-files and summary artifacts
(no transcript text), keyed by deployment or manifest so the UI keeps their history."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.context import FlowRunContext

from invox_batch.progress import ProgressSnapshot, ProgressTracker
from invox_batch.report import summary_markdown

from .context import deployment_name

__all__ = [
    "TABLE_ROW_CAP",
    "ProgressArtifact",
    "artifact_key",
    "failed_files_markdown",
    "publish_failed_files",
    "publish_outcomes",
    "publish_summary",
    "run_key_base",
]

TABLE_ROW_CAP = 200
KEY_PART_CAP = 40
TABLE_COLUMNS = (
    "file_id",
    "status",
    "error_type",
    "request_id",
    "from_cache",
    "attempts",
    "duration_s",
)


def _slug(text: str) -> str:
    """Lowercase letters, digits and single dashes only (Prefect's rule for artifact keys)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:KEY_PART_CAP].strip("-")


def run_key_base(
    manifest: str, deployment_name: str | None, flow_name: str | None, shard: str = ""
) -> str:
    """Stable across runs: the deployment (``transcribe-batch-nightly``), else the manifest's
    name and a digest of where it is (two ``manifest.csv`` in different folders differ)."""
    if deployment_name:
        base = _slug(f"{flow_name or 'transcribe-batch'}-{deployment_name}")
    else:
        stem = re.sub(r"\.[A-Za-z0-9]+$", "", manifest.rstrip("/").rsplit("/", 1)[-1])
        digest = hashlib.sha256(manifest.encode()).hexdigest()[:8]
        base = f"invox-batch-{_slug(stem) or 'manifest'}-{digest}"
    return f"{base}-{_slug(shard.replace('/', '-of-'))}" if shard else base


def artifact_key(manifest: str, kind: str, shard: str = "") -> str:
    """This run's key for one kind of artifact (``progress``, ``files``, ``failed-files``...)."""
    name = deployment_name()
    context = FlowRunContext.get()
    flow = context.flow.name if context and context.flow else None
    return f"{run_key_base(manifest, name, flow, shard)}-{kind}"


class ProgressArtifact:
    """A progress artifact following a tracker, updated at most every ``interval_s`` (the API is
    shared) and once more at the end."""

    def __init__(self, tracker: ProgressTracker, key: str, interval_s: float = 2.0) -> None:
        self.tracker = tracker
        self.key = key
        self.interval_s = interval_s
        self._created: asyncio.Future[UUID] | None = None
        self._last = 0.0
        self._pending: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ProgressArtifact:
        self._created = asyncio.ensure_future(  # the run goes on while the server answers
            acreate_progress_artifact(
                progress=0.0, key=self.key, description=self.tracker.snapshot().line()
            )
        )
        self.tracker.listeners.append(self._listen)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.tracker.listeners.remove(self._listen)
        await asyncio.gather(*self._pending)
        await self._push(self.tracker.snapshot())

    def _listen(self, snapshot: ProgressSnapshot) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            update = asyncio.get_running_loop().create_task(self._push(snapshot))
            self._pending.add(update)
            update.add_done_callback(self._pending.discard)

    async def _push(self, snapshot: ProgressSnapshot) -> None:
        if self._created:
            artifact_id = await self._created
            await aupdate_progress_artifact(
                artifact_id, snapshot.percent, description=snapshot.line()
            )


def failed_files_markdown(summary: dict[str, Any]) -> str:
    """Every failed file with its error_type, however many (the table shows the first 200)."""
    failed = summary.get("failed_files") or []
    lines = [f"# Failed files: {len(failed)} of {summary['rows']}", ""]
    if not failed:
        return "\n".join([*lines, "No file failed in this run."])
    lines += ["| file_id | error_type |", "|---|---|"]
    lines += [f"| {_cell(f['file_id'])} | {_cell(f['error_type'])} |" for f in failed]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """A markdown table cell that cannot break the table."""
    return str(value).replace("|", "\\|").replace("\n", " ")


async def publish_outcomes(
    summary: dict[str, Any], rows: Sequence[dict[str, Any]], manifest: str, shard: str = ""
) -> None:
    """The capped per-file table (no transcript text) and the list of every failed file."""
    shown = sorted(rows, key=lambda r: (r["status"] != "failed", r["row_index"]))[:TABLE_ROW_CAP]
    table = [{c: row[c] for c in TABLE_COLUMNS} for row in shown]
    failed = summary.get("failed", 0)
    note = (
        f" (first {TABLE_ROW_CAP} of {len(rows)}, failures first; all {failed} failed files"
        " are in the failed-files artifact)"
        if len(rows) > len(shown)
        else ""
    )
    await asyncio.gather(
        acreate_table_artifact(
            table=table,
            key=artifact_key(manifest, "files", shard),
            description=f"Per-file outcomes{note}.",
        ),
        publish_failed_files(summary, manifest, shard),
    )


async def publish_failed_files(summary: dict[str, Any], manifest: str, shard: str = "") -> None:
    """Every failed file of the run (a sharded parent: of all its shards), keyed."""
    await acreate_markdown_artifact(
        markdown=failed_files_markdown(summary),
        key=artifact_key(manifest, "failed-files", shard),
        description="Failed files, every one",
    )


async def publish_summary(
    summary: dict[str, Any], manifest: str, shard: str = "", extra: str = ""
) -> None:
    """The markdown summary (plus ``extra``, e.g. the report's figures), keyed."""
    markdown = summary_markdown(summary) + (f"\n\n{extra}" if extra else "")
    await acreate_markdown_artifact(
        markdown=markdown, key=artifact_key(manifest, "summary", shard), description="Run summary"
    )
