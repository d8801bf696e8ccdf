"""Target 2: status calls per file and time-to-result, with processing proportional to duration.

The sandbox processes each job in ``s`` x its audio duration (+-5 % jitter), ``s`` drawn once
per run from 0.2-0.5 with a fixed seed; the flow polls with its default schedule.
"""

from __future__ import annotations

import random
from typing import Any

from bench.context import Context, Wanted, run_flow, sandbox
from bench.harness import make_wavs
from bench.report import Result, result

TARGETS = ("status_calls_per_file", "time_to_result_ratio")
FILES = 1000  # a nightly batch: the timer's learning phase is a small part of it
CONCURRENCY = 64
SEED = 6


def run(ctx: Context, wanted: Wanted) -> list[Result]:
    """One flow run over 1,000 WAVs of 1-4 s; the figures come from the sandbox's timings."""
    rng = random.Random(SEED)
    speed = rng.uniform(0.2, 0.5)
    durations = [rng.uniform(1.0, 4.0) for _ in range(FILES)]
    print(f"  processing speed s = {speed:.3f} x real time (seed {SEED})")
    manifest = make_wavs(ctx.scratch / "varied", durations, seed=SEED, prefix="v")
    faults: dict[str, Any] = {
        "processing_rtf": (speed * 0.95, speed * 1.05),
        "processing_delay_s": (0, 0),
    }
    with sandbox(faults=faults) as probe:
        out = ctx.scratch / "varied-out"
        flow = run_flow(probe, f"flow, {FILES} varied files", manifest, out, CONCURRENCY, FILES)
        timings = dict(probe.stats()["timings"])
    ctx.details["polling"] = {"speed": speed, "seed": SEED, "flow": flow, "timings": timings}
    print(f"  sandbox timings: {timings}")
    ratio = timings["mean_time_to_result_s"] / timings["mean_processing_s"]
    return [
        result("status_calls_per_file", timings["status_calls_per_job"]),
        result("time_to_result_ratio", ratio),
    ]
