"""Read a batch manifest (CSV, JSON Lines or Parquet) into typed rows, failing early and clearly."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import posixpath
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.registry import known_implementations

from .dataset import FILES_SCHEMA, PARTITION_COLUMN
from .errors import ManifestError

__all__ = [
    "FORMATS",
    "RESERVED_COLUMNS",
    "Manifest",
    "ManifestError",
    "ManifestRow",
    "derive_file_id",
    "read_manifest",
]

# The log's columns, its partition, and the one column only the transcripts table adds.
RESERVED_COLUMNS: frozenset[str] = frozenset({*FILES_SCHEMA.names, PARTITION_COLUMN, "text"})
INPUT_COLUMNS = ("audio_path", "file_id", "mime_type")

Format = Literal["csv", "jsonl", "parquet"]
FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_RESERVED_FOLDED = frozenset(name.casefold() for name in RESERVED_COLUMNS)
_SHOWN_NAMES, _SHOWN_DUPLICATES, _CLIP = 8, 5, 40


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row as the pipeline needs it: identity, where its audio is, its metadata."""

    index: int
    file_id: str
    audio_path: str
    location: str
    mime_type: str | None
    metadata: dict[str, Any]
    problem: str | None


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: its rows, the metadata schema to carry through, and its identity."""

    source: str
    rows: list[ManifestRow]
    metadata_schema: pa.Schema
    renamed: dict[str, str]
    sha256: str


@dataclass(frozen=True)
class _Table:
    """Column names, column values and arrow types (None: infer from the values) of one file."""

    names: list[str]
    columns: list[list[Any]]
    types: list[pa.DataType | None]


def read_manifest(source: str) -> Manifest:
    """Parse a manifest so that every whole-file problem surfaces here, before any upload."""
    kind = _format_of(source)
    data, base = _read_source(source)
    name = _display_name(source)
    table = _PARSERS[kind](data, name)
    table = _drop_unnamed(table, name)
    _check_columns(table, name, kind)
    if not table.columns[0]:
        raise ManifestError(f"{name} has no rows; add one row per audio file")
    metadata_names, renamed = _metadata_names(table.names)
    schema = _metadata_schema(table, metadata_names, name)
    rows = _build_rows(table, metadata_names, base)
    _check_duplicate_ids(rows, name)
    return Manifest(source, rows, schema, renamed, hashlib.sha256(data).hexdigest())


def derive_file_id(audio_path: str) -> str:
    """A readable id that stays the same across runs and differs between audio paths."""
    digest = hashlib.sha256(audio_path.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    stem = posixpath.splitext(posixpath.basename(audio_path.replace("\\", "/").rstrip("/")))[0]
    return f"{stem}-{digest}" if stem.strip() else digest


# --- locating and reading the manifest file ---------------------------------------------------


def _format_of(source: str) -> Format:
    """The extension decides the parser, so a mislabelled file fails loudly rather than oddly."""
    suffix = PurePosixPath(source).suffix.lower()
    if suffix not in FORMATS:
        accepted = ", ".join(FORMATS)
        raise ManifestError(
            f"cannot tell the manifest format of {source!r} from its extension; "
            f"name it with one of {accepted}"
        )
    return FORMATS[suffix]


def _display_name(source: str) -> str:
    """The manifest's file name, enough to point at it in a message."""
    return PurePosixPath(source).name or source


def _protocol(location: str) -> str | None:
    """The URI scheme, lower-cased, or None for a plain path."""
    match = _URI.match(location)
    return match.group(1).lower() if match else None


def _file_uri_path(uri: str) -> str:
    """A file:// URI's local path (RFC 8089: percent-decoded), or ValueError if it names a host."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"file URI {uri!r} names host {parts.netloc!r}; "
            "write file:///absolute/path or a plain path"
        )
    return unquote(parts.path)


def _backend_missing(protocol: str) -> str | None:
    """Why fsspec cannot open this protocol here (a missing package), or None if it can."""
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        return str(exc)
    return None


def _install_hint(protocol: str, what: str, missing: str) -> str:
    """A sentence naming the package to install for an fsspec protocol."""
    spec = known_implementations.get(protocol, {})
    package = str(spec.get("class", "")).split(".")[0]
    fix = f"run `pip install {package}`" if package and package != "fsspec" else "install it"
    return (
        f"{what}: {protocol}:// needs a package that is not installed ({missing}); "
        f"{fix} in the invox-batch environment"
    )


def _read_source(source: str) -> tuple[bytes, str]:
    """The manifest's bytes and the base (folder or parent URI) its relative paths resolve to."""
    protocol = _protocol(source)
    if protocol is None or protocol == "file":
        try:
            local = _file_uri_path(source) if protocol else source
        except ValueError as exc:
            raise ManifestError(str(exc)) from None
        path = Path(local).expanduser().absolute()
        return _read_local(path), str(path.parent)
    prefix = source[: len(protocol) + 3]
    return _read_remote(source, protocol), prefix + posixpath.dirname(source[len(prefix) :])


def _read_local(path: Path) -> bytes:
    """Read a local manifest, turning OS errors into one actionable sentence."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except IsADirectoryError:
        raise ManifestError(
            f"{path} is a directory; give the manifest file itself (.csv, .jsonl or .parquet)"
        ) from None
    except PermissionError:
        raise ManifestError(
            f"cannot read manifest {path}: permission denied; make it readable by the user "
            "running invox-batch"
        ) from None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None


def _read_remote(source: str, protocol: str) -> bytes:
    """Read a manifest through fsspec, naming the package to install when a backend is missing."""
    try:
        missing = _backend_missing(protocol)
    except ValueError:
        raise ManifestError(
            f"cannot read manifest {source}: unknown URI scheme '{protocol}://'"
        ) from None
    if missing:
        raise ManifestError(_install_hint(protocol, f"cannot read manifest {source}", missing))
    try:
        with fsspec.open(source, "rb") as handle:
            return bytes(handle.read())
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {source}") from None
    except IsADirectoryError:
        raise ManifestError(f"{source} is a directory; give the manifest file itself") from None
    except PermissionError:
        raise ManifestError(f"cannot read manifest {source}: permission denied") from None
    except Exception as exc:  # remote backends raise their own exception types
        raise ManifestError(f"cannot read manifest {source}: {type(exc).__name__}: {exc}") from None


# --- parsing the three formats -----------------------------------------------------------------


def _decode_text(data: bytes, name: str) -> str:
    """UTF-8 (BOM optional), or a message that says how to re-save the file."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ManifestError(f"{name} is UTF-16 text; re-save it as UTF-8 (in Excel: 'CSV UTF-8')")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ManifestError(
            f"{name} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "re-save it as UTF-8 (in Excel: 'CSV UTF-8')"
        ) from None
    return text.removeprefix("\ufeff")


def _parse_csv(data: bytes, name: str) -> _Table:
    """Every cell as the string written (empty → None); the first line is the header."""
    text = _decode_text(data, name)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            header=None,
            dtype=object,
            na_filter=False,
            keep_default_na=False,
            skip_blank_lines=True,
            engine="c",
        )
    except pd.errors.EmptyDataError:
        raise ManifestError(
            f"{name} is empty; its first line must be a header naming audio_path"
        ) from None
    except (pd.errors.ParserError, ValueError) as exc:
        reason = str(exc).strip().removeprefix("Error tokenizing data. C error: ")
        raise ManifestError(
            f"{name} is not valid CSV ({reason}); "
            "quote cells that contain commas, quotes or line breaks"
        ) from None
    records = frame.to_numpy(dtype=object).tolist()
    header = [str(cell) for cell in records[0]]
    body = [[_csv_cell(cell) for cell in record] for record in records[1:]]
    body = [record for record in body if any(cell is not None for cell in record)]
    columns = [list(values) for values in zip(*body, strict=True)] if body else [[] for _ in header]
    return _Table(header, columns, [pa.string()] * len(header))


def _csv_cell(cell: Any) -> str | None:
    """Empty cells (and those missing from short rows) are None; the rest stays as written."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)) or cell == "":
        return None
    return str(cell)


def _parse_jsonl(data: bytes, name: str) -> _Table:
    """One JSON object per line; keys in first-seen order; nested values kept as JSON text."""
    text = _decode_text(data, name)
    names: dict[str, None] = {}
    records: list[dict[str, Any]] = []
    # Only "\n" ends a record: str.splitlines would also split on U+2028 inside JSON strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            record = _json_object(line, number, name)
            names.update(dict.fromkeys(record))
            records.append(record)
    if not records:
        raise ManifestError(f"{name} is empty; write one JSON object per line with an audio_path")
    columns = [[_json_scalar(record.get(key)) for record in records] for key in names]
    return _Table(list(names), columns, [None] * len(names))


def _json_object(line: str, number: int, name: str) -> dict[str, Any]:
    """Parse one JSONL line into an object, or say which line is wrong and why."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:
        reason = (
            exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or "too deeply nested"
        )
        raise ManifestError(
            f"{name} line {number} is not valid JSON ({reason}); each line must be one JSON object"
        ) from None
    if not isinstance(value, dict):
        raise ManifestError(
            f"{name} line {number} is a JSON {type(value).__name__}, not an object; each line must "
            'be one JSON object such as {"audio_path": "a.wav"}'
        )
    return value


def _json_scalar(value: Any) -> Any:
    """Scalars keep their JSON type; objects and arrays become compact JSON text (stable schema)."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def _parse_parquet(data: bytes, name: str) -> _Table:
    """Columns with their Parquet types, so typed metadata stays typed."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ManifestError(f"{name} is not a readable Parquet file ({exc})") from None
    columns = [column.to_pylist() for column in table.columns]
    return _Table(list(table.column_names), columns, list(table.schema.types))


_PARSERS = {"csv": _parse_csv, "jsonl": _parse_jsonl, "parquet": _parse_parquet}


# --- columns -----------------------------------------------------------------------------------


def _clip(name: str) -> str:
    """A column name or id short and unambiguous enough for a one-line message."""
    shown = name if len(name) <= _CLIP else name[: _CLIP - 1] + "…"
    if not name or name != name.strip() or not name.isprintable():
        return repr(shown)
    return shown


def _preview(names: Sequence[str]) -> str:
    """The first few names, clipped, for 'found: …' in a message."""
    shown = ", ".join(_clip(n) for n in names[:_SHOWN_NAMES])
    return shown + (", …" if len(names) > _SHOWN_NAMES else "")


def _drop_unnamed(table: _Table, name: str) -> _Table:
    """Drop empty unnamed columns (a trailing comma); refuse unnamed columns that hold data."""
    keep = []
    for position, (column_name, values) in enumerate(zip(table.names, table.columns, strict=True)):
        if column_name.strip():
            keep.append(position)
        elif any(value is not None for value in values):
            raise ManifestError(
                f"column {position + 1} of {name} has values but no name; name it in the header"
            )
    return _Table(
        [table.names[i] for i in keep],
        [table.columns[i] for i in keep],
        [table.types[i] for i in keep],
    )


def _check_columns(table: _Table, name: str, kind: Format) -> None:
    """audio_path must exist and no column may appear twice."""
    repeated = sorted(n for n, count in Counter(table.names).items() if count > 1)
    if repeated:
        raise ManifestError(
            f"{name} has repeated column names ({_preview(repeated)}); "
            "give every column a unique name"
        )
    if "audio_path" in table.names:
        return
    where = {
        "csv": "the first line must be a header",
        "jsonl": "every line needs an audio_path key",
    }
    hint = _column_hint(table.names) or where.get(kind, "add an audio_path column")
    raise ManifestError(
        f"no audio_path column in {name} (found: {_preview(table.names) or 'nothing'}); {hint}"
    )


def _column_hint(names: Sequence[str]) -> str | None:
    """Spot the usual near misses: a wrong separator, or audio_path misspelled by case or spaces."""
    for column in names:
        if "audio_path" in column.lower() and (";" in column or "\t" in column):
            separator = "';'" if ";" in column else "tabs"
            return f"the file seems separated by {separator}; save it comma-separated"
        if column.strip().lower().replace(" ", "_") == "audio_path":
            return f"rename the column {_clip(column)} to audio_path"
    return None


def _metadata_names(names: Sequence[str]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(original, output) metadata names, renaming those that shadow an output column in any case."""
    # Case-insensitive because DuckDB resolves column names that way.
    metadata = [n for n in names if n not in INPUT_COLUMNS]
    taken = {n.casefold() for n in names} | _RESERVED_FOLDED
    pairs, renamed = [], {}
    for column in metadata:
        output = column
        if column.casefold() in _RESERVED_FOLDED:
            output = _free_name(f"manifest_{column}", taken)
            taken.add(output.casefold())
            renamed[column] = output
        pairs.append((column, output))
    return pairs, renamed


def _free_name(wanted: str, taken: set[str]) -> str:
    """wanted, or wanted_2, wanted_3, … whichever no other column uses."""
    candidate, counter = wanted, 1
    while candidate.casefold() in taken:
        counter += 1
        candidate = f"{wanted}_{counter}"
    return candidate


def _metadata_schema(table: _Table, pairs: Sequence[tuple[str, str]], name: str) -> pa.Schema:
    """Arrow types of the metadata columns under their output names, in manifest order."""
    fields = []
    for original, output in pairs:
        position = table.names.index(original)
        declared = table.types[position]
        type_ = (
            declared
            if declared is not None
            else _infer_type(table.columns[position], original, name)
        )
        fields.append(pa.field(output, type_, nullable=True))
    return pa.schema(fields)


def _infer_type(values: list[Any], column: str, name: str) -> pa.DataType:
    """One arrow type for a JSON column, or a message naming the column's mixed types."""
    try:
        return pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError) as exc:
        kinds = sorted({_json_kind(v) for v in values if v is not None})
        found = ", ".join(kinds) if len(kinds) > 1 else str(exc)
        raise ManifestError(
            f"column {_clip(column)} of {name} cannot be stored as one type ({found}); "
            "give every value of a column the same JSON type, or null"
        ) from None


def _json_kind(value: Any) -> str:
    """The JSON type's name, as a person writing the file would call it."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "number"
    return "text" if isinstance(value, str) else type(value).__name__


# --- rows --------------------------------------------------------------------------------------


def _build_rows(table: _Table, pairs: Sequence[tuple[str, str]], base: str) -> list[ManifestRow]:
    """One ManifestRow per record; row-level problems are recorded, never raised."""
    by_name = dict(zip(table.names, table.columns, strict=True))
    count = len(table.columns[0])
    empty: list[Any] = [None] * count
    paths, ids, mimes = (by_name.get(column, empty) for column in INPUT_COLUMNS)
    protocols = _protocol_status(paths)
    rows = []
    for index in range(count):
        metadata = {output: by_name[original][index] for original, output in pairs}
        rows.append(_row(index, paths[index], ids[index], mimes[index], metadata, base, protocols))
    return rows


def _protocol_status(paths: Sequence[Any]) -> dict[str, bool]:
    """Which URI schemes fsspec knows; a known scheme whose package is missing stops the run."""
    counts: defaultdict[str, int] = defaultdict(int)
    for value in paths:
        protocol = _protocol(value) if isinstance(value, str) else None
        if protocol and protocol != "file":
            counts[protocol] += 1
    known = {}
    for protocol, rows in counts.items():
        try:
            missing = _backend_missing(protocol)
        except ValueError:
            known[protocol] = False
            continue
        if missing:
            what = f"{rows} audio_path value{'s' if rows > 1 else ''} cannot be read"
            raise ManifestError(_install_hint(protocol, what, missing))
        known[protocol] = True
    return known


def _row(
    index: int,
    raw_path: Any,
    raw_id: Any,
    raw_mime: Any,
    metadata: dict[str, Any],
    base: str,
    protocols: dict[str, bool],
) -> ManifestRow:
    """Validate one record's input cells and resolve where its audio lives."""
    audio_path, problem = _audio_path(raw_path)
    location = ""
    if problem is None:
        location, problem = _resolve(audio_path, base, protocols)
    file_id, id_problem = _file_id(raw_id, audio_path, index)
    mime_type, mime_problem = _text_cell(raw_mime, "mime_type")
    return ManifestRow(
        index=index,
        file_id=file_id,
        audio_path=audio_path,
        location=location,
        mime_type=mime_type,
        metadata=metadata,
        problem=problem or id_problem or mime_problem,
    )


def _valid_text(value: str) -> bool:
    """Text Parquet can store: no lone surrogates (which JSON escapes can smuggle in)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _audio_path(value: Any) -> tuple[str, str | None]:
    """The audio_path as written, and why it cannot be used, if it cannot."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "", "audio_path is empty; fill in the audio file's path or remove the row"
    if not isinstance(value, str):
        return str(
            value
        ), f"audio_path must be text, not {type(value).__name__} ({_clip(str(value))})"
    if not _valid_text(value) or "\x00" in value:
        shown = value.encode("utf-8", "backslashreplace").decode()
        return (
            shown,
            f"audio_path {_clip(shown)} contains an invalid character; fix it in the manifest",
        )
    return value, None


def _resolve(audio_path: str, base: str, protocols: dict[str, bool]) -> tuple[str, str | None]:
    """Absolute local path for plain paths and file://, the URI itself for other schemes."""
    protocol = _protocol(audio_path)
    if protocol == "file":
        try:
            return os.path.abspath(_file_uri_path(audio_path)), None
        except ValueError as exc:
            return "", str(exc)
    if protocol is not None:
        if not protocols.get(protocol, False):
            return "", (
                f"audio_path {_clip(audio_path)} uses an unknown URI scheme '{protocol}://'; "
                "use a local path, file:// or an fsspec URI such as s3://"
            )
        return audio_path, None
    if os.path.isabs(audio_path):
        return os.path.normpath(audio_path), None
    base_protocol = _protocol(base)
    if base_protocol is None:
        return os.path.abspath(os.path.join(base, audio_path)), None
    prefix = f"{base_protocol}://"
    return prefix + posixpath.normpath(posixpath.join(base[len(prefix) :], audio_path)), None


def _file_id(value: Any, audio_path: str, index: int) -> tuple[str, str | None]:
    """The given id (text or whole number), else one derived from audio_path (or the row)."""
    fallback = derive_file_id(audio_path) if audio_path.strip() else f"row-{index + 1}"
    if value is None or (isinstance(value, str) and not value.strip()):
        return fallback, None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and _valid_text(value):
        return value, None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    return fallback, f"file_id must be text or a whole number, not {_clip(str(value))}"


def _text_cell(value: Any, column: str) -> tuple[str | None, str | None]:
    """An optional text cell: None when empty, a problem when it is not text."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, str) and _valid_text(value):
        return value, None
    return None, f"{column} must be text, not {_clip(str(value))}"


def _check_duplicate_ids(rows: Sequence[ManifestRow], name: str) -> None:
    """Ids key the output and the idempotency ledger, so they must be unique."""
    positions: defaultdict[str, list[int]] = defaultdict(list)
    for row in rows:
        positions[row.file_id].append(row.index + 1)
    duplicates = [(file_id, at) for file_id, at in positions.items() if len(at) > 1]
    if not duplicates:
        return
    shown = "; ".join(
        f"{_clip(file_id)} (rows {', '.join(map(str, at[:5]))}{', …' if len(at) > 5 else ''})"
        for file_id, at in duplicates[:_SHOWN_DUPLICATES]
    )
    more = len(duplicates) - _SHOWN_DUPLICATES
    suffix = f" and {more} more" if more > 0 else ""
    raise ManifestError(
        f"duplicate file_id in {name}: {shown}{suffix}; give every row a unique file_id "
        "(ids derived from audio_path repeat when the same audio_path is listed twice)"
    )
