"""Benchmark: the transcribe-batch flow against a bare asyncio+httpx loop making the same calls.

Both run in their own subprocess (so peak RSS is theirs alone) against one instant-mode sandbox
in this process, over the same generated WAVs, with the same concurrency and poll schedule. The
bare loop does the same local checks (hashing, container sniffing) and the same token, presign,
upload and poll calls, but no Prefect, no ledger and no Parquet. Ratios are taken in one run.

    python -m bench.flow_vs_bare --files 1000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench import harness
from bench.harness import ENDPOINTS, RESULTS, make_wavs, worker_env
from bench.workers import bare_loop, flow_run

FLOW_PARAMS: dict[str, Any] = {"polling": {"max_poll_interval_s": 0.2}}


def make_inputs(folder: Path, count: int) -> Path:
    """``count`` distinct 0.2 s WAVs and their manifest."""
    return make_wavs(folder, [0.2] * count, seed=0, prefix="b")


def run_worker(
    kind: str, base_url: str, manifest: Path, out: Path, concurrency: int
) -> dict[str, Any]:
    """One contender in a fresh interpreter (``bench.workers``), pointed at the sandbox."""
    args = [kind, "--manifest", str(manifest), "--concurrency", str(concurrency)]
    if kind == "flow":
        args += ["--out", str(out), "--params", json.dumps(FLOW_PARAMS)]
    return harness.run_worker(args, worker_env(base_url))


def calls(http: httpx.Client, before: dict[str, Any]) -> dict[str, int]:
    """Sandbox requests per endpoint since ``before``."""
    after = http.get("/_sandbox/stats").json()["requests"]
    return {e: after.get(e, 0) - before.get(e, 0) for e in ENDPOINTS}


def measure(files: int, concurrency: int) -> dict[str, Any]:
    """Bare loop, flow, and a cached rerun of the flow, against one sandbox."""
    from sandbox import Faults, SandboxServer, SandboxSettings

    with (
        tempfile.TemporaryDirectory() as tmp,
        SandboxServer(
            SandboxSettings(processing="instant", faults=Faults(processing_delay_s=(0, 0)))
        ) as server,
    ):
        folder = Path(tmp)
        manifest = make_inputs(folder, files)
        http = httpx.Client(base_url=server.base_url)
        results: dict[str, Any] = {"files": files, "concurrency": concurrency}
        for name, kind in (("bare", "bare"), ("flow", "flow"), ("rerun", "flow")):
            before = http.get("/_sandbox/stats").json()["requests"]
            results[name] = run_worker(kind, server.base_url, manifest, folder / "out", concurrency)
            results[name]["calls"] = calls(http, before)
        return results


def report(results: dict[str, Any]) -> None:
    """Print the table and write ``bench/results/flow_vs_bare.json``."""
    files = results["files"]
    bare, flow, rerun = results["bare"], results["flow"], results["rerun"]
    results["ratio_flow_to_bare"] = flow["wall_s"] / bare["wall_s"]
    results["ratio_rerun_to_flow"] = rerun["wall_s"] / flow["wall_s"]
    print(f"{files} files, concurrency {results['concurrency']}, sandbox in instant mode")
    print(f"{'':10}{'wall s':>10}{'peak RSS MB':>14}{'calls/file':>12}")
    for name in ("bare", "flow", "rerun"):
        row = results[name]
        per_file = sum(row["calls"].values()) / files
        print(f"{name:10}{row['wall_s']:>10.2f}{row['peak_rss_mb']:>14.0f}{per_file:>12.2f}")
    print(f"flow / bare wall time: {results['ratio_flow_to_bare']:.2f}")
    print(
        f"rerun / first run:     {results['ratio_rerun_to_flow']:.3f} (rerun calls: {rerun['calls']})"
    )
    print(f"Prefect server start (excluded above): {flow['server_start_s']:.1f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flow_vs_bare.json").write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--worker", choices=["bare", "flow"])
    parser.add_argument("--manifest")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker == "bare":
        print(json.dumps(asyncio.run(bare_loop(args.manifest, args.concurrency))))
    elif args.worker == "flow":
        params = dict(FLOW_PARAMS)
        print(json.dumps(asyncio.run(flow_run(args.manifest, args.out, args.concurrency, params))))
    else:
        report(measure(args.files, args.concurrency))


if __name__ == "__main__":
    main()
