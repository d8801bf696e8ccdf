"""What operators see of a run: Prefect artifacts and a small JSON summary, never transcript text."""

from __future__ import annotations

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

from invox_batch.progress import ProgressTracker
from invox_batch.report import summary_markdown

__all__ = ["TABLE_ROW_CAP", "ProgressReporter", "publish_outcomes"]

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


class ProgressReporter:
    """A progress artifact updated as files finish, at most every ``interval_s`` (the API is shared)."""

    def __init__(self, total: int, interval_s: float = 2.0) -> None:
        self.tracker = ProgressTracker(total)
        self.interval_s = interval_s
        self._artifact_id: UUID | None = None
        self._last = 0.0

    async def start(self) -> None:
        """Create the artifact at 0 %."""
        self._artifact_id = await acreate_progress_artifact(
            progress=0.0, description=self.tracker.snapshot().line()
        )

    def begin(self) -> None:
        """A file went in flight (in-process listeners see it; the artifact waits)."""
        self.tracker.begin()

    async def advance(
        self, status: str = "completed", duration_s: float | None = None, *, began: bool = False
    ) -> None:
        """Count a finished file; push an update when enough time has passed or all are done."""
        snapshot = self.tracker.finish(status, duration_s, began=began)
        now = time.monotonic()
        last = snapshot.done >= snapshot.total
        if self._artifact_id and (last or now - self._last >= self.interval_s):
            self._last = now
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
