"""Issue 13's ledger targets, on a real PostgreSQL on loopback (durable: fsync on).

- ``ledger_ms_per_file_postgresql``: one file's ledger steps as a run takes them (claim,
  presigned intent, intents read, upload, result), one file after another, in ms per file.
- ``ledger_locate_10k_s_postgresql``: locating 10,000 completed identities, in seconds.
- ``ledger_rerun_api_calls_postgresql`` / ``ledger_rerun_wall_ratio_postgresql``: 1,000 files
  through the flow with the PostgreSQL ledger, then the same manifest on a fresh "machine"
  (another output and state folder): its API calls and its wall time over the first run's.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.context import Context, Wanted, run_flow, sandbox
from bench.harness import make_wavs
from bench.report import Result, result
from invox_batch.ledger import Ledger, Owner, upload_key
from invox_batch.records import ResultRecord, Segment, UploadRecord

TARGETS = (
    "ledger_ms_per_file_postgresql",
    "ledger_locate_10k_s_postgresql",
    "ledger_rerun_api_calls_postgresql",
    "ledger_rerun_wall_ratio_postgresql",
)
STEPS_FILES = 500
LOCATE_FILES = 10_000
CONCURRENCY = 16
PARAMS: dict[str, Any] = {"polling": {"max_poll_interval_s": 0.2}}


def _record(n: int) -> ResultRecord:
    words = tuple(Segment(float(s), float(s + 1), f"segment {s} of file {n}") for s in range(5))
    return ResultRecord(f"req-{n}", "COMPLETED", words)


async def _steps(ledger: Ledger, files: int, prefix: str) -> float:
    """Seconds per file for the ledger steps of one paid file, taken one file at a time."""
    owner = Owner("bench")
    started = time.perf_counter()
    for n in range(files):
        identity = f"{prefix}{n:036d}"
        async with ledger.claim(identity, 0, owner) as paid:
            assert paid is None
            key = upload_key(identity, 0)
            await ledger.intended(key)  # find_landed's read before the PUT
            await ledger.record_intent(key, f"req-{n}")
            await ledger.save_upload(identity, 0, UploadRecord(f"req-{n}", "t", "bench"))
        await ledger.save_result(identity, 0, _record(n))
    return (time.perf_counter() - started) / files


async def _locate(ledger: Ledger, files: int) -> float:
    identities = [f"loc{n:037d}" for n in range(files)]
    for n, identity in enumerate(identities):
        await ledger.save_upload(identity, 0, UploadRecord(f"req-{n}", "t", "bench"))
        await ledger.save_result(identity, 0, _record(n))
    started = time.perf_counter()
    places = await ledger.locate_all(identities, 2, False, None)
    elapsed = time.perf_counter() - started
    assert all(p.action == "done" for p in places.values())
    return elapsed


def _library(url: str, scratch: Path, raw: dict[str, Any]) -> list[Result]:
    async def main() -> tuple[float, float, float]:
        async with Ledger.open(scratch / "pg-state", None, url) as pg:
            per_file_pg = await _steps(pg, STEPS_FILES, "pg")
            locate_s = await _locate(pg, LOCATE_FILES)
        async with Ledger.open(scratch / "sqlite-state") as lite:
            per_file_sqlite = await _steps(lite, STEPS_FILES, "sq")
        return per_file_pg, locate_s, per_file_sqlite

    per_file_pg, locate_s, per_file_sqlite = asyncio.run(main())
    raw.update(
        ms_per_file_postgresql=per_file_pg * 1000,
        ms_per_file_sqlite=per_file_sqlite * 1000,
        locate_10k_s=locate_s,
    )
    print(
        f"  ledger steps per file: PostgreSQL {per_file_pg * 1000:.2f} ms, "
        f"SQLite {per_file_sqlite * 1000:.2f} ms; locate {LOCATE_FILES}: {locate_s:.2f} s"
    )
    note = f"SQLite {per_file_sqlite * 1000:.2f} ms"
    return [
        result("ledger_ms_per_file_postgresql", per_file_pg * 1000, note),
        result("ledger_locate_10k_s_postgresql", locate_s),
    ]


def run(ctx: Context, wanted: Wanted) -> list[Result]:
    """A durable PostgreSQL for the group; the library figures, then the flow's rerun."""
    from tests.postgres import PostgresServer

    raw: dict[str, Any] = {}
    ctx.details["ledger"] = raw
    results: list[Result] = []
    with PostgresServer(durable=True) as server:
        if wanted("ledger_ms_per_file_postgresql") or wanted("ledger_locate_10k_s_postgresql"):
            results += _library(server.new_database(), ctx.scratch, raw)
        if wanted("ledger_rerun_api_calls_postgresql") or wanted(
            "ledger_rerun_wall_ratio_postgresql"
        ):
            results += _rerun(ctx, server.new_database(), raw)
    return results


def _rerun(ctx: Context, url: str, raw: dict[str, Any]) -> list[Result]:
    manifest = make_wavs(ctx.scratch / "ledger-wavs", [0.2] * ctx.files, seed=7, prefix="l")
    env = {"INVOX_LEDGER_URL": url}
    with sandbox(faults={"processing_delay_s": (0, 0)}) as probe:
        label = f"flow, {ctx.files} files, PostgreSQL ledger"
        first = run_flow(
            probe, label, manifest, ctx.scratch / "pg-a", CONCURRENCY, ctx.files, PARAMS, env
        )
        label = f"rerun on a fresh machine, {ctx.files} files"
        again = run_flow(
            probe, label, manifest, ctx.scratch / "pg-b", CONCURRENCY, ctx.files, PARAMS, env
        )
    raw.update(first=first, rerun=again)
    return [
        result("ledger_rerun_api_calls_postgresql", sum(again["calls"].values())),
        result("ledger_rerun_wall_ratio_postgresql", again["wall_s"] / first["wall_s"]),
    ]
