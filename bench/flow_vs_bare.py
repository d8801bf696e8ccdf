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
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ENDPOINTS = ("token", "presign", "upload", "status")


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_inputs(folder: Path, count: int) -> Path:
    """``count`` distinct 0.2 s WAVs and their manifest."""
    rng = np.random.default_rng(0)
    rows = []
    for n in range(count):
        path = folder / f"b{n:05d}.wav"
        sf.write(path, (rng.standard_normal(3200) * 0.1).astype(np.float32), 16000)
        rows.append({"audio_path": path.name, "file_id": f"b{n:05d}"})
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio_path", "file_id"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


# -- the two contenders (run as subprocesses) -------------------------------------------------


async def bare_loop(manifest: str, concurrency: int) -> dict[str, Any]:
    """The same local checks and API calls as the flow, with nothing around them."""
    from invox import InvoxClient, InvoxSettings, PollPolicy
    from invox_batch.audio import inspect_audio
    from invox_batch.manifest import read_manifest

    settings = InvoxSettings()
    spool = Path(tempfile.mkdtemp())
    started = time.monotonic()
    rows = read_manifest(manifest).rows
    checks = [inspect_audio(r, settings.mime_types, spool) for r in rows]
    gate = asyncio.Semaphore(concurrency)
    async with InvoxClient(settings) as client:
        await client.authenticate()

        async def one(check: Any) -> str:
            async with gate:
                slot = await client.generate_presigned_url(check.mime_type)
                await client.upload(slot.presigned_url, check.local_path, check.mime_type)
                first = min(max((check.duration_s or 2.0) * 0.5, 0.05), 0.2)
                policy = PollPolicy(timeout_s=600, first_delay_s=first, max_delay_s=0.2)
                return (await client.wait_for_transcription(slot.request_id, policy)).status

        statuses = await asyncio.gather(*(one(c) for c in checks))
    return {
        "wall_s": time.monotonic() - started,
        "completed": statuses.count("COMPLETED"),
        "peak_rss_mb": peak_rss_mb(),
    }


async def flow_run(manifest: str, out: str, concurrency: int) -> dict[str, Any]:
    """The real flow; the Prefect server start is timed apart from the run itself."""
    from prefect.client.orchestration import get_client

    from flows.transcribe_batch import transcribe_batch

    started = time.monotonic()
    async with get_client() as client:
        await client.hello()  # starts the ephemeral server if no PREFECT_API_URL is set
    server_start_s = time.monotonic() - started
    started = time.monotonic()
    state = await transcribe_batch(
        manifest=manifest,
        out=out,
        max_concurrency=concurrency,
        max_poll_interval_s=0.2,
        return_state=True,
    )
    return {
        "wall_s": time.monotonic() - started,
        "server_start_s": server_start_s,
        "state": state.type.value,
        "peak_rss_mb": peak_rss_mb(),
    }


# -- the driver -------------------------------------------------------------------------------


def run_worker(
    kind: str, base_url: str, manifest: Path, out: Path, concurrency: int
) -> dict[str, Any]:
    """One contender in a fresh interpreter, pointed at the sandbox."""
    env = {
        **os.environ,
        "INVOX_BASE_URL": base_url,
        "INVOX_APP_ID": "sandbox-app",
        "INVOX_API_KEY": "sandbox-key",
        "PREFECT_HOME": os.environ.get("PREFECT_HOME", str(ROOT / ".prefect")),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    args = [
        sys.executable,
        "-m",
        "bench.flow_vs_bare",
        "--worker",
        kind,
        "--manifest",
        str(manifest),
    ]
    args += ["--out", str(out), "--concurrency", str(concurrency)]
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


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
        print(json.dumps(asyncio.run(flow_run(args.manifest, args.out, args.concurrency))))
    else:
        report(measure(args.files, args.concurrency))


if __name__ == "__main__":
    main()
