"""The Parquet dataset on real files: schema, drift, atomic replace, permissions, readers."""

from __future__ import annotations

import datetime
import json
import stat
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from invox_batch.dataset import (
    FILES_SCHEMA,
    SCHEMA_VERSION,
    SchemaDriftError,
    files_schema,
    read_files,
    write_run,
)
from invox_batch.files import atomic_write

UTC = datetime.UTC
T0 = datetime.datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
DAY1, DAY2 = datetime.date(2025, 3, 1), datetime.date(2025, 3, 2)
RUN_A, RUN_B = "0b9d6a52-1111-4c3e-9a57-aaaaaaaaaaaa", "0b9d6a52-2222-4c3e-9a57-bbbbbbbbbbbb"
NO_METADATA = pa.schema([])


def file_row(file_id: str, run: str = RUN_A, index: int = 0, **changes: Any) -> dict[str, Any]:
    """A completed files row with every base column, overridable per test."""
    row: dict[str, Any] = {
        "file_id": file_id,
        "row_index": index,
        "audio_path": f"/audio/{file_id}.wav",
        "sha256": "ab" * 32,
        "audio_identity": "cd" * 20,
        "bytes": 123_456,
        "mime_type": "audio/wav",
        "duration_s": 4.25,
        "status": "completed",
        "error_type": None,
        "error_message": None,
        "request_id": f"req-{file_id}",
        "n_segments": 1,
        "attempts": 1,
        "from_cache": False,
        "submitted_at": T0,
        "completed_at": T0 + datetime.timedelta(seconds=30),
        "api_version": "2025-11-01",
        "flow_run_id": run,
        "quality": [],
    }
    row.update(changes)
    return row


def parts(out: Path) -> list[str]:
    """Every file under out, hidden ones included, relative and sorted."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def query(sql: str) -> duckdb.DuckDBPyRelation:
    """A DuckDB relation for a SELECT (never None, unlike a statement's)."""
    relation = duckdb.sql(sql)
    assert relation is not None
    return relation


def mode(path: Path) -> int:
    """Permission bits only."""
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def manifest_schema(tmp_path: Path) -> pa.Schema:
    """Metadata columns as a real Parquet manifest yields them: typed, with pandas metadata."""
    manifest = pa.table(
        {
            "patient_ref": pa.array(["P-1", "P-2"]),
            "site": pa.array([7, 8], pa.int64()),
            "visit_date": pa.array([DAY1, DAY2], pa.date32()),
            "notes": pa.array([None, None], pa.null()),
        }
    ).replace_schema_metadata({b"pandas": b"{}"})
    path = tmp_path / "manifest.parquet"
    pq.write_table(manifest, path)
    return pq.read_schema(path)


def with_metadata(row: dict[str, Any], **values: Any) -> dict[str, Any]:
    """A files row plus the manifest's metadata columns."""
    defaults = {"patient_ref": "P-1", "site": 7, "visit_date": DAY1, "notes": None}
    return {**row, **defaults, **values}


def test_schema_is_explicit_and_versioned_in_the_file(
    tmp_path: Path, manifest_schema: pa.Schema
) -> None:
    rows = [with_metadata(file_row("a"))]
    written = write_run(tmp_path, RUN_A, DAY1, rows, manifest_schema)

    expected = files_schema(manifest_schema)
    stored = pq.read_schema(written.files_path)
    assert stored.equals(expected, check_metadata=True)
    assert stored.metadata[b"invox_batch.schema_version"] == SCHEMA_VERSION.encode()
    assert json.loads(stored.metadata[b"invox_batch.metadata_columns"]) == [
        "patient_ref",
        "site",
        "visit_date",
        "notes",
    ]
    assert "text" not in stored.names  # the log keeps operations; transcripts live in the tables
    assert FILES_SCHEMA.names[:3] == ["file_id", "row_index", "audio_path"]
    assert FILES_SCHEMA.names[-3:] == ["api_version", "flow_run_id", "quality"]
    assert expected.names == [*FILES_SCHEMA.names, "patient_ref", "site", "visit_date", "notes"]
    assert expected.field("submitted_at").type == pa.timestamp("us", tz="UTC")
    assert expected.field("notes").type == pa.string()  # all-null manifest column
    assert not expected.field("file_id").nullable and expected.field("sha256").nullable
    assert files_schema(NO_METADATA).equals(FILES_SCHEMA, check_metadata=True)
    assert written.files_path == tmp_path / "files" / "run_date=2025-03-01" / f"{RUN_A}.parquet"
    assert written.rows == 1


def test_metadata_columns_and_types_read_back_with_pyarrow_and_duckdb(
    tmp_path: Path, manifest_schema: pa.Schema
) -> None:
    rows = [
        with_metadata(file_row("a", index=0)),
        with_metadata(file_row("b", index=1), patient_ref="P-2", site=8, visit_date=DAY2),
    ]
    write_run(tmp_path, RUN_A, DAY1, rows, manifest_schema)

    table = read_files(tmp_path)
    assert table.column("site").to_pylist() == [7, 8]
    assert table.schema.field("site").type == pa.int64()
    assert table.column("visit_date").to_pylist() == [DAY1, DAY2]
    assert table.schema.field("run_date").type == pa.date32()
    assert table.column("run_date").to_pylist() == [DAY1, DAY1]
    assert table.column("completed_at").to_pylist()[0] == T0 + datetime.timedelta(seconds=30)

    hive = ds.dataset(tmp_path / "files", format="parquet", partitioning="hive").to_table()
    assert hive.num_rows == 2 and "run_date" in hive.column_names

    pattern = f"{tmp_path}/files/*/*.parquet"
    rel = query(f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true)")
    types = dict(zip(rel.columns, [str(t) for t in rel.types], strict=True))
    assert types["run_date"] == "DATE"
    assert types["site"] == "BIGINT" and types["visit_date"] == "DATE"
    assert types["completed_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["quality"] == "VARCHAR[]"
    assert sorted(r[0] for r in rel.select("patient_ref").fetchall()) == ["P-1", "P-2"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bytes": "Jane Doe"}, "column 'bytes' row 0: expected an integer"),
        ({"attempts": 1.5}, "column 'attempts' row 0: expected an integer"),
        ({"duration_s": "long"}, "column 'duration_s' row 0: expected a number"),
        ({"request_id": 42}, "column 'request_id' row 0: expected a string"),
        ({"text": "a transcript"}, r"unknown columns \['text'\]"),
        ({"from_cache": 1}, "column 'from_cache': values do not convert"),
        ({"surprise": 1}, r"unknown columns \['surprise'\]"),
        ({"audio_path": None}, "'audio_path' is not nullable"),
        ({"status": "done"}, "'status' has values outside"),
        ({"flow_run_id": RUN_B}, "flow_run_id other than"),
        ({"quality": "noisy"}, "column 'quality' row 0: expected a list"),
    ],
)
def test_drift_fails_loudly_before_anything_is_written(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(SchemaDriftError, match=message) as caught:
        write_run(tmp_path, RUN_A, DAY1, [file_row("a", **change)], NO_METADATA)
    assert "Jane Doe" not in str(caught.value)  # values (PHI) never reach the message
    assert not (tmp_path / "files").exists()


def test_a_missing_column_fails(tmp_path: Path) -> None:
    row = file_row("a")
    del row["request_id"]
    with pytest.raises(SchemaDriftError, match=r"missing columns \['request_id'\]"):
        write_run(tmp_path, RUN_A, DAY1, [row], NO_METADATA)


def test_metadata_type_drift_and_name_clash_fail(
    tmp_path: Path, manifest_schema: pa.Schema
) -> None:
    with pytest.raises(SchemaDriftError, match="column 'site' row 0: expected an integer"):
        write_run(tmp_path, RUN_A, DAY1, [with_metadata(file_row("a"), site="7")], manifest_schema)
    with pytest.raises(SchemaDriftError, match="clash"):
        files_schema(pa.schema([("status", pa.string())]))
    with pytest.raises(SchemaDriftError, match="clash"):
        files_schema(pa.schema([("run_date", pa.string())]))


def test_naive_datetime_is_rejected(tmp_path: Path) -> None:
    naive = datetime.datetime(2025, 3, 1, 9, 0)
    with pytest.raises(SchemaDriftError, match="'completed_at' row 0: naive datetime"):
        write_run(tmp_path, RUN_A, DAY1, [file_row("a", completed_at=naive)], NO_METADATA)


def test_aware_datetimes_are_stored_as_utc_instants(tmp_path: Path) -> None:
    madrid = datetime.datetime(2025, 3, 1, 10, 0, tzinfo=ZoneInfo("Europe/Madrid"))
    write_run(tmp_path, RUN_A, DAY1, [file_row("a", submitted_at=madrid)], NO_METADATA)
    stored = read_files(tmp_path).column("submitted_at").to_pylist()[0]
    assert stored == T0 and stored.utcoffset() == datetime.timedelta(0)


def test_quality_defaults_to_an_empty_list(tmp_path: Path) -> None:
    row = file_row("a")
    del row["quality"]
    write_run(tmp_path, RUN_A, DAY1, [row, file_row("b", quality=["short_audio"])], NO_METADATA)
    assert read_files(tmp_path).column("quality").to_pylist() == [[], ["short_audio"]]


def test_rewrite_of_the_same_run_replaces_then_moves_without_duplicates(tmp_path: Path) -> None:
    write_run(tmp_path, RUN_A, DAY1, [file_row("a")], NO_METADATA)
    write_run(tmp_path, RUN_B, DAY1, [file_row("z", run=RUN_B)], NO_METADATA)
    retried = [file_row("a", attempts=2), file_row("b", index=1)]
    write_run(tmp_path, RUN_A, DAY1, retried, NO_METADATA)
    assert sorted(read_files(tmp_path).column("file_id").to_pylist()) == ["a", "b", "z"]

    moved = write_run(tmp_path, RUN_A, DAY2, retried, NO_METADATA)
    files = read_files(tmp_path)
    assert sorted(files.column("file_id").to_pylist()) == ["a", "b", "z"]
    run_a_dates = files.filter(pc.equal(files["flow_run_id"], RUN_A))["run_date"]
    assert set(run_a_dates.to_pylist()) == {DAY2}
    assert parts(tmp_path) == [
        f"files/run_date=2025-03-01/{RUN_B}.parquet",
        f"files/run_date=2025-03-02/{RUN_A}.parquet",
    ]
    assert moved.files_path.name == f"{RUN_A}.parquet"


def test_failed_rewrite_keeps_the_previous_part_and_leaves_no_temp(tmp_path: Path) -> None:
    written = write_run(tmp_path, RUN_A, DAY1, [file_row("a")], NO_METADATA)
    before = written.files_path.read_bytes()
    bad = [file_row("a"), file_row("b", index=1, bytes="not a number")]
    with pytest.raises(SchemaDriftError):
        write_run(tmp_path, RUN_A, DAY2, bad, NO_METADATA)
    assert written.files_path.read_bytes() == before
    assert parts(tmp_path) == [
        f"files/run_date=2025-03-01/{RUN_A}.parquet",
    ]


def test_crash_during_the_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "part.parquet"
    target.write_bytes(b"old")

    def crash(handle: BinaryIO) -> None:
        handle.write(b"half a file")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["part.parquet"]

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "new.parquet", crash)
    assert [p.name for p in tmp_path.iterdir()] == ["part.parquet"]


def test_readers_ignore_hidden_temp_files(tmp_path: Path) -> None:
    written = write_run(tmp_path, RUN_A, DAY1, [file_row("a")], NO_METADATA)
    (written.files_path.parent / f".{RUN_B}.parquet.tmp-0123abcd").write_bytes(b"PAR1 partial")
    assert read_files(tmp_path).num_rows == 1
    pattern = f"{tmp_path}/files/*/*.parquet"
    count = query(f"SELECT count(*) FROM read_parquet('{pattern}', hive_partitioning = true)")
    assert count.fetchall() == [(1,)]


def test_private_by_default(tmp_path: Path, umask_022: None) -> None:
    out = tmp_path / "out"
    written = write_run(out, RUN_A, DAY1, [file_row("a")], NO_METADATA)
    assert mode(written.files_path) == 0o600
    for directory in (out, out / "files", written.files_path.parent):
        assert mode(directory) == 0o700


def test_existing_directories_keep_their_mode_and_public_follows_umask(
    tmp_path: Path, umask_022: None
) -> None:
    out = tmp_path / "shared"
    out.mkdir(mode=0o755)
    written = write_run(out, RUN_A, DAY1, [file_row("a")], NO_METADATA, private=False)
    assert mode(out) == 0o755
    assert mode(written.files_path) == 0o644
    assert mode(written.files_path.parent) == 0o755
    private = write_run(out, RUN_A, DAY1, [file_row("a")], NO_METADATA)
    assert mode(private.files_path) == 0o600  # a replaced part takes the new mode


def test_runs_with_different_manifest_columns_read_as_one_table(tmp_path: Path) -> None:
    write_run(tmp_path, RUN_A, DAY1, [file_row("a")], NO_METADATA)
    site = pa.schema([("site", pa.int64())])
    write_run(tmp_path, RUN_B, DAY2, [{**file_row("b", run=RUN_B), "site": 3}], site)
    table = read_files(tmp_path)
    assert table.column("site").to_pylist() == [None, 3]


def test_reading_an_empty_output_gives_the_schema(tmp_path: Path) -> None:
    table = read_files(tmp_path / "nothing-yet")
    assert table.num_rows == 0
    assert table.column_names == [*FILES_SCHEMA.names, "run_date"]


@pytest.mark.parametrize("flow_run_id", ["../escape", ".hidden", "a/b", ""])
def test_unsafe_flow_run_ids_are_refused(tmp_path: Path, flow_run_id: str) -> None:
    with pytest.raises(ValueError, match="flow_run_id"):
        write_run(tmp_path, flow_run_id, DAY1, [], NO_METADATA)


def test_run_date_must_be_a_date(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="run_date"):
        write_run(tmp_path, RUN_A, T0, [file_row("a")], NO_METADATA)
