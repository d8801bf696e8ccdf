"""The client against the sandbox over loopback: every endpoint and every error path."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr

from invox import (
    APIUnreachableError,
    AuthenticationError,
    InvoxClient,
    InvoxSettings,
    NotFoundError,
    PermissionDeniedError,
    PollPolicy,
    RateLimitError,
    ServerError,
    Transcription,
    UploadURLRejectedError,
)
from invox._client import SMALL_FILE_BYTES
from sandbox.server import SandboxServer
from sandbox.settings import SandboxSettings

from ..conftest import SAMPLES, client_settings_for
from ..helpers import SandboxControl

T = TypeVar("T")
WAV = SAMPLES / "visit-001.wav"
FAST = PollPolicy(timeout_s=20, first_delay_s=0.02, max_delay_s=0.2)


def with_client(settings: InvoxSettings, action: Callable[[InvoxClient], Awaitable[T]]) -> T:
    """Run one async action with a fresh client and close it."""

    async def main() -> T:
        async with InvoxClient(settings) as client:
            return await action(client)

    return asyncio.run(main())


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the happy path and the version header ---------------------------------------------------


def test_full_cycle_transcribes_and_counts_one_call_each(
    settings: InvoxSettings, sandbox: SandboxControl
) -> None:
    result = with_client(settings, lambda c: c.transcribe_file(WAV, policy=FAST))
    assert result.status == "COMPLETED" and result.segments and result.text
    assert all(s.end >= s.start for s in result.segments)
    assert result.vtt is not None and result.vtt.startswith("WEBVTT")
    stats = sandbox.stats()
    assert stats["requests"]["token"] == 1
    assert stats["requests"]["presign"] == 1
    assert stats["requests"]["upload"] == 1
    assert stats["uploads_by_sha256"] == {sha256_of(WAV): 1}


def test_small_and_large_files_arrive_byte_for_byte(
    settings: InvoxSettings, sandbox: SandboxControl, tmp_path: Path
) -> None:
    """A small file is read whole and a large one streamed in chunks: both land intact."""
    small = tmp_path / "small.wav"
    small.write_bytes(WAV.read_bytes()[: SMALL_FILE_BYTES - 1])
    large = tmp_path / "large.wav"
    large.write_bytes((WAV.read_bytes() * (SMALL_FILE_BYTES // WAV.stat().st_size + 2))[:-7])
    chunked = settings.model_copy(update={"upload_chunk_bytes": 64 * 1024})

    async def put_both(client: InvoxClient) -> None:
        for path in (small, large):
            slot = await client.generate_presigned_url("audio/wav")
            await client.upload(slot.presigned_url, path, "audio/wav")

    with_client(chunked, put_both)
    assert large.stat().st_size > SMALL_FILE_BYTES
    assert sandbox.stats()["uploads_by_sha256"] == {sha256_of(small): 1, sha256_of(large): 1}


def test_older_api_version_gets_no_vtt(settings: InvoxSettings, sandbox: SandboxControl) -> None:
    old = settings.model_copy(update={"api_version": "2025-10-01"})
    result = with_client(old, lambda c: c.transcribe_file(WAV, policy=FAST))
    assert result.status == "COMPLETED" and result.vtt is None


def test_pending_before_upload_then_unknown_id_is_not_found(settings: InvoxSettings) -> None:
    async def action(client: InvoxClient) -> tuple[Transcription, NotFoundError]:
        slot = await client.generate_presigned_url("audio/wav")
        pending = await client.get_transcription(slot.request_id)
        with pytest.raises(NotFoundError) as info:
            await client.get_transcription("no-such-request")
        return pending, info.value

    pending, missing = with_client(settings, action)
    assert pending.status == "PENDING" and pending.segments == ()
    assert missing.upstream_error_type == "transcriptionNotFound"
    assert "Transcription not found" in missing.message


@pytest.fixture(scope="module", params=["processingStatus", "transcriptionStatus"])
def single_spelling_server(request: pytest.FixtureRequest) -> Iterator[SandboxServer]:
    """A sandbox that sends the status under only one of the two published keys."""
    settings = SandboxSettings(processing="instant", status_field=request.param)
    with SandboxServer(settings) as server:
        yield server


def test_status_is_read_whichever_key_the_server_uses(
    single_spelling_server: SandboxServer,
) -> None:
    settings = client_settings_for(single_spelling_server)
    result = with_client(settings, lambda c: c.transcribe_file(WAV, policy=FAST))
    assert result.status == "COMPLETED" and result.segments


# --- tokens ----------------------------------------------------------------------------------


def test_token_is_fetched_once_and_reused(settings: InvoxSettings, sandbox: SandboxControl) -> None:
    async def action(client: InvoxClient) -> None:
        slot = await client.generate_presigned_url("audio/wav")
        for _ in range(3):
            await client.get_transcription(slot.request_id)

    with_client(settings, action)
    assert sandbox.requests("token") == 1


def test_token_is_refreshed_before_it_expires(
    settings: InvoxSettings, sandbox: SandboxControl
) -> None:
    sandbox.faults(token_ttl_s=1.0)

    async def action(client: InvoxClient) -> int:
        slot = await client.generate_presigned_url("audio/wav")
        deadline = time.monotonic() + 5
        while client.token_fetches < 2 and time.monotonic() < deadline:
            await client.get_transcription(slot.request_id)
            await asyncio.sleep(0.05)
        return client.token_fetches

    assert with_client(settings, action) >= 2
    responses = sandbox.stats()["responses"]
    assert "401" not in responses.get("status", {}) and "401" not in responses.get("presign", {})


def test_a_401_refreshes_the_token_and_retries_once(
    settings: InvoxSettings, sandbox: SandboxControl
) -> None:
    async def action(client: InvoxClient) -> int:
        await client.authenticate()
        sandbox.reset()  # the server forgets every token: the cached one is now refused
        with pytest.raises(NotFoundError):
            await client.get_transcription("after-reset")
        return client.token_fetches

    assert with_client(settings, action) == 2
    stats = sandbox.stats()
    assert stats["requests"]["token"] == 1
    assert stats["responses"]["status"] == {"401": 1, "404": 1}


def test_bad_credentials_say_what_to_fix_without_echoing_the_key(settings: InvoxSettings) -> None:
    wrong = settings.model_copy(update={"api_key": SecretStr("sentinel-wrong-key")})
    with pytest.raises(AuthenticationError) as info:
        with_client(wrong, lambda c: c.authenticate())
    assert "INVOX_API_KEY" in info.value.message
    assert "sentinel-wrong-key" not in str(info.value) and "sentinel-wrong-key" not in repr(
        info.value
    )


def test_missing_permission_is_a_forbidden_error(
    settings: InvoxSettings, sandbox: SandboxControl
) -> None:
    sandbox.faults(forbidden=True)
    with pytest.raises(PermissionDeniedError, match="BATCH-TRANSCRIBE"):
        with_client(settings, lambda c: c.generate_presigned_url("audio/wav"))


# --- transient faults ------------------------------------------------------------------------


def test_429_carries_retry_after_and_is_retryable(
    settings: InvoxSettings, sandbox: SandboxControl
) -> None:
    sandbox.faults(rate_429={"presign": 1.0}, retry_after_s=2)
    with pytest.raises(RateLimitError) as info:
        with_client(settings, lambda c: c.generate_presigned_url("audio/wav"))
    assert info.value.retryable and info.value.retry_after == 2.0 and info.value.status_code == 429


@pytest.mark.parametrize("endpoint", ["status", "upload", "token"])
def test_503_is_a_retryable_server_error_on_every_endpoint(
    settings: InvoxSettings, sandbox: SandboxControl, endpoint: str
) -> None:
    sandbox.faults(rate_503={endpoint: 1.0})

    async def action(client: InvoxClient) -> None:
        slot = await client.generate_presigned_url("audio/wav") if endpoint != "token" else None
        if endpoint == "upload" and slot:
            await client.upload(slot.presigned_url, WAV, "audio/wav")
        if endpoint == "status" and slot:
            await client.get_transcription(slot.request_id)
        if endpoint == "token":
            await client.authenticate()

    with pytest.raises(ServerError) as info:
        with_client(settings, action)
    assert info.value.retryable and info.value.status_code == 503
    assert info.value.retry_after == 1.0  # the sandbox's default hint, honoured by callers


def test_injected_500_is_a_retryable_server_error_without_a_hint(
    settings: InvoxSettings, sandbox: SandboxControl
) -> None:
    sandbox.faults(rate_500={"presign": 1.0})
    with pytest.raises(ServerError) as info:
        with_client(settings, lambda c: c.generate_presigned_url("audio/wav"))
    assert info.value.status_code == 500 and info.value.retryable and info.value.retry_after is None


def test_sandbox_jobs_take_about_two_seconds_by_default() -> None:
    from sandbox import Faults

    assert Faults().processing_delay_s == (1.5, 2.5)


def test_polling_rides_out_transient_status_faults(
    settings: InvoxSettings, sandbox: SandboxControl
) -> None:
    sandbox.faults(rate_503={"status": 0.5}, rate_429={"status": 0.3}, retry_after_s=0, seed=7)
    result = with_client(settings, lambda c: c.transcribe_file(WAV, policy=FAST))
    assert result.status == "COMPLETED"
    assert sandbox.stats()["responses"]["status"].keys() >= {"200"}


def test_unreachable_api_is_its_own_error_type() -> None:
    settings = InvoxSettings(base_url="http://127.0.0.1:9", app_id="a", api_key=SecretStr("k"))
    with pytest.raises(APIUnreachableError) as info:
        with_client(settings, lambda c: c.authenticate())
    assert info.value.error_type == "api_unreachable" and info.value.retryable


# --- uploads ---------------------------------------------------------------------------------


def test_upload_with_a_different_content_type_is_rejected(settings: InvoxSettings) -> None:
    async def action(client: InvoxClient) -> None:
        slot = await client.generate_presigned_url("audio/flac")
        await client.upload(slot.presigned_url, WAV, "audio/wav")

    with pytest.raises(UploadURLRejectedError) as info:
        with_client(settings, action)
    assert "request a new one" in info.value.message and "signature" not in info.value.message


def test_expired_upload_url_is_rejected_and_a_fresh_one_works(
    settings: InvoxSettings, sandbox: SandboxControl
) -> None:
    sandbox.faults(url_ttl_s=0)

    async def action(client: InvoxClient) -> UploadURLRejectedError:
        deadline = time.monotonic() + 5
        while True:  # url_ttl_s=0 expires at the next whole second at the latest
            slot = await client.generate_presigned_url("audio/wav")
            try:
                await client.upload(slot.presigned_url, WAV, "audio/wav")
            except UploadURLRejectedError as exc:
                rejected = exc
                break
            assert time.monotonic() < deadline, "upload URL never expired"
        sandbox.faults(url_ttl_s=900)
        fresh = await client.generate_presigned_url("audio/wav")
        await client.upload(fresh.presigned_url, WAV, "audio/wav")
        return rejected

    assert with_client(settings, action).status_code == 403


def test_second_put_to_the_same_url_is_rejected(
    settings: InvoxSettings, sandbox: SandboxControl
) -> None:
    async def action(client: InvoxClient) -> None:
        slot = await client.generate_presigned_url("audio/wav")
        await client.upload(slot.presigned_url, WAV, "audio/wav")
        with pytest.raises(UploadURLRejectedError):
            await client.upload(slot.presigned_url, WAV, "audio/wav")

    with_client(settings, action)
    assert sandbox.stats()["uploads_by_sha256"] == {sha256_of(WAV): 1}


def test_upload_logs_never_show_the_url_signature(
    settings: InvoxSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def action(client: InvoxClient) -> str:
        slot = await client.generate_presigned_url("audio/wav")
        await client.upload(slot.presigned_url, WAV, "audio/wav")
        return slot.presigned_url

    url = with_client(settings, action)
    query = url.split("?", 1)[1]
    assert query and query not in caplog.text
    assert url.split("?", 1)[0] in caplog.text  # the redacted URL is logged, so the check has teeth


def test_empty_audio_ends_in_error_with_a_message(settings: InvoxSettings, tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    result = with_client(settings, lambda c: c.transcribe_file(empty, policy=FAST))
    assert result.status == "ERROR" and result.error_message


def test_forced_job_error_is_reported(settings: InvoxSettings, sandbox: SandboxControl) -> None:
    sandbox.faults(job_error_sha256=[sha256_of(WAV)])
    result = with_client(settings, lambda c: c.transcribe_file(WAV, policy=FAST))
    assert result.status == "ERROR" and result.error_message and result.segments == ()


# --- callbacks -------------------------------------------------------------------------------


def test_callback_is_delivered_signed_and_verifies(
    settings: InvoxSettings, sandbox: SandboxControl, callback_receiver: Any
) -> None:
    from invox import CallbackSignatureError, verify_callback_signature

    async def action(client: InvoxClient) -> str:
        slot = await client.generate_presigned_url("audio/wav", callback_url=callback_receiver.url)
        await client.upload(slot.presigned_url, WAV, "audio/wav")
        await client.wait_for_transcription(slot.request_id, FAST)
        return slot.request_id

    request_id = with_client(settings, action)
    delivered = callback_receiver.wait_for(1)[0]
    assert delivered["headers"]["user-agent"] == "Invox-Medical-Webhook/1.0"
    body = delivered["body"]
    assert body["requestId"] == request_id and body["transcription"]
    secret = settings.callback_secret.get_secret_value()  # type: ignore[union-attr]
    api_key = settings.callback_api_key.get_secret_value()  # type: ignore[union-attr]
    verify_callback_signature(body, secret=secret, api_key=api_key)
    tampered = {**body, "transcription": [{**body["transcription"][0], "text": "forged"}]}
    with pytest.raises(CallbackSignatureError):
        verify_callback_signature(tampered, secret=secret, api_key=api_key)
    with pytest.raises(CallbackSignatureError):
        verify_callback_signature(body, secret="wrong-secret", api_key=api_key)


def test_dropped_callbacks_are_never_sent_but_polling_still_works(
    settings: InvoxSettings, sandbox: SandboxControl, callback_receiver: Any
) -> None:
    sandbox.faults(drop_callback_rate=1.0)

    async def action(client: InvoxClient) -> Transcription:
        slot = await client.generate_presigned_url("audio/wav", callback_url=callback_receiver.url)
        await client.upload(slot.presigned_url, WAV, "audio/wav")
        return await client.wait_for_transcription(slot.request_id, FAST)

    assert with_client(settings, action).status == "COMPLETED"
    from ..helpers import wait_until

    wait_until(lambda: sandbox.stats()["callbacks"]["dropped"] == 1)
    assert callback_receiver.received == []
