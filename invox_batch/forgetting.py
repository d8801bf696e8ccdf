"""Erasure that sticks: ``invox-batch forget`` removes files' transcripts from every place.

The tables (DELETE, then VACUUM so the bytes are gone), the captions, the ledger (its results,
with a tombstone left so a rerun neither transcribes nor pays again unless forced), the
callback store, and the per-run log parts that name the files (rewritten atomically). Files
sharing a forgotten file's audio are forgotten with it: they hold the same transcript. What it
did is counted, never quoted, and appended to ``<out>/forgotten.jsonl``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from .callbacks._store import CallbackStore
from .captions import safe_stem
from .dataset import log_parts, read_part, replace_part
from .errors import InvoxBatchError
from .ledger import Ledger
from .output import Output
from .tables import SEGMENTS, TRANSCRIPTS, Tables

__all__ = ["ForgetError", "Forgot", "forget"]

AUDIT_FILE = "forgotten.jsonl"
_CAPTION_SUFFIXES = (".vtt", ".srt")


class ForgetError(InvoxBatchError):
    """Nothing to forget by, or a ``--where`` that is not a condition on the data."""


@dataclass(frozen=True)
class Forgot:
    """Counts of what went (or would go, in a dry run): never an id, never a value."""

    dry_run: bool
    files: int
    audio: int
    transcripts: int
    segments: int
    captions: int
    ledger_records: int
    callbacks: int
    log_rows: int
    log_parts: int

    def line(self) -> str:
        """One line for the operator."""
        verb = "would forget" if self.dry_run else "forgot"
        return (
            f"{verb} {self.files} files ({self.audio} audio): {self.transcripts} transcripts, "
            f"{self.segments} segments, {self.captions} caption files, {self.ledger_records} "
            f"ledger transcripts, {self.callbacks} callbacks, {self.log_rows} log rows in "
            f"{self.log_parts} parts"
        )


def _matching(con: duckdb.DuckDBPyConnection, table: pa.Table, where: str) -> set[str] | None:
    """file_ids of rows matching ``where``; None when the condition does not apply here."""
    con.register("candidate", table)
    try:
        rows = con.execute(f"SELECT DISTINCT file_id FROM candidate WHERE ({where})").fetchall()
    except duckdb.Error:
        return None
    finally:
        con.unregister("candidate")
    return {str(r[0]) for r in rows}


def _selected(file_ids: Sequence[str], where: str | None, tables: Sequence[pa.Table]) -> set[str]:
    """The ids named, plus those of every row (table or log) matching the ``--where`` condition."""
    chosen = set(file_ids)
    if where is None:
        return chosen
    applied = 0
    with duckdb.connect() as con:
        con.execute("SET enable_external_access = false")  # a condition, not a file reader
        for table in tables:
            found = _matching(con, table, where)
            if found is not None:
                applied += 1
                chosen |= found
    if not applied:
        columns = sorted({n for t in tables for n in t.column_names})
        raise ForgetError(
            "--where is not a SQL condition on these columns: " + ", ".join(columns[:40])
        )
    return chosen


def _same_audio(chosen: set[str], rows: Iterable[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """The chosen files plus every file sharing their audio, and those audio identities."""
    rows = list(rows)
    identities = {r["audio_identity"] for r in rows if r["file_id"] in chosen}
    shas = {r["sha256"] for r in rows if r["file_id"] in chosen}
    identities.discard(None)
    shas.discard(None)
    files = set(chosen)
    files |= {
        r["file_id"] for r in rows if r["audio_identity"] in identities or r["sha256"] in shas
    }
    identities |= {r["audio_identity"] for r in rows if r["file_id"] in files}
    identities.discard(None)
    return files, identities


def _keys(table: pa.Table) -> list[dict[str, Any]]:
    """The identifying columns of a table's rows (missing ones as None)."""
    names = ("file_id", "audio_identity", "sha256", "request_id")
    present = [n for n in names if n in table.column_names]
    return [{n: None for n in names} | r for r in table.select(present).to_pylist()]


def _captions(output: Output, state_dir: Path, files: set[str], dry_run: bool) -> int:
    """Delete the files' caption files (and any staged copy); returns how many there were."""
    names = {safe_stem(f) + suffix for f in files for suffix in _CAPTION_SUFFIXES}
    found: list[str] = []
    staged = state_dir / "staging"
    local_roots = [output.local] if output.local is not None else []
    local_roots += list(staged.iterdir()) if staged.is_dir() else []
    for root in local_roots:
        found += [str(root / "captions" / n) for n in names if (root / "captions" / n).is_file()]
    if not dry_run:
        for path in found:
            os.unlink(path)
    if output.local is None:
        remote = [f"{output.root}/captions/{n}" for n in sorted(names)]
        present = [p for p in remote if output.fs.exists(p)]
        if not dry_run and present:
            output.fs.rm(present)
        found += present
    return len(found)


def _callbacks(store: Path, request_ids: Iterable[str], dry_run: bool) -> int:
    """Delete the recorded callbacks (they carry the transcript) of these jobs."""
    records = CallbackStore(store)
    paths = [records.path_for(r) for r in request_ids]
    present = [p for p in paths if p.is_file()]
    if not dry_run:
        for path in present:
            path.unlink(missing_ok=True)
    return len(present)


def _rewrite_log(
    output: Output, parts: dict[str, pa.Table], files: set[str], dry_run: bool
) -> tuple[int, int]:
    """Drop the files' rows from every log part naming them; returns (rows, parts)."""
    rows = touched = 0
    ids = pa.array(sorted(files), pa.string())
    for part, table in parts.items():
        keep = pc.invert(pc.is_in(table.column("file_id"), value_set=ids))
        gone = table.num_rows - pc.sum(keep.cast(pa.int64())).as_py()
        if gone:
            rows, touched = rows + gone, touched + 1
            if not dry_run:
                replace_part(output, part, table.filter(keep))
    return rows, touched


def _audit(output: Output, forgot: Forgot, by: list[str]) -> None:
    """Append one line (when, how chosen, counts) to ``<out>/forgotten.jsonl``."""
    entry = {"forgotten_at": dt.datetime.now(dt.UTC).isoformat(), "by": by}
    entry |= {k: v for k, v in dataclasses.asdict(forgot).items() if k != "dry_run"}
    line = (json.dumps(entry) + "\n").encode()
    if output.local is not None:
        output.local.mkdir(parents=True, exist_ok=True)
        with open(output.local / AUDIT_FILE, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return
    target = f"{output.root}/{AUDIT_FILE}"
    before = output.fs.cat_file(target) if output.fs.exists(target) else b""
    output.fs.pipe_file(target, before + line)


async def _forget_in_ledger(
    state: Path, url: str | None, identities: set[str], dry_run: bool
) -> int:
    """Remove the identities' transcripts from the ledger (tombstones left); in a dry run, how
    many are not forgotten yet."""
    async with Ledger.open(state, None, url) as ledger:
        if dry_run:
            return len(identities - await ledger.tombstoned(identities))
        return await ledger.forget(identities)


def forget(
    out: str,
    file_ids: Sequence[str] = (),
    where: str | None = None,
    *,
    state_dir: Path | None = None,
    callback_store: Path | None = None,
    ledger_url: str | None = None,
    dry_run: bool = False,
) -> Forgot:
    """Erase the chosen files' transcripts from everything under ``out`` and its state."""
    if not file_ids and not where:
        raise ForgetError("name what to forget: --file-id ID (repeatable) or --where CONDITION")
    output = Output.parse(out)
    state = state_dir or output.default_state_dir()
    tables = Tables.of(output)
    current = tables.read(TRANSCRIPTS)
    parts = {part: read_part(output, part) for part in log_parts(output)}
    chosen = _selected(file_ids, where, [current, *parts.values()])
    everything = _keys(current) + [r for t in parts.values() for r in _keys(t)]
    files, identities = _same_audio(chosen, everything)
    request_ids = {r["request_id"] for r in everything if r["file_id"] in files} - {None}
    segments = tables.read(SEGMENTS).column("file_id").to_pylist()
    counts = {
        "transcripts": sum(1 for f in current.column("file_id").to_pylist() if f in files),
        "segments": sum(1 for f in segments if f in files),
    }
    erased = asyncio.run(_forget_in_ledger(state, ledger_url, identities, dry_run))
    if not dry_run:
        tables.delete_files(files)
    captions = _captions(output, state, files, dry_run)
    store = callback_store or state / "callbacks"
    callbacks = _callbacks(store, request_ids, dry_run)
    log_rows, touched = _rewrite_log(output, parts, files, dry_run)
    forgot = Forgot(
        dry_run,
        len(files),
        len(identities),
        counts["transcripts"],
        counts["segments"],
        captions,
        erased,
        callbacks,
        log_rows,
        touched,
    )
    if not dry_run:
        _audit(output, forgot, (["file_id"] if file_ids else []) + (["where"] if where else []))
    return forgot
