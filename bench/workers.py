"""Benchmark contenders, each run in a fresh interpreter so its wall time and peak RSS are its own.

    python -m bench.workers bare --manifest M --concurrency 16 [--poll-every 0.5]
    python -m bench.workers flow --manifest M --out O --concurrency 16 --params '{"polling": {...}}'
    python -m bench.workers upload --file F

Each prints one JSON line; the client and flow read ``INVOX_*`` from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import current_rss_mb, peak_rss_mb, proc_status


async def bare_loop(
    manifest: str, concurrency: int, poll_every_s: float | None = None
) -> dict[str, Any]:
    """The same local checks and API calls as the flow, with nothing around them; polling
    every ``poll_every_s`` when given, else first at half the audio's duration, then often."""
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
                if poll_every_s:
                    every = poll_every_s
                    policy = PollPolicy(
                        timeout_s=600,
                        first_delay_s=every,
                        max_delay_s=every,
                        multiplier=1.0,
                        jitter=0.0,
                        age_share=None,
                    )
                return (await client.wait_for_transcription(slot.request_id, policy)).status

        statuses = await asyncio.gather(*(one(c) for c in checks))
    return {
        "wall_s": time.monotonic() - started,
        "completed": statuses.count("COMPLETED"),
        "peak_rss_mb": peak_rss_mb(),
    }


async def flow_run(
    manifest: str, out: str, concurrency: int, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The real flow; the Prefect server start is timed apart from the run itself."""
    from prefect.client.orchestration import get_client

    from flows.transcribe_batch import transcribe_batch

    started = time.monotonic()
    async with get_client() as client:
        await client.hello()  # starts the ephemeral server if no PREFECT_API_URL is set
    server_start_s = time.monotonic() - started
    started = time.monotonic()
    groups = dict(params or {})
    groups["scale"] = {**groups.get("scale", {}), "max_concurrency": concurrency}
    state = await transcribe_batch(manifest=manifest, out=out, return_state=True, **groups)
    return {
        "wall_s": time.monotonic() - started,
        "server_start_s": server_start_s,
        "state": state.type.value,
        "peak_rss_mb": peak_rss_mb(),
    }


async def upload_once(file: str) -> dict[str, Any]:
    """Presign and upload one (large) file with ``InvoxClient``; RSS around the upload alone."""
    from invox import InvoxClient

    async with InvoxClient() as client:
        slot = await client.generate_presigned_url("audio/wav")
        rss_before = current_rss_mb()
        started = time.monotonic()
        await client.upload(slot.presigned_url, file, "audio/wav")
        seconds = time.monotonic() - started
    size = Path(file).stat().st_size
    return {
        "seconds": seconds,
        "bytes_per_s": size / seconds,
        "rss_before_mb": rss_before,
        "rss_after_mb": current_rss_mb(),
        "threads": proc_status("Threads"),
        "peak_rss_mb": peak_rss_mb(),
        "rss_increase_mb": peak_rss_mb() - rss_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["bare", "flow", "upload"])
    parser.add_argument("--manifest")
    parser.add_argument("--out")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--poll-every", type=float, help="bare: poll every this many seconds")
    parser.add_argument("--params", default="{}", help="flow parameter groups as JSON")
    parser.add_argument("--file")
    args = parser.parse_args()
    if args.kind == "bare":
        result = asyncio.run(bare_loop(args.manifest, args.concurrency, args.poll_every))
    elif args.kind == "flow":
        params = json.loads(args.params)
        result = asyncio.run(flow_run(args.manifest, args.out, args.concurrency, params))
    else:
        result = asyncio.run(upload_once(args.file))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
