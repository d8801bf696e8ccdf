"""Units behind the hardening: failpoints, lost-answer confirmation, stale temp sweep, and the
sandbox faults and sentinel settings the reliability and leak tests rely on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from invox import InvoxClient, InvoxSettings, ResponseFormatError, ResponseLostError
from invox_batch.failpoints import ENV, parse
from invox_batch.files import sweep_stale_temps
from invox_batch.ledger import confirm_landed
from sandbox.server import SandboxServer
from sandbox.settings import SandboxSettings

from ..conftest import ROOT, client_settings_for
from ..flow_helpers import make_wav
from ..helpers import SandboxControl


def test_failpoint_values_are_checked() -> None:
    assert parse("upload") == ("upload", 1) and parse("poll:3") == ("poll", 3)
    for bad in ("nowhere", "upload:0", "upload:x"):
        with pytest.raises(ValueError):
            parse(bad)


def test_a_failpoint_kills_at_its_nth_hit_and_is_inert_otherwise() -> None:
    code = "from invox_batch.failpoints import failpoint as f\nfor i in range(3):\n    f('poll'); print(i, flush=True)"
    env = {**os.environ, ENV: "poll:2"}
    killed = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL and killed.stdout.split() == ["0"]
    env[ENV] = "presign"
    other = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert other.returncode == 0 and other.stdout.split() == ["0", "1", "2"]


def test_stale_hidden_temp_parts_are_swept_fresh_ones_kept(tmp_path: Path) -> None:
    partition = tmp_path / "files" / "run_date=2026-01-01"
    partition.mkdir(parents=True)
    stale, fresh = partition / ".a.parquet.tmp-1", partition / ".b.parquet.tmp-2"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert sweep_stale_temps(tmp_path, "*/run_date=*/.*.parquet.tmp-*") == 1
    assert not stale.exists() and fresh.exists()
    record = tmp_path / ".upload-abc-g0.tmp-3"
    record.write_bytes(b"{")
    os.utime(record, (time.time() - 7200, time.time() - 7200))
    assert sweep_stale_temps(tmp_path, ".*.tmp-*") == 1 and not record.exists()


def test_confirm_landed_reads_the_job_state(settings: InvoxSettings, tmp_path: Path) -> None:
    audio = make_wav(tmp_path / "a.wav", 1)

    async def scenario() -> tuple[bool, bool, bool]:
        async with InvoxClient(settings) as client:
            waiting = await client.generate_presigned_url("audio/wav")
            done = await client.generate_presigned_url("audio/wav")
            await client.upload(done.presigned_url, audio, "audio/wav")
            return (
                await confirm_landed(client, done.request_id, 5.0),
                await confirm_landed(client, waiting.request_id, 0.3),  # never uploaded
                await confirm_landed(client, "no-such-request", 5.0),
            )

    assert asyncio.run(scenario()) == (True, False, False)


def test_confirm_landed_asks_once_more_at_its_deadline(
    settings: InvoxSettings, sandbox: SandboxControl, tmp_path: Path
) -> None:
    """A job finishing between the spaced-out probes and the deadline is still seen as landed."""
    audio = make_wav(tmp_path / "a.wav", 3)
    sandbox.faults(processing_delay_s=[2.6, 2.6])

    async def scenario() -> bool:
        async with InvoxClient(settings) as client:
            slot = await client.generate_presigned_url("audio/wav")
            await client.upload(slot.presigned_url, audio, "audio/wav")
            return await confirm_landed(client, slot.request_id, 3.4)  # probes 0-1.7 s, then 3.4 s

    assert asyncio.run(scenario()) is True


def test_a_slow_answer_is_lost_to_the_client_but_the_work_is_done(
    settings: InvoxSettings, sandbox: SandboxControl, tmp_path: Path
) -> None:
    audio = make_wav(tmp_path / "a.wav", 2)
    sandbox.faults(slow_rate={"upload": 1.0}, slow_s=1.0)
    quick = settings.model_copy(update={"read_timeout_s": 0.2})

    async def scenario() -> None:
        async with InvoxClient(quick) as client:
            slot = await client.generate_presigned_url("audio/wav")
            with pytest.raises(ResponseLostError):
                await client.upload(slot.presigned_url, audio, "audio/wav")

    asyncio.run(scenario())
    stats = sandbox.stats()
    assert (
        list(stats["uploads_by_sha256"].values()) == [1] and stats["injected"]["slow:upload"] == 1
    )


def test_a_stalled_upload_outlives_its_url_and_still_lands(
    settings: InvoxSettings, sandbox: SandboxControl, tmp_path: Path
) -> None:
    audio = make_wav(tmp_path / "a.wav", 3)
    sandbox.faults(stall_upload_rate=1.0, stall_upload_s=2.5, url_ttl_s=2.0)  # 1-2 s of life

    async def scenario() -> None:
        async with InvoxClient(settings) as client:
            slot = await client.generate_presigned_url("audio/wav")
            await client.upload(slot.presigned_url, audio, "audio/wav")  # checked at the start
            assert time.time() >= int(httpx.URL(slot.presigned_url).params["expires"])

    asyncio.run(scenario())
    assert sandbox.stats()["injected"]["stall:upload"] == 1


def test_sentinel_token_and_transcript_settings(tmp_path: Path) -> None:
    settings = SandboxSettings(processing="instant", fixed_token="tok-123", instant_text="hello")
    audio = make_wav(tmp_path / "a.wav", 4)
    with SandboxServer(settings) as server:
        response = httpx.post(
            server.base_url + "/api/v1/token", auth=(settings.app_id, settings.api_key)
        )
        assert response.json()["accessToken"] == "tok-123"

        async def scenario() -> set[str]:
            async with InvoxClient(client_settings_for(server)) as client:
                result = await client.transcribe_file(audio)
            return {s.text for s in result.segments}

        assert asyncio.run(scenario()) == {"hello"}


def test_malformed_answers_are_counted(settings: InvoxSettings, sandbox: SandboxControl) -> None:
    sandbox.faults(malformed_rate={"presign": 1.0})

    async def scenario() -> None:
        async with InvoxClient(settings) as client:
            with pytest.raises(ResponseFormatError, match="generate-presigned-url response"):
                await client.generate_presigned_url("audio/wav")

    asyncio.run(scenario())
    assert sandbox.stats()["injected"]["malformed:presign"] == 1
