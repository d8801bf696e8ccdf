"""What Prefect shows of a run: the progress, per-file table and summary artifacts (no transcript text)."""

from __future__ import annotations

import asyncio
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

from invox_batch.progress import ProgressSnapshot, ProgressTracker
from invox_batch.report import summary_markdown

__all__ = ["TABLE_ROW_CAP", "ProgressArtifact", "publish_outcomes"]

TABLE_ROW_CAP = 200
TABLE_COLUMNS = (
    "file_id",
    "status",
    "error_type",
    "request_id",
    "from_cache",
    "attempts",
    "duration_s",
)


class ProgressArtifact:
    """A progress artifact following a tracker, updated at most every ``interval_s`` (the API is
    shared) and once more at the end."""

    def __init__(self, tracker: ProgressTracker, interval_s: float = 2.0) -> None:
        self.tracker = tracker
        self.interval_s = interval_s
        self._artifact_id: UUID | None = None
        self._last = 0.0
        self._pending: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ProgressArtifact:
        self._artifact_id = await acreate_progress_artifact(
            progress=0.0, description=self.tracker.snapshot().line()
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
        if self._artifact_id:
            await aupdate_progress_artifact(
                self._artifact_id, snapshot.percent, description=snapshot.line()
            )


async def publish_outcomes(
    summary: dict[str, Any], rows: Sequence[dict[str, Any]], extra: str = ""
) -> None:
    """A capped per-file table (no transcript text) and the markdown summary (plus ``extra``)."""
    shown = sorted(rows, key=lambda r: (r["status"] != "failed", r["row_index"]))[:TABLE_ROW_CAP]
    table = [{c: row[c] for c in TABLE_COLUMNS} for row in shown]
    note = (
        f" (first {TABLE_ROW_CAP} of {len(rows)}, failures first)" if len(rows) > len(shown) else ""
    )
    await acreate_table_artifact(table=table, description=f"Per-file outcomes{note}.")
    markdown = summary_markdown(summary) + (f"\n\n{extra}" if extra else "")
    await acreate_markdown_artifact(markdown=markdown, description="Run summary")
