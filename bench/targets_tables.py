"""Issue 16's targets: the current tables' size over reruns, the MERGE's share, reading them.

One instant-mode sandbox. A cumulative 1k-file manifest runs five times into one output (fresh,
cached, forced so every transcript is replaced, cached, cached); the tables' bytes after VACUUM
are compared with their bytes after the first run (VACUUMed too), and each run's MERGE time
(from its summary) with its wall time, the worst share reported. Then 10k transcripts of a realistic length are MERGEd
and the table is read into pandas the way the README shows.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from bench.context import Context, Wanted, run_flow, sandbox
from bench.harness import make_wavs
from bench.report import Result, result

TARGETS = ("tables_bytes_ratio_5_runs", "tables_merge_share", "tables_read_pandas_10k_s")
CONCURRENCY = 16
SMALL_S = 0.2
PARAMS: dict[str, Any] = {"polling": {"max_poll_interval_s": 0.2}}
FORCED: dict[str, Any] = {**PARAMS, "spend": {"force": True}}
READ_FILES = 10_000
WORDS_PER_TRANSCRIPT = 150  # about a minute of dictation


def run(ctx: Context, wanted: Wanted) -> list[Result]:
    """Measure whichever of this group's targets are wanted."""
    results: list[Result] = []
    raw: dict[str, Any] = {"files": ctx.files}
    ctx.details["tables"] = raw
    if wanted("tables_bytes_ratio_5_runs") or wanted("tables_merge_share"):
        results += _reruns(ctx, raw)
    if wanted("tables_read_pandas_10k_s"):
        results.append(_read(ctx, raw))
    return results


def _table_bytes(out: Path) -> int:
    """Bytes on disk of both tables, their logs included, after a VACUUM."""
    from invox_batch.output import Output
    from invox_batch.tables import Tables

    Tables.of(Output.parse(str(out))).vacuum()
    return sum(p.stat().st_size for p in (out / "tables").rglob("*") if p.is_file())


def _summary(out: Path, before: set[Path]) -> dict[str, Any]:
    """The run summary the last run wrote."""
    (new,) = set((out / "runs").glob("*.json")) - before
    summary: dict[str, Any] = json.loads(new.read_text())
    return summary


def _reruns(ctx: Context, raw: dict[str, Any]) -> list[Result]:
    """Five runs of one manifest into one output; sizes and each run's MERGE share."""
    manifest = make_wavs(ctx.scratch / "tables", [SMALL_S] * ctx.files, seed=7, prefix="t")
    out = ctx.scratch / "tables-out"
    sizes, runs = [], []
    with sandbox(faults={"processing_delay_s": (0, 0)}) as probe:
        for n, params in enumerate((PARAMS, PARAMS, FORCED, PARAMS, PARAMS), start=1):
            before = set((out / "runs").glob("*.json"))
            label = f"tables run {n}{' (forced)' if params is FORCED else ''}, {ctx.files} files"
            flow = run_flow(probe, label, manifest, out, CONCURRENCY, ctx.files, params)
            summary = _summary(out, before)
            merged = summary["tables_merged"]
            runs.append({"wall_s": flow["wall_s"], "state": flow["state"], "merged": merged})
            sizes.append(_table_bytes(out) if n in (1, 5) else None)
            print(f"  {'':32s} MERGE {merged['seconds']:.2f} s, {merged['transcripts']} changed")
    from invox_batch.output import Output
    from invox_batch.tables import TRANSCRIPTS, Tables

    rows = Tables.of(Output.parse(str(out))).read(TRANSCRIPTS).num_rows
    raw["runs"], raw["bytes_first"], raw["bytes_last"], raw["rows"] = runs, sizes[0], sizes[4], rows
    shares = [r["merged"]["seconds"] / r["wall_s"] for r in runs]
    raw["merge_shares"] = shares
    ratio = sizes[4] / sizes[0] if rows == ctx.files else float("nan")
    note = f"{rows} rows; {sizes[4] / 1e6:.2f} MB after 5 runs vs {sizes[0] / 1e6:.2f} MB"
    merge_note = "worst of 5 runs; " + ", ".join(f"{s:.3f}" for s in shares)
    return [
        result("tables_bytes_ratio_5_runs", ratio, note),
        result("tables_merge_share", max(shares), merge_note),
    ]


def _read(ctx: Context, raw: dict[str, Any]) -> Result:
    """10k realistic transcripts MERGEd, then read into pandas as the README shows."""
    from deltalake import DeltaTable

    from invox_batch.output import Output
    from invox_batch.tables import Tables, split_run

    rng = random.Random(16)
    vocabulary = ["patient", "reports", "chest", "pain", "two", "days", "no", "fever", "stable"]
    out = ctx.scratch / "read-out"
    rows, segments = [], []
    for n in range(READ_FILES):
        words = [rng.choice(vocabulary) for _ in range(WORDS_PER_TRANSCRIPT)]
        segs = [(i * 5.0, i * 5.0 + 5.0, " ".join(words[i * 15 : i * 15 + 15])) for i in range(10)]
        rows.append(
            {
                "file_id": f"file-{n:05d}",
                "audio_identity": f"{n:040d}",
                "sha256": f"{n:064d}",
                "request_id": f"req-{n}",
                "status": "completed",
                "n_segments": len(segs),
                "duration_s": 50.0,
                "completed_at": None,
                "api_version": "2025-10-01",
                "quality": [],
                "flow_run_id": "bench",
                "text": " ".join(words),
                "clinic": rng.choice(["cardiology", "pulmonology"]),
            }
        )
        segments.append(segs)
    _, transcripts, segment_rows = split_run(rows, segments, ("clinic",))
    tables = Tables.of(Output.parse(str(out)))
    tables.merge_run(transcripts, segment_rows)
    uri = str(out / "tables" / "transcripts")
    started = time.monotonic()
    frame = DeltaTable(uri).to_pandas()
    seconds = time.monotonic() - started
    raw["read_10k"] = {"rows": len(frame), "seconds": seconds, "bytes": _table_bytes(out)}
    assert len(frame) == READ_FILES
    return result("tables_read_pandas_10k_s", seconds, f"{len(frame)} rows")
