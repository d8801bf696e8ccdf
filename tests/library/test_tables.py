"""The current tables: one row per file after reruns, changed audio, races; S3 through moto."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from invox_batch.errors import SchemaDriftError
from invox_batch.output import Output
from invox_batch.tables import SEGMENTS, TRANSCRIPTS, Tables, split_run

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _row(
    file_id: str, request_id: str, *, minutes: int = 0, run: str = "run-1", **meta: Any
) -> dict[str, Any]:
    """A completed files row with its text, as the flow hands it to ``split_run``."""
    return {
        "file_id": file_id,
        "audio_identity": f"id-{request_id}",
        "sha256": f"sha-{request_id}",
        "request_id": request_id,
        "status": "completed",
        "n_segments": 2,
        "duration_s": 3.0,
        "completed_at": T0 + dt.timedelta(minutes=minutes),
        "api_version": "2025-10-01",
        "quality": [],
        "flow_run_id": run,
        "text": f"words of {request_id}",
        "from_cache": False,
        **meta,
    }


def _merge(tables: Tables, rows: list[dict[str, Any]], meta: tuple[str, ...] = ()) -> Any:
    segments = [
        [(0.0, 1.0, f"{r['request_id']} one"), (1.0, 2.0, f"{r['request_id']} two")] for r in rows
    ]
    _, transcripts, segment_rows = split_run(rows, segments, meta)
    return tables.merge_run(transcripts, segment_rows)


def _current(tables: Tables) -> dict[str, str]:
    return {r["file_id"]: r["request_id"] for r in tables.read(TRANSCRIPTS).to_pylist()}


def _segments(tables: Tables) -> list[tuple[str, str, int]]:
    rows = tables.read(SEGMENTS).to_pylist()
    return sorted((r["file_id"], r["request_id"], r["segment_index"]) for r in rows)


def test_split_run_keeps_text_out_of_the_log_rows() -> None:
    failed = {**_row("b", "r2"), "status": "failed", "text": None}
    log, transcripts, segments = split_run([_row("a", "r1"), failed], [[(0, 1, "x")], []], ())
    assert all("text" not in r for r in log) and len(log) == 2
    assert [t["file_id"] for t in transcripts] == ["a"] and transcripts[0]["text"] == "words of r1"
    assert [s["file_id"] for s in segments] == ["a"]


def test_reruns_leave_one_row_per_file_and_change_nothing(tmp_path: Path) -> None:
    tables = Tables.of(Output.parse(str(tmp_path)))
    first = _merge(tables, [_row("a", "r1"), _row("b", "r2")])
    assert first.transcripts == 2 and first.segments_added == 4
    version = tables.open(TRANSCRIPTS).version()  # type: ignore[union-attr]
    again = _merge(tables, [_row("a", "r1", run="run-2"), _row("b", "r2", run="run-2")])
    assert again.transcripts == 0 and again.segments_added == 0
    assert tables.open(TRANSCRIPTS).version() == version  # type: ignore[union-attr]
    rows = tables.read(TRANSCRIPTS).to_pylist()
    assert len(rows) == 2 and {r["flow_run_id"] for r in rows} == {"run-1"}  # who fetched it


def test_changed_audio_replaces_the_transcript_and_exactly_its_segments(tmp_path: Path) -> None:
    tables = Tables.of(Output.parse(str(tmp_path)))
    _merge(tables, [_row("a", "r1"), _row("b", "r2")])
    _merge(tables, [{**_row("a", "r9", minutes=5, run="run-2"), "n_segments": 1}])
    assert _current(tables) == {"a": "r9", "b": "r2"}
    assert _segments(tables) == [("a", "r9", 0), ("a", "r9", 1), ("b", "r2", 0), ("b", "r2", 1)]
    row = next(r for r in tables.read(TRANSCRIPTS).to_pylist() if r["file_id"] == "a")
    assert row["text"] == "words of r9" and row["flow_run_id"] == "run-2"


def test_new_metadata_updates_in_place_and_new_columns_are_added(tmp_path: Path) -> None:
    tables = Tables.of(Output.parse(str(tmp_path)))
    _merge(tables, [_row("a", "r1", patient_ref="P-1")], ("patient_ref",))
    _merge(tables, [_row("a", "r1", patient_ref="P-2", run="run-2")], ("patient_ref",))
    _merge(tables, [_row("b", "r2", clinic=3)], ("clinic",))
    rows = {r["file_id"]: r for r in tables.read(TRANSCRIPTS).to_pylist()}
    assert rows["a"]["patient_ref"] == "P-2" and rows["a"]["flow_run_id"] == "run-1"
    assert rows["b"]["clinic"] == 3 and rows["a"]["clinic"] is None
    with pytest.raises(SchemaDriftError, match="'clinic'"):
        _merge(tables, [_row("c", "r3", clinic="not a number")], ("clinic",))


def test_concurrent_writers_lose_no_row(tmp_path: Path) -> None:
    tables = Tables.of(Output.parse(str(tmp_path)))
    errors: list[BaseException] = []

    def shard(n: int) -> None:
        try:
            _merge(tables, [_row(f"s{n}-{i}", f"r{n}-{i}", run=f"shard-{n}") for i in range(5)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=shard, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(_current(tables)) == 20 and len(_segments(tables)) == 40


def test_delete_files_and_vacuum_leave_no_byte_of_the_text(tmp_path: Path) -> None:
    tables = Tables.of(Output.parse(str(tmp_path)))
    _merge(tables, [_row("a", "r1"), _row("b", "r2")])
    _merge(tables, [_row("a", "r7", minutes=3)])
    assert tables.delete_files(["a"]) == (1, 2)
    assert _current(tables) == {"b": "r2"}
    for path in (tmp_path / "tables").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert (
                b"words of r1" not in data and b"words of r7" not in data and b"r1 one" not in data
            )
    assert any(b"words of r2" in p.read_bytes() for p in (tmp_path / "tables").rglob("*.parquet"))


def test_the_readers_the_readme_shows_read_the_tables(tmp_path: Path) -> None:
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    tables = Tables.of(Output.parse(str(tmp_path)))
    _merge(tables, [_row("a", "r1", clinic="x"), _row("b", "r2", clinic="y")], ("clinic",))
    _merge(tables, [_row("a", "r3", minutes=9, clinic="x")], ("clinic",))
    path = tmp_path / "tables"
    current = DeltaTable(str(path / "transcripts")).to_pandas()
    assert sorted(current["request_id"]) == ["r2", "r3"]
    assert pl.read_delta(str(path / "segments")).height == 4
    transcripts = DeltaTable(str(path / "transcripts")).to_pyarrow_dataset()  # noqa: F841
    assert duckdb.sql("select count(*) from transcripts").fetchall() == [(2,)]
    assert len(DeltaTable(str(path / "transcripts"), version=1).to_pandas()) == 2


def test_a_manifest_column_the_table_cannot_hold_is_refused_up_front(tmp_path: Path) -> None:
    tables = Tables.of(Output.parse(str(tmp_path)))
    tables.check_metadata(pa.schema([("clinic", pa.string())]))  # no table yet: anything goes
    _merge(tables, [_row("a", "r1", clinic=3, site="x")], ("clinic", "site"))
    tables.check_metadata(
        pa.schema([("clinic", pa.int32()), ("site", pa.null()), ("new", pa.bool_())])
    )
    with pytest.raises(SchemaDriftError, match="manifest column 'clinic' is string"):
        tables.check_metadata(pa.schema([("clinic", pa.string())]))
