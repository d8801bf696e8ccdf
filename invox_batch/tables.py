"""The current tables: one transcript per file and its segments, as Delta Lake tables.

``<out>/tables/transcripts`` holds exactly one row per ``file_id`` (its latest completed
transcript, the manifest's metadata beside it) and ``<out>/tables/segments`` exactly that
transcript's segments. Each run MERGEs what it learnt, one transaction per table, retried when
a concurrent writer (a shard, a UI Retry) committed first; the newest run's transcript of a file
wins, and a failed row never hides a completed one. Statistics are kept only for columns that
carry no PHI, so the transaction log never quotes a transcript or an identifier.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from .errors import SchemaDriftError, TablesError
from .files import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, make_dirs, private_files
from .output import Output

__all__ = [
    "SEGMENTS",
    "SEGMENTS_SCHEMA",
    "TRANSCRIPTS",
    "TRANSCRIPTS_SCHEMA",
    "Merged",
    "Tables",
    "segment_rows",
    "split_run",
    "transcript_row",
]

T = TypeVar("T")
TRANSCRIPTS, SEGMENTS = "transcripts", "segments"
_UTC_US = pa.timestamp("us", tz="UTC")
_COMMIT_ATTEMPTS = 30
# Only these columns get min/max statistics in the Delta log (which VACUUM never removes).
_STATS = {TRANSCRIPTS: "completed_at,n_segments,duration_s", SEGMENTS: "segment_index,start_s"}

TRANSCRIPTS_SCHEMA = pa.schema(
    [
        ("file_id", pa.string()),
        ("audio_identity", pa.string()),
        ("sha256", pa.string()),
        ("request_id", pa.string()),
        ("text", pa.string()),
        ("n_segments", pa.int32()),
        ("duration_s", pa.float64()),
        ("completed_at", _UTC_US),
        ("api_version", pa.string()),
        ("quality", pa.list_(pa.string())),
        ("flow_run_id", pa.string()),
    ]
)
SEGMENTS_SCHEMA = pa.schema(
    [
        ("file_id", pa.string()),
        ("request_id", pa.string()),
        ("segment_index", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("text", pa.string()),
        ("speaker", pa.string()),
        ("sha256", pa.string()),
        ("flow_run_id", pa.string()),
    ]
)
_SEGMENT_KEY = (
    "t.file_id = s.file_id AND t.request_id = s.request_id AND t.segment_index = s.segment_index"
)


@dataclass(frozen=True)
class Merged:
    """What one run's MERGE changed (transcripts inserted or replaced, segments added, dropped)
    and how long both tables' transactions took, reads included."""

    transcripts: int = 0
    segments_added: int = 0
    segments_removed: int = 0
    seconds: float = 0.0


def transcript_row(
    files_row: Mapping[str, Any], text: str | None, metadata: Iterable[str]
) -> dict[str, Any]:
    """The ``transcripts`` row of one completed ``files`` row, with its text and metadata."""
    base = {name: files_row.get(name) for name in TRANSCRIPTS_SCHEMA.names}
    return {**base, "text": text or "", **{name: files_row.get(name) for name in metadata}}


def segment_rows(
    files_row: Mapping[str, Any], segments: Sequence[Sequence[Any]]
) -> list[dict[str, Any]]:
    """The ``segments`` rows of one completed ``files`` row, in order."""
    return [
        {
            "file_id": files_row["file_id"],
            "request_id": files_row["request_id"],
            "segment_index": index,
            "start_s": float(segment[0]),
            "end_s": float(segment[1]),
            "text": str(segment[2]),
            "speaker": segment[3] if len(segment) > 3 else None,
            "sha256": files_row.get("sha256"),
            "flow_run_id": files_row["flow_run_id"],
        }
        for index, segment in enumerate(segments)
    ]


def split_run(
    rows: Sequence[Mapping[str, Any]],
    segments: Sequence[Sequence[Sequence[Any]]],
    metadata: Sequence[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """A run's rows (``files`` rows plus ``text``) as log rows without text, and the completed
    ones' transcripts and segments rows for the tables."""
    log = [{k: v for k, v in row.items() if k != "text"} for row in rows]
    transcripts, segment_list = [], []
    for row, segs in zip(rows, segments, strict=True):
        if row["status"] == "completed":
            transcripts.append(transcript_row(row, row.get("text"), metadata))
            segment_list += segment_rows(row, segs)
    return log, transcripts, segment_list


def _retrying(step: Callable[[], T]) -> T:
    """Run a read-modify-commit step again when another writer committed first."""
    for attempt in range(_COMMIT_ATTEMPTS):
        try:
            return step()
        except (CommitFailedError, DeltaError) as exc:
            if attempt == _COMMIT_ATTEMPTS - 1 or not _conflict(exc):
                raise TablesError(f"the tables could not be updated: {_one_line(exc)}") from None
        time.sleep(random.uniform(0.05, 0.2) * min(attempt + 1, 5))
    raise AssertionError("unreachable")


def _conflict(exc: Exception) -> bool:
    """A lost race with a concurrent commit (retry), not a real problem (report)."""
    if isinstance(exc, CommitFailedError):
        return True
    text = str(exc).lower()
    return any(word in text for word in ("conflict", "concurrent", "already exists", "version 0"))


def _one_line(exc: BaseException) -> str:
    """The error's kind and first line (Delta errors name columns and files, never values)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"


def _storage_options(output: Output) -> dict[str, str]:
    """object_store options equal to what the writer's fsspec filesystem uses (s3fs)."""
    fs = output.fs
    if fs is None or "s3" not in (
        fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    ):
        return {}
    options: dict[str, str] = {}
    kwargs = getattr(fs, "client_kwargs", None) or {}
    endpoint = getattr(fs, "endpoint_url", None) or kwargs.get("endpoint_url")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    region = kwargs.get("region_name")
    if region:
        options["AWS_REGION"] = str(region)
    for attribute, option in (
        ("key", "AWS_ACCESS_KEY_ID"),
        ("secret", "AWS_SECRET_ACCESS_KEY"),
        ("token", "AWS_SESSION_TOKEN"),
    ):
        value = getattr(fs, attribute, None)
        if value:
            options[option] = str(value)
    return options


class Tables:
    """The two current tables under ``<out>/tables``, local or through an object store."""

    def __init__(
        self, root: str, storage_options: Mapping[str, str] | None = None, *, local: bool = False
    ) -> None:
        self.root = root.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.local = local

    @classmethod
    def of(cls, output: Output) -> Tables:
        """The tables of an output folder or URI."""
        if output.local is not None:
            return cls(str(output.local.resolve() / "tables"), local=True)
        return cls(f"{output.uri.rstrip('/')}/tables", _storage_options(output))

    def _owner_only(self) -> None:
        """Local tables are owner-only like the rest of the output (unless files are shared):
        their folder is made so before deltalake writes, its files tightened after."""
        if not self.local or not private_files():
            return
        make_dirs(Path(self.root), private=True)
        for folder, dirs, files in os.walk(self.root):
            for name in dirs:
                os.chmod(os.path.join(folder, name), PRIVATE_DIR_MODE)
            for name in files:
                os.chmod(os.path.join(folder, name), PRIVATE_FILE_MODE)

    def uri(self, name: str) -> str:
        """Where one table lives."""
        return f"{self.root}/{name}"

    def open(self, name: str) -> DeltaTable | None:
        """The table's latest version, or None while no run has written it."""
        try:
            return DeltaTable(self.uri(name), storage_options=self.storage_options or None)
        except TableNotFoundError:
            return None
        except (DeltaError, OSError) as exc:
            raise TablesError(f"cannot open the {name} table: {_one_line(exc)}") from None

    def read(self, name: str, sql_where: str | None = None) -> pa.Table:
        """A whole table (or the rows matching a SQL condition) as Arrow; empty if absent."""
        table = self.open(name)
        schema = TRANSCRIPTS_SCHEMA if name == TRANSCRIPTS else SEGMENTS_SCHEMA
        if table is None:
            return schema.empty_table()
        return _query(table, f"SELECT * FROM t{f' WHERE {sql_where}' if sql_where else ''}")

    def check_metadata(self, metadata: pa.Schema) -> None:
        """Refuse, before anything is paid, manifest columns the transcripts table cannot hold."""
        table = self.open(TRANSCRIPTS)
        if table is None:
            return
        target = pa.schema(table.schema().to_arrow())
        for field in metadata:
            if field.name in target.names and not _fits(field.type, target.field(field.name).type):
                raise SchemaDriftError(
                    f"manifest column {field.name!r} is {field.type} but the transcripts table "
                    f"holds {target.field(field.name).type}: rename the column or keep its type"
                )

    def count(self, name: str) -> int | None:
        """Rows in a table now, or None while no run has written it."""
        table = self.open(name)
        if table is None:
            return None
        return int(_query(table, "SELECT count(*) AS n FROM t").column("n")[0].as_py())

    def _create(self, name: str, schema: pa.Schema) -> None:
        """An empty table with the PHI-free statistics setting; a no-op once it exists."""
        write_deltalake(
            self.uri(name),
            schema.empty_table(),
            mode="ignore",
            configuration={"delta.dataSkippingStatsColumns": _STATS[name]},
            storage_options=self.storage_options or None,
        )

    def _fresh(self, name: str, schema: pa.Schema) -> DeltaTable:
        table = self.open(name)
        if table is None:
            self._create(name, schema)
            table = self.open(name)
        assert table is not None
        return table

    def merge_run(
        self, transcripts: Sequence[Mapping[str, Any]], segments: Sequence[Mapping[str, Any]]
    ) -> Merged:
        """MERGE one run's completed files: one transaction per table, only what changed."""
        if not transcripts:
            return Merged()
        started = time.monotonic()
        self._owner_only()
        source = _transcripts_table(transcripts)
        changed = _retrying(lambda: self._merge_transcripts(source))
        current = self._current_requests([str(r["file_id"]) for r in transcripts])
        wanted = [s for s in segments if current.get(str(s["file_id"])) == s["request_id"]]
        added, removed = _retrying(lambda: self._merge_segments(wanted, set(current)))
        self._owner_only()
        return Merged(changed, added, removed, round(time.monotonic() - started, 4))

    def _merge_transcripts(self, source: pa.Table) -> int:
        table = self._fresh(TRANSCRIPTS, TRANSCRIPTS_SCHEMA)
        source = _changed(_conform(source, table), table)
        if not source.num_rows:
            return 0
        updates = {name: f"s.{_quote(name)}" for name in source.schema.names}
        updates["flow_run_id"] = (
            "CASE WHEN s.request_id = t.request_id THEN t.flow_run_id ELSE s.flow_run_id END"
        )
        metrics = (
            table.merge(
                source,
                "t.file_id = s.file_id",
                source_alias="s",
                target_alias="t",
                merge_schema=True,
            )
            .when_matched_update(updates)
            .when_not_matched_insert_all()
            .execute()
        )
        return int(metrics["num_target_rows_inserted"]) + int(metrics["num_target_rows_updated"])

    def _current_requests(self, file_ids: Sequence[str]) -> dict[str, str]:
        """file_id → request_id of the transcript the table now holds, for these files."""
        table = self.open(TRANSCRIPTS)
        if table is None:
            return {}
        wanted = set(file_ids)
        rows = _query(table, "SELECT file_id, request_id FROM t").to_pylist()
        return {r["file_id"]: r["request_id"] for r in rows if r["file_id"] in wanted}

    def _merge_segments(
        self, wanted: Sequence[Mapping[str, Any]], file_ids: set[str]
    ) -> tuple[int, int]:
        """Insert the current transcripts' missing segments, drop other transcripts' ones."""
        table = self._fresh(SEGMENTS, SEGMENTS_SCHEMA)
        keys = _query(table, "SELECT file_id, request_id, segment_index FROM t").to_pylist()
        present = {(k["file_id"], k["request_id"], k["segment_index"]) for k in keys}
        current = {(str(s["file_id"]), str(s["request_id"])) for s in wanted}
        new = [
            s for s in wanted if (s["file_id"], s["request_id"], s["segment_index"]) not in present
        ]
        stale = [
            k
            for k in keys
            if k["file_id"] in file_ids and (k["file_id"], k["request_id"]) not in current
        ]
        if not new and not stale:
            return 0, 0
        source = _segments_source(new, stale)
        inserted = {name: f"s.{_quote(name)}" for name in SEGMENTS_SCHEMA.names}
        metrics = (
            table.merge(source, _SEGMENT_KEY, source_alias="s", target_alias="t")
            .when_matched_delete("s.op = 'delete'")
            .when_not_matched_insert(inserted, "s.op = 'insert'")
            .execute()
        )
        return int(metrics["num_target_rows_inserted"]), int(metrics["num_target_rows_deleted"])

    def delete_files(self, file_ids: Iterable[str]) -> tuple[int, int]:
        """Delete these files' rows from both tables, then VACUUM so their bytes are gone."""
        ids = pa.table({"file_id": pa.array(sorted(set(file_ids)), pa.string())})
        counts = []
        for name in (TRANSCRIPTS, SEGMENTS):
            counts.append(_retrying(lambda name=name: self._delete(name, ids)))  # type: ignore[misc]
        self._owner_only()
        return counts[0], counts[1]

    def _delete(self, name: str, ids: pa.Table) -> int:
        """A MERGE-delete joined on file_id: the commit log names no id (a DELETE would)."""
        table = self.open(name)
        if table is None or not ids.num_rows:
            return 0
        metrics = (
            table.merge(ids, "t.file_id = s.file_id", source_alias="s", target_alias="t")
            .when_matched_delete()
            .execute()
        )
        table = self.open(name)
        assert table is not None
        table.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False)
        return int(metrics["num_target_rows_deleted"])

    def vacuum(self) -> int:
        """Remove every file no longer in the latest version; returns how many went."""
        removed = 0
        for name in (TRANSCRIPTS, SEGMENTS):
            table = self.open(name)
            if table is not None:
                removed += len(
                    table.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False)
                )
        return removed


def _query(table: DeltaTable, sql: str) -> pa.Table:
    """A SQL query over one Delta table (as ``t``), through DataFusion, as an Arrow table."""
    try:
        reader = QueryBuilder().register("t", table).execute(sql)
        return pa.table(reader.read_all())
    except Exception as exc:  # DataFusion's errors arrive as plain exceptions
        raise TablesError(f"cannot read a table: {_one_line(exc)}") from None


def _fits(source: pa.DataType, target: pa.DataType) -> bool:
    """A manifest column's values can go into a table column of ``target`` type."""
    if pa.types.is_dictionary(source):
        source = source.value_type
    if source == target or pa.types.is_null(source):
        return True
    kinds = (pa.types.is_integer, pa.types.is_floating, pa.types.is_string, pa.types.is_timestamp)
    if any(kind(source) and kind(target) for kind in kinds):
        return True
    if pa.types.is_large_string(source) and pa.types.is_string(target):
        return True
    return bool(pa.types.is_integer(source) and pa.types.is_floating(target))


def _quote(name: str) -> str:
    """A column name as a SQL identifier (manifest columns may hold any character)."""
    return '"' + name.replace('"', '""') + '"'


def _transcripts_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The base columns typed as declared, metadata columns as Arrow infers them."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    fields = {f.name: f for f in TRANSCRIPTS_SCHEMA}
    arrays, schema_fields = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            array = pa.array(values, type=fields[name].type if name in fields else None)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SchemaDriftError(
                f"transcripts column {name!r}: mixed value types ({type(exc).__name__})"
            ) from None
        if pa.types.is_null(array.type):
            array = array.cast(pa.string())
        arrays.append(array)
        schema_fields.append(pa.field(name, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(schema_fields))


def _conform(source: pa.Table, table: DeltaTable) -> pa.Table:
    """Cast the run's columns to the table's types, so a manifest's int column fits a long one."""
    target = pa.schema(table.schema().to_arrow())
    for index, field in enumerate(source.schema):
        if field.name not in target.names:
            continue
        wanted = target.field(field.name).type
        if field.type == wanted:
            continue
        try:
            source = source.set_column(index, field.name, source.column(index).cast(wanted))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise SchemaDriftError(
                f"manifest column {field.name!r} is {field.type} but the transcripts table "
                f"holds {wanted}: rename the column or keep its type"
            ) from None
    return source


def _changed(source: pa.Table, table: DeltaTable) -> pa.Table:
    """Only the rows that are new or differ from the table (the run's flow id aside)."""
    names = [n for n in source.schema.names if n not in ("flow_run_id", "text")]
    target_names = set(pa.schema(table.schema().to_arrow()).names)
    if set(names) - target_names:
        return source  # new metadata columns: every row gains them
    columns = ", ".join(_quote(n) for n in names)
    existing = {_row_key(r, names) for r in _query(table, f"SELECT {columns} FROM t").to_pylist()}
    keep = [
        i
        for i, r in enumerate(source.select(names).to_pylist())
        if _row_key(r, names) not in existing
    ]
    return source.take(pa.array(keep, pa.int64())) if len(keep) < source.num_rows else source


def _row_key(row: Mapping[str, Any], names: Sequence[str]) -> tuple[Any, ...]:
    """A hashable form of a row (lists as tuples)."""
    return tuple(tuple(v) if isinstance(v, list) else v for v in (row.get(n) for n in names))


def _segments_source(
    new: Sequence[Mapping[str, Any]], stale: Sequence[Mapping[str, Any]]
) -> pa.Table:
    """Segments to insert and keys to delete, told apart by an ``op`` column."""
    rows = [{**s, "op": "insert"} for s in new]
    rows += [{**{n: None for n in SEGMENTS_SCHEMA.names}, **k, "op": "delete"} for k in stale]
    schema = SEGMENTS_SCHEMA.append(pa.field("op", pa.string()))
    return pa.Table.from_pylist(rows, schema=schema)
