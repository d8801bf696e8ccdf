"""Sandbox knobs for performance work: duration-proportional processing, an API concurrency
limit, and time-to-result stats; checked over loopback against real sandboxes."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
from pydantic import ValidationError

from invox_batch.cli._sandbox import _fault_overrides
from sandbox.server import SandboxServer
from sandbox.settings import Faults, SandboxSettings

from ..helpers import SandboxControl, clear_env, wait_until
from .test_sandbox import SAMPLE_WAV, Api

# A sleep never ends early; on a loaded machine it may end late, by about this much at most.
LATE_S = 0.3
SEED = 7


def _wav(path: Path, seconds: float, rate: int = 8000) -> bytes:
    """A quiet noise WAV of exactly ``seconds`` (its header gives the duration)."""
    noise = np.random.default_rng(int(seconds * 1000)).normal(0, 0.01, int(seconds * rate))
    soundfile.write(path, noise.astype(np.float32), rate, subtype="PCM_16")
    return path.read_bytes()


def _factor(low: float, high: float, draw: int = 0) -> float:
    """The ``draw``-th factor the seeded ``processing_rtf`` stream yields."""
    stream = random.Random(f"{SEED}:processing_rtf")
    values = [stream.uniform(low, high) for _ in range(draw + 1)]
    return values[-1]


def _held(api: Api, pool: ThreadPoolExecutor) -> Future[httpx.Response]:
    """A get-transcription on its own connection, sitting in the latency while the test acts."""
    url = str(api.http.base_url).rstrip("/") + "/api/v1/get-transcription"
    body = {"requestId": "held"}
    return pool.submit(httpx.post, url, json=body, headers=api.headers(), trust_env=False)


def _until_requested(api: Api, endpoint: str, count: int) -> None:
    """Wait until ``count`` requests to ``endpoint`` have reached the sandbox."""
    wait_until(lambda: api.stats()["requests"][endpoint] >= count)


@pytest.fixture
def api(sandbox_server: SandboxServer, sandbox: SandboxControl) -> Iterator[Api]:
    """Raw calls against the (freshly reset) session sandbox in instant mode."""
    client = Api(sandbox_server.base_url)
    yield client
    client.http.close()


# -- Faults validation and configuration ------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"processing_rtf": (0.5, 0.2)},
        {"processing_rtf": (0.0, 0.5)},
        {"processing_rtf": (-0.1, 0.5)},
        {"processing_rtf": (0.2,)},
        {"max_inflight": 0},
        {"max_inflight": -1},
    ],
)
def test_faults_reject_bad_rtf_and_limits(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Faults.model_validate(bad)


def test_faults_defaults_and_equal_bounds() -> None:
    assert Faults().processing_rtf is None and Faults().max_inflight is None
    faults = Faults(processing_rtf=(0.3, 0.3), max_inflight=1)
    assert faults.processing_rtf == (0.3, 0.3) and faults.max_inflight == 1


def test_env_sets_the_new_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_env(
        monkeypatch, "INVOX_SANDBOX_FAULTS__PROCESSING_RTF", "INVOX_SANDBOX_FAULTS__MAX_INFLIGHT"
    )
    monkeypatch.setenv("INVOX_SANDBOX_FAULTS__PROCESSING_RTF", "[0.2, 0.5]")
    monkeypatch.setenv("INVOX_SANDBOX_FAULTS__MAX_INFLIGHT", "4")
    faults = SandboxSettings().faults
    assert faults.processing_rtf == (0.2, 0.5) and faults.max_inflight == 4


def test_cli_flags_shape_the_new_faults() -> None:
    flags: dict[str, Any] = dict.fromkeys(
        ("rate_429", "rate_503", "rate_500", "latency", "processing_delay", "token_ttl"), None
    )
    flags.update(dict.fromkeys(("url_ttl", "job_error_rate", "drop_callback_rate", "seed")))
    overrides = _fault_overrides(**flags, processing_rtf=(0.2, 0.5), max_inflight=3)
    assert overrides == {"processing_rtf": (0.2, 0.5), "max_inflight": 3}


def test_put_faults_sets_and_validates_the_new_faults(api: Api) -> None:
    merged = api.faults(processing_rtf=[0.2, 0.5], max_inflight=2)
    assert merged["processing_rtf"] == [0.2, 0.5] and merged["max_inflight"] == 2
    for bad in ({"processing_rtf": [0.5, 0.2]}, {"max_inflight": 0}):
        assert api.control("PUT", "faults", json=bad).status_code == 422
    assert api.faults(processing_rtf=None, max_inflight=None)["max_inflight"] is None


# -- processing_rtf ---------------------------------------------------------------------------


def _processed(api: Api, audio: bytes) -> dict[str, Any]:
    """Upload ``audio``, poll it to the end, and return the timings that followed."""
    api.transcribe(audio)
    timings: dict[str, Any] = api.stats()["timings"]
    return timings


def test_rtf_delay_is_proportional_to_the_audio_duration(api: Api, tmp_path: Path) -> None:
    low, high = 0.2, 0.5
    api.faults(processing_rtf=[low, high], seed=SEED)
    short = _processed(api, _wav(tmp_path / "short.wav", 0.5))
    both = _processed(api, _wav(tmp_path / "long.wav", 2.0))
    short_s = short["mean_processing_s"]
    long_s = 2 * both["mean_processing_s"] - short_s
    short_ideal, long_ideal = _factor(low, high, 0) * 0.5, _factor(low, high, 1) * 2.0
    assert low * 0.5 <= short_ideal <= short_s <= short_ideal + LATE_S
    assert low * 2.0 <= long_ideal <= long_s <= long_ideal + LATE_S
    assert long_s > short_s


def test_rtf_falls_back_to_the_delay_range_for_unreadable_audio(api: Api) -> None:
    api.faults(processing_rtf=[0.01, 0.01], processing_delay_s=[0.4, 0.4])
    timings = _processed(api, b"not audio at all" * 64)
    assert 0.4 <= timings["mean_processing_s"] <= 0.4 + LATE_S


def test_rtf_applies_in_asr_mode(asr_sandbox_server: SandboxServer) -> None:
    control = SandboxControl(asr_sandbox_server.base_url)
    control.reset()
    api = Api(asr_sandbox_server.base_url)
    duration = soundfile.info(str(SAMPLE_WAV)).duration
    control.faults(processing_rtf=[0.25, 0.25], processing_delay_s=[0, 0])
    url, request_id = api.slot()
    assert api.put(url, SAMPLE_WAV.read_bytes()).status_code == 200
    # The first job starts the recognizer's worker process: allow for that.
    wait_until(lambda: api.status(request_id).json()["processingStatus"] != "PENDING", timeout_s=60)
    assert api.status(request_id).json()["processingStatus"] == "COMPLETED"
    assert control.stats()["timings"]["mean_processing_s"] >= 0.25 * duration
    control.reset()
    api.http.close()


# -- heavy tail -------------------------------------------------------------------------------


def test_heavy_tail_slows_the_same_share_of_audio_every_time(api: Api) -> None:
    audios = [bytes([n]) * 256 for n in range(8)]

    def slow(audio: bytes, share: float = 0.5) -> bool:
        api.faults(heavy_tail_share=share, heavy_tail_s=0.8, processing_delay_s=[0, 0], seed=SEED)
        url, request_id = api.slot()
        assert api.put(url, audio).status_code == 200
        uploaded = time.monotonic()
        wait_until(lambda: api.status(request_id).json()["processingStatus"] != "PENDING")
        return time.monotonic() - uploaded >= 0.8

    first = [slow(a) for a in audios]
    assert 0 < sum(first) < len(audios)  # a share, not all or none
    assert [slow(a) for a in audios[:4]] == first[:4]  # decided by the audio, not by chance
    assert not slow(audios[first.index(True)], share=0.0)


def test_env_and_flags_set_the_heavy_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_env(monkeypatch, "INVOX_SANDBOX_FAULTS__HEAVY_TAIL_SHARE")
    monkeypatch.setenv("INVOX_SANDBOX_FAULTS__HEAVY_TAIL_SHARE", "0.02")
    assert SandboxSettings().faults.heavy_tail_share == 0.02
    assert SandboxSettings().faults.heavy_tail_s == 20.0
    flags: dict[str, Any] = dict.fromkeys(
        ("rate_429", "rate_503", "rate_500", "latency", "processing_delay", "token_ttl"), None
    )
    flags.update(dict.fromkeys(("url_ttl", "job_error_rate", "drop_callback_rate", "seed")))
    overrides = _fault_overrides(
        **flags, processing_rtf=None, max_inflight=None, heavy_tail=(0.02, 20.0)
    )
    assert overrides == {"heavy_tail_share": 0.02, "heavy_tail_s": 20.0}
    with pytest.raises(ValidationError):
        Faults(heavy_tail_share=1.5)


# -- max_inflight -----------------------------------------------------------------------------


def test_max_inflight_refuses_api_calls_beyond_the_limit(api: Api) -> None:
    url, _ = api.slot()
    api.faults(max_inflight=1, latency_s={"status": 1.0}, retry_after_s=1.5)
    with ThreadPoolExecutor(1) as pool:
        held = _held(api, pool)
        _until_requested(api, "status", 1)
        refused = api.status("other")
        token = api.http.post("/api/v1/token", headers={"Authorization": "Basic eDp5"})
        uploaded = api.put(url)
        assert held.result().status_code == 404  # admitted: waited out its latency
    assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
    assert refused.json() == {"message": "Too many requests"}
    assert token.status_code == 429  # token, presign and status share one limit
    assert uploaded.status_code == 200  # object storage is not the API
    stats = api.stats()
    assert stats["injected"] == {"limit:status": 1, "limit:token": 1}
    assert stats["responses"]["status"] == {"404": 1, "429": 1}
    assert stats["max_inflight_seen"] == 1


def test_max_inflight_seen_counts_concurrent_api_calls(api: Api) -> None:
    api.faults(latency_s={"status": 1.0})
    with ThreadPoolExecutor(2) as pool:
        held = [_held(api, pool) for _ in range(2)]
        _until_requested(api, "status", 2)
        assert [h.result().status_code for h in held] == [404, 404]
    stats = api.stats()
    assert stats["max_inflight_seen"] == 2 and stats["injected"] == {}
    api.control("POST", "reset")
    assert api.stats()["max_inflight_seen"] == 0


# -- timings ----------------------------------------------------------------------------------


def test_timings_are_empty_after_reset(api: Api) -> None:
    assert api.stats()["timings"] == {
        "jobs": 0,
        "mean_processing_s": None,
        "mean_time_to_result_s": None,
        "status_calls_per_job": None,
    }


def test_timings_follow_the_jobs_seen_terminal(api: Api, sandbox: SandboxControl) -> None:
    api.faults(processing_delay_s=[0.3, 0.3])
    url, request_id = api.slot()
    assert api.put(url).status_code == 200
    calls = 0

    def terminal() -> bool:
        nonlocal calls
        calls += 1
        return bool(api.status(request_id).json()["processingStatus"] != "PENDING")

    wait_until(terminal)
    timings = api.stats()["timings"]
    assert timings["jobs"] == 1 and calls >= 2
    assert timings["status_calls_per_job"] == calls
    assert 0.3 <= timings["mean_processing_s"] <= timings["mean_time_to_result_s"]

    api.status(request_id)  # a repeat read counts as a call, not as a second result
    url, _ = api.slot()
    assert api.put(url).status_code == 200  # finishes, but no client ever sees it
    wait_until(lambda: sandbox.stats()["jobs"]["COMPLETED"] == 2)
    again = api.stats()["timings"]
    assert again["jobs"] == 1 and again["status_calls_per_job"] == calls + 1
    assert again["mean_time_to_result_s"] == timings["mean_time_to_result_s"]
