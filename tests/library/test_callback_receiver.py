"""The callback receiver: pure checks, the durable store, and real signed callbacks over loopback."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from invox import ConfigurationError, InvoxClient, InvoxSettings
from invox._signature import sign_callback
from invox_batch.callbacks import CallbackStore, ReceiverConfig, accept_callback, running_receiver
from invox_batch.errors import CallbackRejected
from sandbox.server import SandboxServer

from ..flow_helpers import make_wav
from ..helpers import SandboxControl, wait_until

SECRET, API_KEY = "test-secret", "test-key"
HMAC = ReceiverConfig("hmac-sha256", 300.0, SECRET, API_KEY)
OPEN = ReceiverConfig("none", 300.0)


def signed(request_id: str = "req-1", text: str = "blood pressure normal", **extra: Any) -> bytes:
    """A callback body signed the way the sandbox (contract §19 guess) signs it."""
    body: dict[str, Any] = {
        "requestId": request_id,
        "transcription": [{"text": text, "start": 0.0, "end": 1.5, "speaker": "0"}],
        "createdAt": extra.pop("created_at", int(time.time() * 1000)),
    }
    body["signature"] = sign_callback(body, secret=SECRET, api_key=API_KEY)
    return json.dumps({**body, **extra}).encode()


def tampered(raw: bytes, text: str = "FORGED") -> bytes:
    """The same delivery with its transcript text changed and the signature left as it was."""
    body = json.loads(raw)
    body["transcription"][0]["text"] = text
    return json.dumps(body).encode()


def reason_of(raw: bytes, store: CallbackStore, config: ReceiverConfig) -> str:
    with pytest.raises(CallbackRejected) as caught:
        accept_callback(raw, store, config)
    return caught.value.reason


def test_valid_callback_is_recorded_once_owner_only(tmp_path: Path) -> None:
    store = CallbackStore(tmp_path / "callbacks")
    assert accept_callback(signed(), store, HMAC) == ("req-1", "recorded")
    record = store.read("req-1")
    assert record is not None and record["payload"]["transcription"][0]["text"].startswith("blood")
    assert record["scheme"] == "hmac-sha256"
    assert stat.S_IMODE(store.path_for("req-1").stat().st_mode) == 0o600
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == []


def test_tampered_unsigned_and_stale_callbacks_are_refused_and_not_recorded(
    tmp_path: Path,
) -> None:
    store = CallbackStore(tmp_path)
    assert reason_of(tampered(signed()), store, HMAC) == "bad_signature"
    unsigned = json.loads(signed())
    del unsigned["signature"]
    assert reason_of(json.dumps(unsigned).encode(), store, HMAC) == "missing_signature"
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    assert reason_of(signed(created_at=an_hour_ago), store, HMAC) == "stale_timestamp"
    assert reason_of(signed(created_at=an_hour_ago), store, OPEN) == "stale_timestamp"
    assert not store.has("req-1")


def test_replay_is_refused_and_duplicate_keeps_the_first_record(tmp_path: Path) -> None:
    store = CallbackStore(tmp_path)
    first = signed(text="first")
    accept_callback(first, store, HMAC)
    assert reason_of(first, store, HMAC) == "replayed"
    resent = signed(text="second", created_at=int(time.time() * 1000) + 5)
    assert accept_callback(resent, store, HMAC) == ("req-1", "duplicate")
    record = store.read("req-1")
    assert record is not None and record["payload"]["transcription"][0]["text"] == "first"


@pytest.mark.parametrize(
    "raw", [b"not json", b"[1, 2]", b'{"requestId": ""}', b'{"requestId": 7}', b"\xff\xfe"]
)
def test_malformed_bodies_are_a_400(tmp_path: Path, raw: bytes) -> None:
    with pytest.raises(CallbackRejected) as caught:
        accept_callback(raw, CallbackStore(tmp_path), OPEN)
    assert (caught.value.reason, caught.value.status) == ("malformed", 400)


def test_open_scheme_checks_freshness_and_replays_but_not_signatures(tmp_path: Path) -> None:
    store = CallbackStore(tmp_path)
    forged = tampered(signed())
    assert accept_callback(forged, store, OPEN) == ("req-1", "recorded")
    assert reason_of(forged, store, OPEN) == "replayed"


def test_request_ids_never_become_paths(tmp_path: Path) -> None:
    store = CallbackStore(tmp_path / "callbacks")
    accept_callback(signed(request_id="../../escape"), store, HMAC)
    assert store.has("../../escape")
    assert sorted(p.parent for p in tmp_path.rglob("*.json")) == [store.root]


def test_scheme_comes_from_the_settings() -> None:
    on = InvoxSettings(verify_callback_signatures=True)
    with pytest.raises(ConfigurationError, match="INVOX_CALLBACK_SECRET"):
        ReceiverConfig.from_settings(on)
    keys = {"callback_secret": SecretStr("s"), "callback_api_key": SecretStr("k")}
    assert ReceiverConfig.from_settings(on.model_copy(update=keys)).scheme == "hmac-sha256"
    assert ReceiverConfig.from_settings(InvoxSettings()).scheme == "none"
    with pytest.raises(ConfigurationError, match="unknown callback scheme"):
        ReceiverConfig.from_settings(InvoxSettings(), "rot13")


def test_callbacks_are_not_verified_unless_switched_on(tmp_path: Path) -> None:
    unsigned = json.loads(signed())
    del unsigned["signature"]
    config = ReceiverConfig.from_settings(InvoxSettings())
    assert accept_callback(json.dumps(unsigned).encode(), CallbackStore(tmp_path), config) == (
        "req-1",
        "recorded",
    )


def test_switched_on_checks_use_the_configured_keys_and_tolerance(tmp_path: Path) -> None:
    on = InvoxSettings(
        verify_callback_signatures=True,
        callback_secret=SecretStr(SECRET),
        callback_api_key=SecretStr(API_KEY),
        callback_tolerance_s=5,
    )
    config, store = ReceiverConfig.from_settings(on), CallbackStore(tmp_path)
    now = int(time.time() * 1000)
    raw = signed(created_at=now)
    with pytest.raises(CallbackRejected, match="createdAt") as stale:
        accept_callback(raw, store, config, now_ms=now + 10_000)
    assert stale.value.reason == "stale_timestamp"
    other = raw.replace(b'"req-1"', b'"other"')
    assert reason_of(other, store, config) == "bad_signature"
    wrong = ReceiverConfig.from_settings(on.model_copy(update={"callback_secret": SecretStr("x")}))
    assert reason_of(raw, store, wrong) == "bad_signature"
    assert accept_callback(raw, store, config, now_ms=now) == ("req-1", "recorded")
    record = store.read("req-1")
    assert record is not None and record["payload"] == json.loads(raw)


# --- over loopback: the sandbox sends real signed callbacks to the real receiver -------------


@pytest.fixture
def receiver(sandbox_server: SandboxServer, tmp_path: Path) -> Iterator[tuple[str, CallbackStore]]:
    """The receiver on a free loopback port, checking the sandbox's signing keys."""
    config = ReceiverConfig(
        "hmac-sha256",
        300.0,
        sandbox_server.settings.callback_secret,
        sandbox_server.settings.callback_api_key,
    )
    store = CallbackStore(tmp_path / "callbacks")
    with running_receiver(store, config) as url:
        yield url, store


async def _submit(settings: InvoxSettings, audio: Path, callback_url: str) -> str:
    async with InvoxClient(settings) as client:
        slot = await client.generate_presigned_url("audio/wav", callback_url)
        await client.upload(slot.presigned_url, audio, "audio/wav")
        return slot.request_id


def test_sandbox_callbacks_are_verified_recorded_and_forgeries_refused(
    settings: InvoxSettings,
    sandbox: SandboxControl,
    receiver: tuple[str, CallbackStore],
    tmp_path: Path,
) -> None:
    url, store = receiver
    request_id = asyncio.run(_submit(settings, make_wav(tmp_path / "a.wav", 1), url))
    record = wait_until(lambda: store.read(request_id), timeout_s=20)
    genuine = json.dumps(record["payload"]).encode()
    assert [a["status"] for a in sandbox.callbacks()] == [200]

    with httpx.Client(timeout=10) as http:
        replay = http.post(url, content=genuine)
        forged = http.post(url, content=tampered(genuine))
        body = json.loads(genuine)
        stale = http.post(url, content=json.dumps({**body, "createdAt": 1}).encode())
        other = http.post(url, content=tampered(genuine).replace(request_id.encode(), b"other"))
    assert (replay.status_code, replay.json()) == (409, {"error": "replayed"})
    assert (forged.status_code, forged.json()) == (401, {"error": "bad_signature"})
    assert stale.status_code == 401  # createdAt is signed: changing it breaks the signature too
    assert other.status_code == 401 and not store.has("other")
    assert store.read(request_id) == record  # nothing a forger sent changed the record


def test_a_port_in_use_is_a_configuration_error(tmp_path: Path) -> None:
    store = CallbackStore(tmp_path / "callbacks")
    with (
        running_receiver(store, OPEN) as first,
        pytest.raises(ConfigurationError, match="cannot listen"),
        running_receiver(store, OPEN, port=httpx.URL(first).port or 0),
    ):
        pass
