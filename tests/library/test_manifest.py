"""read_manifest: formats, paths, ids, metadata and every whole-manifest error, on real files."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invox_batch.manifest import (
    RESERVED_COLUMNS,
    Manifest,
    ManifestError,
    derive_file_id,
    read_manifest,
)

from ..conftest import SAMPLES


def write_csv(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    """A UTF-8 CSV written the standard way (quoting as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def error_of(source: Path | str) -> str:
    """The ManifestError message read_manifest raises for source."""
    with pytest.raises(ManifestError) as caught:
        read_manifest(str(source))
    return str(caught.value)


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A private folder on fsspec's in-process memory filesystem, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/t-{uuid.uuid4().hex}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


# --- the committed sample and plain CSV --------------------------------------------------------


def test_committed_sample_manifest_reads_eight_good_rows() -> None:
    source = SAMPLES / "manifest.csv"
    manifest = read_manifest(str(source))
    assert len(manifest.rows) == 8
    assert all(row.problem is None for row in manifest.rows)
    assert manifest.metadata_schema.names == ["clinic", "recorded_on", "reference_text"]
    assert all(field.type == pa.string() for field in manifest.metadata_schema)
    assert [row.file_id for row in manifest.rows] == [f"visit-00{i}" for i in range(1, 9)]
    assert [row.index for row in manifest.rows] == list(range(8))
    assert all(Path(row.location).is_file() for row in manifest.rows)
    assert manifest.rows[6].location == str(SAMPLES.resolve() / "visit-007.flac")
    assert manifest.rows[0].metadata["clinic"] == "cardiology"
    assert manifest.renamed == {}
    assert manifest.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert manifest.source == str(source)


def test_cells_stay_exactly_as_written_and_empty_cells_are_none(tmp_path: Path) -> None:
    rows = [
        ["audio_path", "mrn", "note", "mime_type"],
        ["a.wav", "000123", "  padded  ", ""],
        ["b.wav", "", "NA", "audio/flac"],
    ]
    manifest = read_manifest(str(write_csv(tmp_path / "m.csv", rows)))
    first, second = manifest.rows
    assert first.metadata == {"mrn": "000123", "note": "  padded  "}
    assert second.metadata == {"mrn": None, "note": "NA"}
    assert (first.mime_type, second.mime_type) == (None, "audio/flac")


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffaudio_path,clinic\r\na.wav,cardiología\r\nb.wav,x\r\n".encode())
    manifest = read_manifest(str(path))
    assert [row.audio_path for row in manifest.rows] == ["a.wav", "b.wav"]
    assert manifest.metadata_schema.names == ["clinic"]
    assert manifest.rows[0].metadata == {"clinic": "cardiología"}


def test_quoted_cells_keep_commas_quotes_and_line_breaks(tmp_path: Path) -> None:
    note = 'says "hi", then\r\nleaves'
    manifest = read_manifest(
        str(write_csv(tmp_path / "m.csv", [["audio_path", "note"], ["a.wav", note]]))
    )
    assert manifest.rows[0].metadata["note"] == note


def test_rows_with_only_empty_cells_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("audio_path,clinic\na.wav,x\n,\n\nb.wav,y\n,,\n".replace(",,\n", ",\n"))
    assert [row.audio_path for row in read_manifest(str(path)).rows] == ["a.wav", "b.wav"]


def test_a_one_megabyte_metadata_cell_is_carried_through(tmp_path: Path) -> None:
    big = "é" * 500_000 + "x" * 100_000
    path = write_csv(tmp_path / "m.csv", [["audio_path", "notes"], ["a.wav", big], ["b.wav", "s"]])
    manifest = read_manifest(str(path))
    assert manifest.rows[0].metadata["notes"] == big
    assert manifest.rows[1].metadata["notes"] == "s"


def test_trailing_unnamed_empty_column_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("audio_path,clinic,\na.wav,x,\n")
    assert read_manifest(str(path)).metadata_schema.names == ["clinic"]


# --- whole-manifest errors ---------------------------------------------------------------------


def test_non_utf8_csv_names_the_line_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("audio_path,clinic\na.wav,x\nb.wav,Cardiología\n".encode("cp1252"))
    message = error_of(path)
    assert "not UTF-8" in message
    assert "line 3" in message
    assert "re-save it as UTF-8" in message


def test_utf16_csv_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "u16.csv"
    path.write_bytes("audio_path\na.wav\n".encode("utf-16"))
    assert "UTF-16" in error_of(path)


def test_headerless_csv_says_the_first_line_must_be_a_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [["visit-001.wav", "visit-001", "cardiology"]] * 2)
    message = error_of(path)
    assert message.startswith("no audio_path column in m.csv (found: visit-001.wav, visit-001")
    assert "the first line must be a header" in message


def test_semicolon_separated_csv_gets_a_separator_hint(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("audio_path;clinic\na.wav;x\n")
    assert "separated by ';'" in error_of(path)


def test_misspelt_audio_path_column_gets_a_rename_hint(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [["Audio Path", "clinic"], ["a.wav", "x"]])
    assert "rename the column Audio Path to audio_path" in error_of(path)


def test_header_only_and_empty_files_are_errors(tmp_path: Path) -> None:
    header_only = write_csv(tmp_path / "h.csv", [["audio_path", "clinic"]])
    assert "has no rows" in error_of(header_only)
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    assert "is empty" in error_of(empty)


def test_ragged_csv_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("audio_path,clinic\na.wav,x\nb.wav,y,extra\n")
    message = error_of(path)
    assert "not valid CSV" in message
    assert "line 3" in message


def test_repeated_and_unnamed_columns_are_errors(tmp_path: Path) -> None:
    repeated = write_csv(tmp_path / "r.csv", [["audio_path", "a", "a"], ["x.wav", "1", "2"]])
    assert "repeated column names (a)" in error_of(repeated)
    unnamed = write_csv(tmp_path / "u.csv", [["audio_path", ""], ["x.wav", "data"]])
    assert "column 2 of u.csv has values but no name" in error_of(unnamed)


def test_given_duplicate_ids_are_listed(tmp_path: Path) -> None:
    rows = [["audio_path", "file_id"]] + [[f"{i}.wav", f"id{i % 7}"] for i in range(14)]
    message = error_of(write_csv(tmp_path / "m.csv", rows))
    assert message.startswith("duplicate file_id in m.csv: id0 (rows 1, 8); id1 (rows 2, 9)")
    assert "and 2 more" in message
    assert "id5" not in message


def test_same_audio_path_twice_gives_duplicate_derived_ids(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [["audio_path"], ["a.wav"], ["b.wav"], ["a.wav"]])
    message = error_of(path)
    assert f"{derive_file_id('a.wav')} (rows 1, 3)" in message
    assert "same audio_path is listed twice" in message


def test_unknown_extension_names_the_accepted_ones(tmp_path: Path) -> None:
    path = tmp_path / "m.xlsx"
    path.write_bytes(b"PK")
    message = error_of(path)
    assert ".csv" in message and ".jsonl" in message and ".parquet" in message


def test_missing_manifest_and_directory(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.csv") == f"manifest not found: {tmp_path / 'nope.csv'}"
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    assert "is a directory" in error_of(folder)


def test_unreadable_manifest(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [["audio_path"], ["a.wav"]])
    path.chmod(0)
    try:
        path.read_bytes()
    except PermissionError:
        assert "permission denied" in error_of(path)
    else:
        pytest.skip("running with privileges that read any file (root): chmod cannot deny reads")
    finally:
        path.chmod(0o600)


# --- ids ---------------------------------------------------------------------------------------


def test_derived_ids_are_stable_readable_and_distinct(tmp_path: Path) -> None:
    rows = [["audio_path"], ["a/visit.wav"], ["b/visit.wav"], ["c.flac"]]
    path = write_csv(tmp_path / "m.csv", rows)
    first = [row.file_id for row in read_manifest(str(path)).rows]
    second = [row.file_id for row in read_manifest(str(path)).rows]
    assert first == second
    assert len(set(first)) == 3
    assert first[0].startswith("visit-") and first[1].startswith("visit-")
    assert (
        first[0]
        == derive_file_id("a/visit.wav")
        == f"visit-{hashlib.sha256(b'a/visit.wav').hexdigest()[:8]}"
    )
    assert first[2].startswith("c-")


def test_empty_id_cells_fall_back_to_derived_ids(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [["audio_path", "file_id"], ["a.wav", ""], ["b.wav", "B"]])
    assert [row.file_id for row in read_manifest(str(path)).rows] == [derive_file_id("a.wav"), "B"]


# --- paths -------------------------------------------------------------------------------------


def test_relative_absolute_and_file_uri_paths(tmp_path: Path) -> None:
    odd = tmp_path / "grabación de consulta 1.wav"
    rows = [
        ["audio_path"],
        ["a.wav"],
        ["../up.wav"],
        [str(tmp_path / "abs.wav")],
        [odd.as_uri()],
        ["file:///plain/with space.wav"],
        ["sub dir/ñandú.wav"],
    ]
    manifest = read_manifest(str(write_csv(tmp_path / "sub" / "m.csv", rows)))
    assert [row.location for row in manifest.rows] == [
        str(tmp_path / "sub" / "a.wav"),
        str(tmp_path / "up.wav"),
        str(tmp_path / "abs.wav"),
        str(odd),
        "/plain/with space.wav",
        str(tmp_path / "sub" / "sub dir" / "ñandú.wav"),
    ]
    assert manifest.rows[3].audio_path == odd.as_uri()
    assert all(row.problem is None for row in manifest.rows)


def test_manifest_given_as_file_uri_resolves_against_its_folder(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "my manifests" / "m.csv", [["audio_path"], ["a.wav"]])
    manifest = read_manifest(path.as_uri())
    assert manifest.rows[0].location == str(tmp_path / "my manifests" / "a.wav")


def test_row_level_path_problems_do_not_raise(tmp_path: Path) -> None:
    rows = [
        ["audio_path", "file_id", "note"],
        ["", "", "kept: it has a note"],
        ["   ", "blank", ""],
        ["foo://x/a.wav", "", ""],
        ["file://server/share/a.wav", "", ""],
        ["ok.wav", "", ""],
    ]
    manifest = read_manifest(str(write_csv(tmp_path / "m.csv", rows)))
    problems = [row.problem for row in manifest.rows]
    assert problems[0] is not None and "audio_path is empty" in problems[0]
    assert manifest.rows[0].file_id == "row-1"
    assert problems[1] is not None and manifest.rows[1].file_id == "blank"
    assert problems[2] is not None and "unknown URI scheme 'foo://'" in problems[2]
    assert problems[3] is not None and "names host 'server'" in problems[3]
    assert problems[4] is None


def test_memory_uri_manifest_resolves_relative_audio_against_its_parent(memory_root: str) -> None:
    source = f"memory:/{memory_root}/batch/m.csv"
    with fsspec.open(source, "w") as handle:
        handle.write(
            "audio_path,clinic\na.wav,x\n../shared/b.wav,y\n/abs/c.wav,z\nmemory://other/d.wav,w\n"
        )
    manifest = read_manifest(source)
    assert [row.location for row in manifest.rows] == [
        f"memory:/{memory_root}/batch/a.wav",
        f"memory:/{memory_root}/shared/b.wav",
        "/abs/c.wav",
        "memory://other/d.wav",
    ]
    assert manifest.source == source


def test_memory_uri_manifest_that_does_not_exist(memory_root: str) -> None:
    assert error_of(f"memory:/{memory_root}/none.csv").startswith("manifest not found: memory://")


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_missing_fsspec_backend_names_the_package(tmp_path: Path) -> None:
    assert error_of("s3://bucket/manifest.csv") == (
        "cannot read manifest s3://bucket/manifest.csv: s3:// needs a package that is not "
        "installed (Install s3fs to access S3); run `pip install s3fs` in the invox-batch environment"
    )
    path = write_csv(tmp_path / "m.csv", [["audio_path"], ["s3://b/a.wav"], ["s3://b/c.wav"]])
    message = error_of(path)
    assert message.startswith("2 audio_path values cannot be read: s3:// needs a package")
    assert "pip install s3fs" in message


# --- metadata columns --------------------------------------------------------------------------


def test_metadata_shadowing_output_columns_is_renamed(tmp_path: Path) -> None:
    rows = [
        ["audio_path", "status", "Text", "manifest_status", "file_id", "clinic"],
        ["a.wav", "draft", "t", "m", "A", "c"],
    ]
    manifest = read_manifest(str(write_csv(tmp_path / "m.csv", rows)))
    assert manifest.renamed == {"status": "manifest_status_2", "Text": "manifest_Text"}
    assert manifest.metadata_schema.names == [
        "manifest_status_2",
        "manifest_Text",
        "manifest_status",
        "clinic",
    ]
    assert manifest.rows[0].metadata == {
        "manifest_status_2": "draft",
        "manifest_Text": "t",
        "manifest_status": "m",
        "clinic": "c",
    }
    assert not set(manifest.metadata_schema.names) & RESERVED_COLUMNS


def test_jsonl_with_typed_metadata(tmp_path: Path) -> None:
    records: list[dict[str, Any]] = [
        {
            "audio_path": "a.wav",
            "file_id": 7,
            "age": 41,
            "score": 0.5,
            "consent": True,
            "tags": ["x"],
        },
        {
            "audio_path": "b.wav",
            "age": None,
            "score": 2,
            "consent": False,
            "extra": {"k": "v\u2028w"},
        },
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\r\n\r\n")
    manifest = read_manifest(str(path))
    schema = manifest.metadata_schema
    assert schema.names == ["age", "score", "consent", "tags", "extra"]
    assert [schema.field(n).type for n in schema.names] == [
        pa.int64(),
        pa.float64(),
        pa.bool_(),
        pa.string(),
        pa.string(),
    ]
    first, second = manifest.rows
    assert first.file_id == "7"
    assert first.metadata == {
        "age": 41,
        "score": 0.5,
        "consent": True,
        "tags": '["x"]',
        "extra": None,
    }
    assert second.metadata["extra"] == '{"k":"v\u2028w"}'


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    not_object = tmp_path / "a.ndjson"
    not_object.write_text('{"audio_path": "a.wav"}\n\n["b.wav"]\n')
    assert "line 3 is a JSON list, not an object" in error_of(not_object)
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"audio_path": "a.wav"}\n{"audio_path": \n')
    assert "line 2 is not valid JSON" in error_of(broken)
    mixed = tmp_path / "c.jsonl"
    mixed.write_text('{"audio_path": "a.wav", "age": 4}\n{"audio_path": "b.wav", "age": "old"}\n')
    assert "column age of c.jsonl cannot be stored as one type (number, text)" in error_of(mixed)


def test_jsonl_non_text_audio_path_is_a_row_problem(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"audio_path": 5}\n{"audio_path": "a.wav", "mime_type": 3}\n{"file_id": "x"}\n'
    )
    problems = [row.problem or "" for row in read_manifest(str(path)).rows]
    assert "audio_path must be text" in problems[0]
    assert "mime_type must be text" in problems[1]
    assert "audio_path is empty" in problems[2]


def test_parquet_keeps_metadata_types(tmp_path: Path) -> None:
    table = pa.table(
        {
            "file_id": pa.array([101, 102], pa.int32()),
            "audio_path": ["a.wav", "b.wav"],
            "visit": pa.array([1, 2], pa.int16()),
            "when": pa.array([0, 86_400_000_000], pa.timestamp("us", tz="UTC")),
            "codes": pa.array([["I10"], []], pa.list_(pa.string())),
            "clinic": pa.array(["a", "b"]).dictionary_encode(),
            "status": ["x", None],
        }
    )
    path = tmp_path / "m.parquet"
    pq.write_table(table, path)
    manifest = read_manifest(str(path))
    assert [row.file_id for row in manifest.rows] == ["101", "102"]
    schema = manifest.metadata_schema
    assert schema.names == ["visit", "when", "codes", "clinic", "manifest_status"]
    assert schema.field("visit").type == pa.int16()
    assert schema.field("when").type == pa.timestamp("us", tz="UTC")
    assert schema.field("codes").type == pa.list_(pa.string())
    assert manifest.rows[1].metadata["codes"] == []
    rebuilt = pa.Table.from_pylist([row.metadata for row in manifest.rows], schema=schema)
    assert rebuilt.column("when").equals(table.column("when"))


def test_parquet_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "g.pq"
    garbage.write_bytes(b"not parquet at all")
    assert "not a readable Parquet file" in error_of(garbage)
    no_path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"path": ["a.wav"]}), no_path)
    assert error_of(no_path).startswith("no audio_path column in n.parquet (found: path)")


# --- properties --------------------------------------------------------------------------------

_MANIFEST_NAMES = {name.casefold() for name in RESERVED_COLUMNS}
_column_name = st.text(min_size=1, max_size=12).filter(
    lambda n: bool(n.strip()) and n.casefold() not in _MANIFEST_NAMES
)


def _read_text(text: str, suffix: str = ".csv") -> Manifest | None:
    """read_manifest on text in a throwaway folder; None when it raised ManifestError."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"m{suffix}"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            return read_manifest(str(path))
        except ManifestError:
            return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), st.text().map(lambda t: "audio_path," + t)))
def test_arbitrary_csv_text_raises_nothing_but_manifest_error(text: str) -> None:
    _read_text(text)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([".csv", ".jsonl", ".parquet"]))
def test_arbitrary_bytes_raise_nothing_but_manifest_error(data: bytes, suffix: str) -> None:
    _read_text(data.decode("latin-1"), suffix)


@settings(max_examples=100, deadline=None)
@given(
    names=st.lists(_column_name, min_size=1, max_size=3, unique_by=str.casefold),
    data=st.data(),
)
def test_csv_ids_and_metadata_round_trip_unchanged(names: list[str], data: st.DataObject) -> None:
    count = data.draw(st.integers(min_value=1, max_value=6))
    ids = data.draw(st.lists(st.text(max_size=10), min_size=count, max_size=count, unique=True))
    cells = data.draw(
        st.lists(
            st.lists(st.text(max_size=20), min_size=len(names), max_size=len(names)),
            min_size=count,
            max_size=count,
        )
    )
    header = ["audio_path", "file_id", *names]
    rows = [[f"dir/a{i}.wav", ids[i], *cells[i]] for i in range(count)]
    with tempfile.TemporaryDirectory() as folder:
        path = write_csv(Path(folder) / "m.csv", [header, *rows])
        try:
            manifest = read_manifest(str(path))
        except ManifestError as exc:
            assert "duplicate file_id" in str(exc)  # a given id may equal another row's derived one
            return
    assert manifest.metadata_schema.names == names
    for row, written, given_id, values in zip(manifest.rows, rows, ids, cells, strict=True):
        assert row.audio_path == written[0]
        assert row.problem is None
        assert row.file_id == (given_id if given_id.strip() else derive_file_id(written[0]))
        assert row.metadata == {
            n: (v if v != "" else None) for n, v in zip(names, values, strict=True)
        }
