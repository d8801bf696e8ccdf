"""The per-run log: schema as code, atomic per-run part files, hive-partitioned by run date.

Layout: ``<out>/files/run_date=YYYY-MM-DD/<flow_run_id>.parquet``, one row per manifest row per
run: operations, never transcript text (that lives in the current tables, ``tables.py``). One
part file per flow run, so a retry of the same flow run replaces its part (even across a date
change) and never duplicates rows.
"""

from __future__ import annotations

import datetime
import json
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .errors import SchemaDriftError
from .failpoints import failpoint
from .files import atomic_write, make_dirs, sweep_stale_temps
from .output import Output
from .records import Outcome


class _Row(Protocol):
    """What a ``files`` row takes from its manifest row (a ``ManifestRow``)."""

    @property
    def index(self) -> int: ...
    @property
    def file_id(self) -> str: ...
    @property
    def audio_path(self) -> str: ...
    @property
    def metadata(self) -> Mapping[str, Any]: ...


class _Audio(Protocol):
    """What a ``files`` row takes from the local checks (an ``AudioCheck``)."""

    @property
    def sha256(self) -> str | None: ...
    @property
    def bytes(self) -> int | None: ...
    @property
    def mime_type(self) -> str | None: ...
    @property
    def duration_s(self) -> float | None: ...


SCHEMA_VERSION = "1"
VERSION_KEY = b"invox_batch.schema_version"
METADATA_COLUMNS_KEY = b"invox_batch.metadata_columns"
PARTITION_COLUMN = "run_date"
STATUSES = frozenset({"completed", "failed"})
_UTC_US = pa.timestamp("us", tz="UTC")
# Parquet names list items "element"; naming them so here makes a read-back schema compare equal.
_STRING_LIST = pa.list_(pa.field("element", pa.string()))
_PART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _field(name: str, type_: pa.DataType, nullable: bool = True) -> pa.Field:
    """Shorthand so the schemas below read as a table of columns."""
    return pa.field(name, type_, nullable=nullable)


def _with_version(schema: pa.Schema, metadata_columns: Sequence[str] = ()) -> pa.Schema:
    """Stamp the schema version (and metadata column names) into the Parquet footer."""
    return schema.with_metadata(
        {
            VERSION_KEY: SCHEMA_VERSION.encode(),
            METADATA_COLUMNS_KEY: json.dumps(list(metadata_columns)).encode(),
        }
    )


_FILES_FIELDS = [
    _field("file_id", pa.string(), nullable=False),
    _field("row_index", pa.int32(), nullable=False),
    _field("audio_path", pa.string(), nullable=False),
    _field("sha256", pa.string()),
    _field("audio_identity", pa.string()),
    _field("bytes", pa.int64()),
    _field("mime_type", pa.string()),
    _field("duration_s", pa.float64()),
    _field("status", pa.string(), nullable=False),
    _field("error_type", pa.string()),
    _field("error_message", pa.string()),
    _field("request_id", pa.string()),
    _field("n_segments", pa.int32()),
    _field("attempts", pa.int32(), nullable=False),
    _field("from_cache", pa.bool_(), nullable=False),
    _field("submitted_at", _UTC_US),
    _field("completed_at", _UTC_US),
    _field("api_version", pa.string(), nullable=False),
    _field("flow_run_id", pa.string(), nullable=False),
    _field("quality", _STRING_LIST),
]
FILES_SCHEMA: pa.Schema = _with_version(pa.schema(_FILES_FIELDS))

# Columns a row may leave out, and the value they then get.
_FILES_DEFAULTS: dict[str, Any] = {"quality": []}


@dataclass(frozen=True)
class WrittenRun:
    """Where one flow run's part file landed, and how many rows it holds."""

    files_path: Path
    rows: int


def _metadata_field(field: pa.Field) -> pa.Field:
    """A manifest column as stored: nullable, plain types (all-null and dictionary → values)."""
    type_ = field.type
    if pa.types.is_null(type_):
        type_ = pa.string()
    elif pa.types.is_dictionary(type_):
        type_ = type_.value_type
    return pa.field(field.name, type_, nullable=True)


def files_schema(metadata_schema: pa.Schema) -> pa.Schema:
    """The files schema for one manifest: base columns, then its metadata columns by name."""
    names = list(metadata_schema.names)
    reserved = {*FILES_SCHEMA.names, PARTITION_COLUMN}
    clashes = sorted(set(names) & reserved)
    if clashes:
        raise SchemaDriftError(f"manifest metadata columns clash with dataset columns: {clashes}")
    if len(set(names)) != len(names):
        raise SchemaDriftError("manifest metadata has duplicate column names")
    extra = [_metadata_field(field) for field in metadata_schema]
    return _with_version(pa.schema([*_FILES_FIELDS, *extra]), names)


def _check_columns(rows: Sequence[Mapping[str, Any]], schema: pa.Schema, table: str) -> None:
    """Every row carries exactly the schema's columns (bar defaulted ones), so drift is loud."""
    expected = set(schema.names)
    optional = set(_FILES_DEFAULTS) if table == "files" else set()
    for index, row in enumerate(rows):
        keys = set(row)
        unknown, missing = sorted(keys - expected), sorted(expected - keys - optional)
        if unknown or missing:
            raise SchemaDriftError(
                f"{table} row {index}: unknown columns {unknown}, missing columns {missing}"
            )


def _value_check(type_: pa.DataType) -> Callable[[Any], str | None]:
    """What pyarrow would accept silently but we refuse (floats truncated to ints, naive times),
    as one check per column type, so a large run does not re-inspect the type per value."""
    if pa.types.is_integer(type_):
        return _not_integer
    if pa.types.is_floating(type_):
        return _not_number
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return _not_string
    if pa.types.is_list(type_):
        return _not_list
    if pa.types.is_timestamp(type_) and type_.tz is not None:
        return _not_aware_datetime
    return _anything


def _not_integer(value: Any) -> str | None:
    if value is None or (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        return None
    return f"expected an integer, got {type(value).__name__}"


def _not_number(value: Any) -> str | None:
    if value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
        return None
    return f"expected a number, got {type(value).__name__}"


def _not_string(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return None
    return f"expected a string, got {type(value).__name__}"


def _not_list(value: Any) -> str | None:
    if value is None or isinstance(value, list | tuple):
        return None
    return f"expected a list, got {type(value).__name__}"  # a str would split into letters


def _not_aware_datetime(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime.datetime):
        return f"expected a datetime, got {type(value).__name__}"
    if value.utcoffset() is None:
        return "naive datetime; pass a timezone-aware UTC datetime"
    return None


def _anything(value: Any) -> str | None:
    return None


def _column(values: list[Any], field: pa.Field, table: str) -> pa.Array:
    """One column as Arrow, failing with the column and row but without the offending value."""
    check = _value_check(field.type)
    for index, value in enumerate(values):
        problem = check(value)
        if problem:
            raise SchemaDriftError(f"{table} column {field.name!r} row {index}: {problem}")
    try:
        array = pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        # pyarrow's message may quote the value (PHI): keep only its kind.
        raise SchemaDriftError(
            f"{table} column {field.name!r}: values do not convert to {field.type} "
            f"({type(exc).__name__})"
        ) from None
    if not field.nullable and array.null_count:
        raise SchemaDriftError(f"{table} column {field.name!r} is not nullable but has nulls")
    return array


def _to_table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema, table: str) -> pa.Table:
    """Rows → Arrow table of exactly ``schema``; any drift raises before anything is written."""
    _check_columns(rows, schema, table)
    defaults = _FILES_DEFAULTS if table == "files" else {}
    arrays = []
    for field in schema:
        default = defaults.get(field.name)
        values = [row.get(field.name, default) for row in rows]
        if default is not None:
            values = [default if value is None else value for value in values]
        arrays.append(_column(values, field, table))
    return pa.Table.from_arrays(arrays, schema=schema)


def _check_run_values(files: pa.Table, flow_run_id: str) -> None:
    """Statuses are known ones and every row belongs to the flow run the part is named after."""
    unknown = set(files.column("status").to_pylist()) - STATUSES
    if unknown:
        raise SchemaDriftError(f"files column 'status' has values outside {sorted(STATUSES)}")
    if set(files.column("flow_run_id").to_pylist()) - {flow_run_id}:
        raise SchemaDriftError("files rows carry a flow_run_id other than the run's")


def _part_name(flow_run_id: str) -> str:
    """The part file name, refusing ids that could escape the partition or hide the file."""
    if not _PART_NAME.fullmatch(flow_run_id):
        raise ValueError(
            "flow_run_id must be letters, digits, '.', '_' or '-', not starting with '.'"
        )
    return f"{flow_run_id}.parquet"


def write_parquet(path: Path, table: pa.Table, *, private: bool | None) -> None:
    """One part file, atomically; zstd because every reader we serve supports it."""

    def write(handle: BinaryIO) -> None:
        pq.write_table(table, handle, compression="zstd")
        failpoint("write_parquet")  # written but not yet renamed into place

    atomic_write(path, write, private=private)


def _remove_other_dates(root: Path, name: str, keep: Path) -> None:
    """Drop this run's parts under other run_date partitions, so a retry never duplicates."""
    for part in root.glob(f"{PARTITION_COLUMN}=*/{name}"):
        if part != keep:
            part.unlink(missing_ok=True)


def file_row(
    row: _Row,
    check: _Audio,
    outcome: Outcome,
    flow_run_id: str,
    api_version: str,
    identity: str | None = None,
) -> dict[str, Any]:
    """One ``files`` row: identity, local facts, outcome, then the manifest's metadata (no text:
    a completed row's transcript is the current table's row with this file_id and request_id)."""
    return {
        "file_id": row.file_id,
        "row_index": row.index,
        "audio_path": row.audio_path,
        "sha256": check.sha256,
        "audio_identity": identity,
        "bytes": check.bytes,
        "mime_type": check.mime_type,
        "duration_s": check.duration_s,
        "status": outcome.status,
        "error_type": outcome.error_type,
        "error_message": outcome.error_message,
        "request_id": outcome.request_id,
        "n_segments": len(outcome.segments) if outcome.status == "completed" else 0,
        "attempts": outcome.attempts,
        "from_cache": outcome.from_cache,
        "submitted_at": outcome.submitted_at,
        "completed_at": outcome.completed_at,
        "api_version": api_version,
        "flow_run_id": flow_run_id,
        "quality": [],
        **row.metadata,
    }


def write_run(
    out: str | Path,
    flow_run_id: str,
    run_date: datetime.date,
    file_rows: Sequence[Mapping[str, Any]],
    metadata_schema: pa.Schema,
    *,
    private: bool | None = None,
) -> WrittenRun:
    """Write (or replace) one flow run's log part; validation precedes any I/O."""
    if isinstance(run_date, datetime.datetime) or not isinstance(run_date, datetime.date):
        raise TypeError("run_date must be a datetime.date (not a datetime)")
    name = _part_name(flow_run_id)
    files = _to_table(file_rows, files_schema(metadata_schema), "files")
    _check_run_values(files, flow_run_id)
    root, partition = Path(out), f"{PARTITION_COLUMN}={run_date.isoformat()}"
    make_dirs(root, private=private)
    files_path = root / "files" / partition / name
    write_parquet(files_path, files, private=private)
    _remove_other_dates(root / "files", name, files_path)
    sweep_stale_temps(root, f"*/{PARTITION_COLUMN}=*/.*.parquet.tmp-*")
    return WrittenRun(files_path, files.num_rows)


def _read(root: Path, base: pa.Schema, sort_keys: Sequence[str]) -> pa.Table:
    """A whole hive-partitioned table, columns unified across runs (manifests may differ)."""
    partition_schema = pa.schema([(PARTITION_COLUMN, pa.date32())])
    partitioning = ds.partitioning(partition_schema, flavor="hive")
    empty = pa.unify_schemas([base, partition_schema]).empty_table()
    if not root.is_dir():
        return empty
    dataset = ds.dataset(root, format="parquet", partitioning=partitioning)
    schemas = [fragment.physical_schema for fragment in dataset.get_fragments()]
    if not schemas:
        return empty
    unified = pa.unify_schemas([*schemas, partition_schema], promote_options="permissive")
    dataset = ds.dataset(root, format="parquet", partitioning=partitioning, schema=unified)
    return dataset.to_table().sort_by([(key, "ascending") for key in sort_keys])


def read_files(out: str | Path) -> pa.Table:
    """The whole files dataset with its run_date column; hidden temp files are never read."""
    return _read(Path(out) / "files", FILES_SCHEMA, (PARTITION_COLUMN, "flow_run_id", "row_index"))


def log_parts(output: Output) -> list[str]:
    """Every per-run part of an output (local paths or paths inside its filesystem), sorted."""
    if output.local is not None:
        return sorted(str(p) for p in output.local.glob(f"files/{PARTITION_COLUMN}=*/*.parquet"))
    return sorted(
        str(p) for p in output.fs.glob(f"{output.root}/files/{PARTITION_COLUMN}=*/*.parquet")
    )


def read_part(output: Output, part: str) -> pa.Table:
    """One part as written (no partition column)."""
    if output.local is not None:
        return pq.read_table(part, partitioning=None)
    with output.fs.open(part, "rb") as handle:
        return pq.read_table(handle, partitioning=None)


def replace_part(output: Output, part: str, table: pa.Table) -> None:
    """Rewrite one part atomically: a local rename, or one all-or-nothing object PUT."""
    if output.local is not None:
        write_parquet(Path(part), table, private=None)
        return
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    output.fs.pipe_file(part, sink.getvalue().to_pybytes())
