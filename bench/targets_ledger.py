"""Issue 13's ledger targets, on a real PostgreSQL on loopback (durable: fsync on).

- ``ledger_ms_per_file_postgresql``: one file's ledger steps as a run takes them (claim with its
  intents read, presigned intent, upload, result), 500 files at the flow's concurrency (16), in
  wall ms per file: what the ledger adds to a run. The note gives one file's own latency (files
  one after another), where every durable commit's fsync shows.
- ``ledger_locate_10k_s_postgresql``: locating 10,000 completed identities, in seconds.
- ``ledger_rerun_api_calls_postgresql`` / ``ledger_rerun_wall_ratio_postgresql``: 1,000 files
  through the flow with the PostgreSQL ledger, then the same manifest on a fresh "machine"
  (another output and state folder), three times: the API calls of all three and the median
  wall time over the first run's.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.context import RERUNS, Context, Wanted, median_run, run_flow, sandbox
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


async def _one_file(ledger: Ledger, owner: Owner, identity: str, n: int) -> None:
    async with ledger.claim(identity, 0, owner) as paid:
        assert paid is None
        key = upload_key(identity, 0)
        await ledger.intended(key)  # find_landed's read before the PUT
        await ledger.record_intent(key, f"req-{n}")
        await ledger.save_upload(identity, 0, UploadRecord(f"req-{n}", "t", "bench"))
    await ledger.save_result(identity, 0, _record(n))


async def _steps(ledger: Ledger, files: int, prefix: str, concurrency: int) -> float:
    """Wall seconds per file for the ledger steps of paid files, ``concurrency`` at a time."""
    owner, gate = Owner("bench"), asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            await _one_file(ledger, owner, f"{prefix}{n:036d}", n)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(files)))
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
    async def main() -> dict[str, float]:
        figures: dict[str, float] = {}
        async with Ledger.open(scratch / "pg-state", None, url) as pg:
            figures["pg"] = await _steps(pg, STEPS_FILES, "pg", CONCURRENCY) * 1000
            figures["pg_alone"] = await _steps(pg, STEPS_FILES // 5, "pa", 1) * 1000
            figures["locate"] = await _locate(pg, LOCATE_FILES)
        async with Ledger.open(scratch / "sqlite-state") as lite:
            figures["sqlite"] = await _steps(lite, STEPS_FILES, "sq", CONCURRENCY) * 1000
            figures["sqlite_alone"] = await _steps(lite, STEPS_FILES // 5, "sa", 1) * 1000
        return figures

    figures = asyncio.run(main())
    raw.update(figures)
    print(
        f"  ledger ms per file at concurrency {CONCURRENCY} (one file alone): PostgreSQL "
        f"{figures['pg']:.2f} ({figures['pg_alone']:.2f}), SQLite {figures['sqlite']:.2f} "
        f"({figures['sqlite_alone']:.2f}); locate {LOCATE_FILES}: {figures['locate']:.2f} s"
    )
    note = f"alone {figures['pg_alone']:.1f} ms; SQLite {figures['sqlite']:.2f} ms"
    return [
        result("ledger_ms_per_file_postgresql", figures["pg"], note),
        result("ledger_locate_10k_s_postgresql", figures["locate"]),
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
        again = median_run(
            [
                run_flow(
                    probe,
                    f"rerun {n} on a fresh machine, {ctx.files} files",
                    manifest,
                    ctx.scratch / f"pg-b{n}",  # a new output and state folder: nothing cached
                    CONCURRENCY,
                    ctx.files,
                    PARAMS,
                    env,
                )
                for n in range(1, RERUNS + 1)
            ]
        )
    raw.update(first=first, rerun=again)
    return [
        result("ledger_rerun_api_calls_postgresql", sum(again["calls"].values())),
        result("ledger_rerun_wall_ratio_postgresql", again["wall_s"] / first["wall_s"]),
    ]
