"""Target 7: a heavy tail of slow jobs must not hold up the fast ones.

600 WAVs of 0.5 s against a sandbox whose jobs take 0.2-0.6 s, except 2 % of them (picked by
their audio) that take 20 s; concurrency 8 for both contenders. The bare asyncio + httpx loop
polls every 0.5 s; ``invox-batch run`` is timed as the user runs it, Prefect's start included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.context import Context, Wanted, run_bare, sandbox
from bench.harness import ROOT, SandboxProbe, calls_since, make_wavs, print_run, worker_env
from bench.report import Result, result

TARGETS = ("heavy_tail_wall_ratio", "heavy_tail_status_calls_per_file")
FILES = 600
SECONDS = 0.5
CONCURRENCY = 8
BARE_POLL_S = 0.5
FAULTS: dict[str, Any] = {
    "processing_delay_s": (0.2, 0.6),
    "heavy_tail_share": 0.02,
    "heavy_tail_s": 20.0,
    "seed": 14,
}


def run(ctx: Context, wanted: Wanted) -> list[Result]:
    """The bare loop, then the CLI, over the same files against one sandbox."""
    manifest = make_wavs(ctx.scratch / "tail", [SECONDS] * FILES, seed=14, prefix="t")
    with sandbox(faults=FAULTS) as probe:
        bare = run_bare(probe, "bare loop, heavy tail", manifest, CONCURRENCY, FILES, BARE_POLL_S)
        bare["timings"] = probe.stats()["timings"]
        probe.reset()  # the CLI's timings are its own
        cli = _run_cli(probe, manifest, ctx.scratch / "tail-out")
        cli["timings"] = probe.stats()["timings"]
    print(f"  sandbox timings: bare {bare['timings']}\n  {'':16s}cli {cli['timings']}")
    ctx.details["heavy_tail"] = {"files": FILES, "faults": FAULTS, "bare": bare, "cli": cli}
    per_file = cli["calls"]["status"] / FILES
    bare_per_file = bare["calls"]["status"] / FILES
    note = f"{cli['wall_s']:.1f} s / {bare['wall_s']:.1f} s"
    return [
        result("heavy_tail_wall_ratio", cli["wall_s"] / bare["wall_s"], note),
        result("heavy_tail_status_calls_per_file", per_file, f"bare loop {bare_per_file:.2f}"),
    ]


def _run_cli(probe: SandboxProbe, manifest: Path, out: Path) -> dict[str, Any]:
    """``invox-batch run`` as a user types it; it starts its own Prefect server."""
    command = [str(Path(sys.executable).parent / "invox-batch"), "run", str(manifest)]
    command += ["--out", str(out), "--concurrency", str(CONCURRENCY)]
    env = worker_env(probe.base_url)
    env.pop("PREFECT_API_URL", None)
    before = probe.requests()
    started = time.monotonic()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    wall_s = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"invox-batch run exited {done.returncode}:\n{done.stderr[-4000:]}")
    calls = calls_since(before, probe.requests())
    print_run("invox-batch run, heavy tail", FILES, wall_s, calls)
    summaries = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    flow_s = summaries[0]["wall_s"] if summaries else None
    print(f"  {'':32s} the flow itself {flow_s} s (the rest: start, Prefect, exit)")
    return {"wall_s": wall_s, "flow_wall_s": flow_s, "calls": calls, "cpu_count": os.cpu_count()}
