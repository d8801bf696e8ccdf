"""Target 5: a 1 GiB upload with ``InvoxClient`` against ``curl -T``, same sandbox, interleaved.

The client runs in a fresh worker (RSS just before the upload vs peak after); curl PUTs to a
fresh pre-signed URL. Three rounds each, medians compared; the sandbox is reset after every
upload so at most one copy sits on disk next to the input.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.context import Context, Wanted, sandbox
from bench.harness import SandboxProbe, run_worker, wav_header, worker_env
from bench.report import Result, result

TARGETS = ("large_upload_rss_increase_mb", "large_upload_throughput_vs_curl")
SIZE = 1 << 30
BLOCK = 1 << 20
ROUNDS = 3
CURL = "/usr/bin/curl"


def make_big_wav(path: Path) -> Path:
    """A 1 GiB WAV in a second or two: one random 1 MiB block written over and over."""
    block = np.random.default_rng(5).integers(0, 256, BLOCK, dtype=np.uint8).tobytes()
    data_bytes = SIZE - 44
    with path.open("wb") as handle:
        handle.write(wav_header(data_bytes))
        for _ in range(SIZE // BLOCK - 1):
            handle.write(block)
        handle.write(block[: BLOCK - 44])
    return path


def run(ctx: Context, wanted: Wanted) -> list[Result]:
    """Client and curl uploads, interleaved; RSS increase and throughput ratio from medians."""
    free = shutil.disk_usage(ctx.scratch).free
    if free < 3 * SIZE:
        return _missed(f"needs 3 GiB free for input + upload, {free / 2**30:.1f} GiB free")
    folder = ctx.scratch / "large"
    folder.mkdir()
    big = make_big_wav(folder / "large.wav")
    client_runs: list[dict[str, Any]] = []
    curl_runs: list[float] = []
    try:
        with sandbox(max_upload_bytes=2 * SIZE, faults={"processing_delay_s": (0, 0)}) as probe:
            for n in range(ROUNDS):
                client_runs.append(_client_upload(probe, big, n))
                if os.access(CURL, os.X_OK):
                    curl_runs.append(_curl_upload(probe, big, n))
    finally:
        big.unlink(missing_ok=True)
    return _results(ctx, client_runs, curl_runs)


def _client_upload(probe: SandboxProbe, big: Path, n: int) -> dict[str, Any]:
    """One ``InvoxClient.upload`` in a fresh worker."""
    result = run_worker(["upload", "--file", str(big)], worker_env(probe.base_url))
    probe.reset()
    print(
        f"  client upload {n + 1}: {result['bytes_per_s'] / 1e6:8.1f} MB/s, "
        f"RSS +{result['rss_increase_mb']:.1f} MB (before {result['rss_before_mb']:.0f} MB, "
        f"{result['threads']} threads after)"
    )
    return result


def _curl_upload(probe: SandboxProbe, big: Path, n: int) -> float:
    """``curl -T`` to a fresh pre-signed URL; its bytes per second."""
    url = asyncio.run(_presign(probe.base_url))
    command = [CURL, "-sS", "-T", str(big), "-H", "Content-Type: audio/wav", url]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    probe.reset()
    if done.returncode != 0 or done.stdout.strip():
        raise RuntimeError(f"curl upload failed ({done.returncode}): {done.stderr.strip()[:300]}")
    rate = big.stat().st_size / seconds
    print(f"  curl upload   {n + 1}: {rate / 1e6:8.1f} MB/s")
    return rate


async def _presign(base_url: str) -> str:
    """A fresh pre-signed URL from the sandbox, through the client (never printed)."""
    from pydantic import SecretStr

    from invox import InvoxClient, InvoxSettings

    settings = InvoxSettings(
        base_url=base_url, app_id="sandbox-app", api_key=SecretStr("sandbox-key")
    )
    async with InvoxClient(settings) as client:
        return (await client.generate_presigned_url("audio/wav")).presigned_url


def _results(
    ctx: Context, client_runs: list[dict[str, Any]], curl_runs: list[float]
) -> list[Result]:
    """Medians of the rounds; the throughput target misses with a note when curl is absent."""
    rss = statistics.median(r["rss_increase_mb"] for r in client_runs)
    client_rate = statistics.median(r["bytes_per_s"] for r in client_runs)
    ctx.details["large_upload"] = {
        "bytes": SIZE,
        "client": client_runs,
        "curl_bytes_per_s": curl_runs,
    }
    results = [result(TARGETS[0], rss)]
    if not curl_runs:
        note = f"{CURL} not found: throughput not compared"
        return [*results, result(TARGETS[1], None, note)]
    curl_rate = statistics.median(curl_runs)
    note = f"{client_rate / 1e6:.0f} vs {curl_rate / 1e6:.0f} MB/s"
    return [*results, result(TARGETS[1], client_rate / curl_rate, note)]


def _missed(note: str) -> list[Result]:
    """Both targets unmeasured, with the reason."""
    return [
        result(TARGETS[0], None, note),
        result(TARGETS[1], None, note),
    ]
