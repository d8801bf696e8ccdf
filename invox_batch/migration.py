"""``invox-batch migrate``: a dataset written before the current tables, brought up to date.

The old layout kept every run's transcripts in its ``files`` part (a ``text`` column) and a
per-run ``segments`` log. Migrating MERGEs each file's latest completed transcript (and exactly
its segments) into the tables, then rewrites every log part without text (atomically), then
removes the old segments log. Each step is safe to repeat, so an interrupted migration is
simply run again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .dataset import METADATA_COLUMNS_KEY, PARTITION_COLUMN, log_parts, read_part, replace_part
from .ledger import audio_identity
from .output import Output
from .tables import Merged, Tables, transcript_row

__all__ = ["Migrated", "migrate"]


@dataclass(frozen=True)
class Migrated:
    """What the migration did: counts only."""

    parts_rewritten: int
    segment_parts_removed: int
    merged: Merged

    def line(self) -> str:
        """One line for the operator."""
        if not (self.parts_rewritten or self.segment_parts_removed or self.merged.transcripts):
            return "nothing to migrate: the dataset already uses the current tables"
        return (
            f"migrated: {self.merged.transcripts} transcripts and {self.merged.segments_added} "
            f"segments into the tables, {self.parts_rewritten} log parts rewritten without text, "
            f"{self.segment_parts_removed} old segments parts removed"
        )


def _run_date(part: str) -> str:
    """The partition value in a part's path."""
    folder = part.replace("\\", "/").rsplit("/", 2)[-2]
    return folder.removeprefix(f"{PARTITION_COLUMN}=")


def _metadata_names(table: pa.Table) -> list[str]:
    """The manifest's metadata columns, as the part's footer names them."""
    raw = (table.schema.metadata or {}).get(METADATA_COLUMNS_KEY)
    return [str(n) for n in json.loads(raw)] if raw else []


def _identity(row: Mapping[str, Any], base_url: str | None) -> str | None:
    """The ledger identity of a row's audio, when the API base URL is known."""
    if row.get("audio_identity"):
        return str(row["audio_identity"])
    if not base_url or not row.get("sha256"):
        return None
    return audio_identity(str(row["sha256"]), base_url, str(row["api_version"]))


def _latest(parts: dict[str, pa.Table], base_url: str | None) -> list[dict[str, Any]]:
    """Each file's latest completed row that still has its text, as a transcripts row."""
    best: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    for part, table in parts.items():
        if "text" not in table.column_names:
            continue
        metadata = _metadata_names(table)
        for row in table.to_pylist():
            if row["status"] != "completed":
                continue
            row = {"quality": [], **row, "audio_identity": _identity(row, base_url)}
            stamp = row["completed_at"].timestamp() if row["completed_at"] else 0.0
            order = (stamp, _run_date(part), row["flow_run_id"])
            if row["file_id"] not in best or order > best[row["file_id"]][0]:
                best[row["file_id"]] = (order, transcript_row(row, row["text"], metadata))
    return [entry for _, entry in best.values()]


def _old_segments(output: Output) -> list[str]:
    """The old per-run segments parts."""
    pattern = f"segments/{PARTITION_COLUMN}=*/*.parquet"
    if output.local is not None:
        return sorted(str(p) for p in output.local.glob(pattern))
    return sorted(str(p) for p in output.fs.glob(f"{output.root}/{pattern}"))


def _segments_of(output: Output, parts: list[str], wanted: dict[str, str]) -> list[dict[str, Any]]:
    """The old segments of each chosen transcript (file_id → request_id), one copy each."""
    chosen: dict[tuple[str, int], dict[str, Any]] = {}
    for part in parts:
        if output.local is not None:
            table = pq.read_table(part, partitioning=None)
        else:
            with output.fs.open(part, "rb") as handle:
                table = pq.read_table(handle, partitioning=None)
        for row in table.to_pylist():
            if wanted.get(row["file_id"]) == row["request_id"]:
                chosen.setdefault((row["file_id"], row["segment_index"]), row)
    return list(chosen.values())


def _without_text(table: pa.Table, base_url: str | None) -> pa.Table:
    """A log part in the current layout: no text, an audio_identity after sha256."""
    if "audio_identity" not in table.column_names:
        rows = table.select(["sha256", "api_version"]).to_pylist()
        identities = pa.array([_identity(r, base_url) for r in rows], pa.string())
        where = table.column_names.index("sha256") + 1
        table = table.add_column(where, pa.field("audio_identity", pa.string()), identities)
    return table.drop_columns(["text"]) if "text" in table.column_names else table


def migrate(out: str, base_url: str | None = None) -> Migrated:
    """Import an older dataset into the tables; ``base_url`` fills the log's audio identity."""
    output = Output.parse(out)
    parts = {part: read_part(output, part) for part in log_parts(output)}
    transcripts = _latest(parts, base_url)
    old_segments = _old_segments(output)
    wanted = {str(r["file_id"]): str(r["request_id"]) for r in transcripts}
    segments = _segments_of(output, old_segments, wanted)
    merged = Tables.of(output).merge_run(transcripts, segments)
    rewritten = 0
    for part, table in parts.items():
        if "text" in table.column_names or "audio_identity" not in table.column_names:
            replace_part(output, part, _without_text(table, base_url))
            rewritten += 1
    for part in old_segments:
        if output.local is not None:
            output.local.joinpath(part).unlink(missing_ok=True)
        else:
            output.fs.rm(part)
    return Migrated(rewritten, len(old_segments), merged)
