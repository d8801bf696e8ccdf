"""Uploads stream from disk: the client's peak memory must not grow with the file size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sandbox.server import SandboxServer

from ..helpers import SandboxControl

BIG_MB = 256
BOUND_MB = 50

# Runs in its own process so the peak RSS belongs to the client alone (the sandbox lives here).
UPLOADER = """
import asyncio, resource, sys
from pydantic import SecretStr
from invox import InvoxClient, InvoxSettings

base, app_id, key, small, big = sys.argv[1:6]

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

async def put(client, path):
    slot = await client.generate_presigned_url("audio/wav")
    await client.upload(slot.presigned_url, path, "audio/wav")

async def main():
    settings = InvoxSettings(base_url=base, app_id=app_id, api_key=SecretStr(key))
    async with InvoxClient(settings) as client:
        await put(client, small)  # warm up imports, TLS-free pool, buffers
        before = peak_mb()
        await put(client, big)
        print(peak_mb() - before)

asyncio.run(main())
"""


def test_uploading_a_large_file_keeps_client_memory_flat(
    sandbox_server: SandboxServer, sandbox: SandboxControl, tmp_path: Path
) -> None:
    small = tmp_path / "small.wav"
    small.write_bytes(b"\0" * 1024 * 1024)
    big = tmp_path / "big.wav"
    with big.open("wb") as handle:
        handle.truncate(BIG_MB * 1024 * 1024)
    settings = sandbox_server.settings
    args = [sandbox_server.base_url, settings.app_id, settings.api_key, str(small), str(big)]
    done = subprocess.run(
        [sys.executable, "-c", UPLOADER, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    growth_mb = float(done.stdout.strip())
    assert growth_mb < BOUND_MB, f"peak RSS grew {growth_mb:.0f} MB for a {BIG_MB} MB upload"
    assert sum(sandbox.stats()["uploads_by_sha256"].values()) == 2
