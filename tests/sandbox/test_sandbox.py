"""The sandbox's wire contract, checked with raw httpx over loopback (instant mode)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import numpy as np
import pytest
import soundfile
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from invox._signature import CallbackSignatureError, verify_callback_signature
from sandbox.models import InvalidTransition, Job, JobState, Segment
from sandbox.server import SandboxServer, ThreadedServer
from sandbox.settings import Faults, SandboxSettings
from sandbox.transcripts import build_vtt, instant_transcript

T = TypeVar("T")

MAX_UPLOAD = 256 * 1024
AUDIO = b"RIFF-not-really-audio-" * 64  # instant mode completes any non-empty bytes
AUDIO_SHA = hashlib.sha256(AUDIO).hexdigest()
SAMPLE_WAV = Path(__file__).resolve().parents[2] / "data" / "sample" / "visit-001.wav"
NEW = "2025-11-01"
OLD = "2025-10-01"


# -- helpers ----------------------------------------------------------------------------------


def wait_until(probe: Callable[[], T | None], timeout_s: float = 5.0) -> T:
    """Poll ``probe`` until truthy, failing at a monotonic deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met within {timeout_s}s"
        time.sleep(0.01)


def basic(app_id: str = "sandbox-app", api_key: str = "sandbox-key") -> dict[str, str]:
    """The token request's Basic header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{app_id}:{api_key}".encode()).decode()}


class Api:
    """Raw calls against one sandbox, with a token fetched up front."""

    def __init__(self, base_url: str, version: str | None = NEW) -> None:
        self.http = httpx.Client(base_url=base_url, trust_env=False, timeout=10)
        self.version = version
        self.token = self.http.post("/api/v1/token", headers=basic()).json()["accessToken"]

    def headers(self, version: str | None = "default") -> dict[str, str]:
        """Bearer auth plus the version header (``None`` omits it)."""
        chosen = self.version if version == "default" else version
        headers = {"Authorization": f"Bearer {self.token}"}
        if chosen is not None:
            headers["X-Invox-Medical-Api-Version"] = chosen
        return headers

    def presign(self, mime: str = "audio/wav", **extra: Any) -> httpx.Response:
        """POST generate-presigned-url."""
        body = {"mimeType": mime, **extra}
        return self.http.post("/api/v1/generate-presigned-url", json=body, headers=self.headers())

    def slot(self, mime: str = "audio/wav", **extra: Any) -> tuple[str, str]:
        """(presignedUrl, requestId) for a fresh job."""
        response = self.presign(mime, **extra)
        assert response.status_code == 200, response.text
        return response.json()["presignedUrl"], response.json()["requestId"]

    def status(self, request_id: Any, version: str | None = "default") -> httpx.Response:
        """POST get-transcription."""
        return self.http.post(
            "/api/v1/get-transcription",
            json={"requestId": request_id},
            headers=self.headers(version),
        )

    def put(self, url: str, data: bytes = AUDIO, mime: str | None = "audio/wav") -> httpx.Response:
        """PUT to a pre-signed URL, no auth header."""
        headers = {} if mime is None else {"Content-Type": mime}
        return self.http.put(url, content=data, headers=headers)

    def finished(self, request_id: str, version: str | None = "default") -> dict[str, Any]:
        """Poll until the job leaves PENDING."""

        def probe() -> dict[str, Any] | None:
            body: dict[str, Any] = self.status(request_id, version).json()
            status = body.get("processingStatus", body.get("transcriptionStatus"))
            return None if status == "PENDING" else body

        return wait_until(probe)

    def transcribe(self, data: bytes = AUDIO, **extra: Any) -> tuple[str, dict[str, Any]]:
        """Presign, upload, wait: (requestId, final status body)."""
        url, request_id = self.slot(**extra)
        assert self.put(url, data).status_code == 200
        return request_id, self.finished(request_id)

    def control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A control-plane call."""
        return self.http.request(method, f"/_sandbox/{path}", **kwargs)

    def faults(self, **changes: Any) -> dict[str, Any]:
        """Merge fault changes; returns the full fault set."""
        response = self.control("PUT", "faults", json=changes)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        """The control plane's counters."""
        return self.control("GET", "stats").json()  # type: ignore[no-any-return]


class Receiver:
    """A callback endpoint (Starlette under ThreadedServer) that can fail its first N calls."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first = 0
        self.server = ThreadedServer(
            Starlette(routes=[Route("/cb", self._handle, methods=["POST"])])
        )

    @property
    def url(self) -> str:
        return f"{self.server.base_url}/cb"

    async def _handle(self, request: Request) -> Response:
        self.received.append({"headers": dict(request.headers), "body": await request.json()})
        return Response(status_code=500 if len(self.received) <= self.fail_first else 204)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    settings = SandboxSettings(
        processing="instant",
        max_upload_bytes=MAX_UPLOAD,
        callback_backoff_s=0.01,
        callback_retries=2,
        callback_timeout_s=2.0,
    )
    with SandboxServer(settings) as running:
        yield running


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[Receiver]:
    receiver = Receiver()
    with receiver.server:
        yield receiver


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    receiver_server.received.clear()
    receiver_server.fail_first = 0
    return receiver_server


@pytest.fixture
def api(server: SandboxServer) -> Iterator[Api]:
    httpx.post(f"{server.base_url}/_sandbox/reset").raise_for_status()
    client = Api(server.base_url)
    yield client
    client.http.close()


@pytest.fixture(scope="module")
def alt_server() -> Iterator[SandboxServer]:
    """Non-default spellings: normalised errors, one status key, callbacks on error."""
    settings = SandboxSettings(
        processing="instant",
        normalise_error_messages=True,
        status_field="transcriptionStatus",
        callback_on_error=True,
        callback_backoff_s=0.01,
        default_api_version=NEW,
        forbidden_error_type="noBatchTranscribe",
    )
    with SandboxServer(settings) as running:
        yield running


@pytest.fixture
def alt(alt_server: SandboxServer) -> Iterator[Api]:
    httpx.post(f"{alt_server.base_url}/_sandbox/reset").raise_for_status()
    client = Api(alt_server.base_url, version=None)
    yield client
    client.http.close()


# -- token ------------------------------------------------------------------------------------


def test_token_for_good_credentials(api: Api) -> None:
    response = api.http.post("/api/v1/token", headers=basic())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"accessToken", "expiresIn"}
    assert body["expiresIn"] == 7200 and len(body["accessToken"]) >= 32


@pytest.mark.parametrize(
    "headers",
    [
        basic(api_key="wrong"),
        basic(app_id="other"),
        {},
        {"Authorization": "Bearer sandbox-key"},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    ],
)
def test_token_refused_for_bad_credentials(api: Api, headers: dict[str, str]) -> None:
    response = api.http.post("/api/v1/token", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid credentials"}


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic xyz", "Bearer"])
def test_api_calls_need_a_live_bearer_token(api: Api, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for path, body in [
        ("/api/v1/generate-presigned-url", {"mimeType": "audio/wav"}),
        ("/api/v1/get-transcription", {"requestId": "x"}),
    ]:
        response = api.http.post(path, json=body, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"messsage": "Unauthorized"}


def test_token_expires_after_its_ttl(api: Api) -> None:
    api.faults(token_ttl_s=0.3)
    short = Api(str(api.http.base_url))
    assert short.presign().status_code == 200
    wait_until(lambda: short.presign().status_code == 401)
    assert api.presign().status_code == 200  # tokens issued before the change keep their TTL


def test_reset_forgets_tokens_and_jobs(api: Api) -> None:
    _, request_id = api.slot()
    api.control("POST", "reset")
    assert api.status(request_id).status_code == 401
    fresh = Api(str(api.http.base_url))
    assert fresh.status(request_id).status_code == 404


# -- generate-presigned-url -------------------------------------------------------------------


def test_presign_trims_mime_and_points_back_at_the_caller(api: Api, server: SandboxServer) -> None:
    response = api.presign(" audio/mpeg ", callbackUrl="https://hooks.example/cb?x=1")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"presignedUrl", "requestId"}
    url = urlsplit(body["presignedUrl"])
    assert f"{url.scheme}://{url.netloc}" == server.base_url
    assert url.path == f"/_upload/{body['requestId']}"
    assert set(parse_qs(url.query)) == {"expires", "signature"}
    assert api.put(body["presignedUrl"], mime="audio/mpeg").status_code == 200


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        ({"mimeType": "audio/aac"}, "invalidMimeType"),
        ({"mimeType": "AUDIO/WAV"}, "invalidMimeType"),
        ({"mimeType": 5}, "invalidMimeType"),
        ({}, "invalidMimeType"),
        ({"mimeType": "audio/wav", "callbackUrl": "ftp://x.example/cb"}, "invalidCallbackUrl"),
        ({"mimeType": "audio/wav", "callbackUrl": "/relative"}, "invalidCallbackUrl"),
        ({"mimeType": "audio/wav", "callbackUrl": "https://"}, "invalidCallbackUrl"),
        (
            {"mimeType": "audio/wav", "callbackUrl": "https://x.example:99999/"},
            "invalidCallbackUrl",
        ),
        ({"mimeType": "audio/wav", "callbackUrl": ""}, "invalidCallbackUrl"),
        ({"mimeType": "audio/wav", "callbackUrl": 1}, "invalidCallbackUrl"),
        ([1, 2], "invalidRequestBody"),
    ],
)
def test_presign_rejects_bad_input(api: Api, body: Any, error_type: str) -> None:
    response = api.http.post("/api/v1/generate-presigned-url", json=body, headers=api.headers())
    assert response.status_code == 400
    assert set(response.json()) == {"messsage", "errorType"}
    assert response.json()["errorType"] == error_type


def test_non_json_bodies_are_400(api: Api) -> None:
    for path in ("/api/v1/generate-presigned-url", "/api/v1/get-transcription"):
        response = api.http.post(path, content=b"{nope", headers=api.headers())
        assert response.status_code == 400
        assert response.json()["errorType"] == "invalidRequestBody"


def test_callback_url_may_be_null(api: Api) -> None:
    assert api.presign(callbackUrl=None).status_code == 200


# -- get-transcription ------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["", "  ", None, 7, ["x"]])
def test_status_rejects_a_bad_request_id(api: Api, request_id: Any) -> None:
    response = api.status(request_id)
    assert response.status_code == 400
    assert response.json()["errorType"] == "invalidRequestId" and "messsage" in response.json()


def test_status_of_unknown_job_is_404_spelled_message(api: Api) -> None:
    response = api.status("no-such-request")
    assert response.status_code == 404
    assert response.json() == {
        "message": "Transcription not found",
        "errorType": "transcriptionNotFound",
    }


def test_pending_before_upload(api: Api) -> None:
    _, request_id = api.slot()
    response = api.status(request_id)
    assert response.status_code == 200
    assert response.json() == {
        "transcription": [],
        "processingStatus": "PENDING",
        "transcriptionStatus": "PENDING",
    }


def test_completed_transcript_is_deterministic_and_has_vtt(api: Api) -> None:
    _, first = api.transcribe()
    _, second = api.transcribe()
    expected = instant_transcript(AUDIO_SHA, None)
    assert first == second
    assert first["processingStatus"] == first["transcriptionStatus"] == "COMPLETED"
    assert first["transcription"] == [s.to_wire() for s in expected]
    assert first["vttTranscription"] == build_vtt(expected)
    assert "errorMessage" not in first
    starts = [s["start"] for s in first["transcription"]]
    assert starts == sorted(starts) and 1 <= len(starts) <= 4
    assert all(
        s["end"] > s["start"] and round(s["end"], 2) == s["end"] for s in first["transcription"]
    )


def test_instant_segments_spread_over_a_readable_duration(api: Api, tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, np.zeros(16000 * 5, dtype=np.float32), 16000)
    _, body = api.transcribe(wav.read_bytes())
    expected = instant_transcript(hashlib.sha256(wav.read_bytes()).hexdigest(), 5.0)
    assert body["transcription"] == [s.to_wire() for s in expected]
    assert body["transcription"][-1]["end"] <= 5.0


@pytest.mark.parametrize(
    ("version", "has_vtt"), [(None, False), (OLD, False), (NEW, True), ("2026-03-01", True)]
)
def test_version_header_gates_vtt(api: Api, version: str | None, has_vtt: bool) -> None:
    request_id, _ = api.transcribe()
    body = api.status(request_id, version=version).json()
    assert body["processingStatus"] == "COMPLETED"
    assert ("vttTranscription" in body) is has_vtt


@pytest.mark.parametrize("version", ["2025-13-01", "2025-1-01", "v1", "", "2025-11-01x"])
def test_invalid_version_header_is_400(api: Api, version: str) -> None:
    for response in (api.status("x", version=version), _presign_with_version(api, version)):
        assert response.status_code == 400
        assert response.json()["errorType"] == "invalidApiVersion" and "messsage" in response.json()


def _presign_with_version(api: Api, version: str) -> httpx.Response:
    headers = {**api.headers(None), "X-Invox-Medical-Api-Version": version}
    return api.http.post(
        "/api/v1/generate-presigned-url", json={"mimeType": "audio/wav"}, headers=headers
    )


# -- upload -----------------------------------------------------------------------------------


def _assert_storage_error(response: httpx.Response, status: int, code: str) -> str:
    """An S3-style XML error; returns its Message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/xml")
    assert f"<Code>{code}</Code>" in response.text
    return response.text.split("<Message>")[1].split("</Message>")[0]


def test_upload_content_type_must_match_the_signed_mime(api: Api) -> None:
    url, request_id = api.slot("audio/flac")
    _assert_storage_error(api.put(url, mime="audio/wav"), 403, "SignatureDoesNotMatch")
    _assert_storage_error(api.put(url, mime=None), 403, "SignatureDoesNotMatch")
    assert api.status(request_id).json()["processingStatus"] == "PENDING"
    assert api.put(url, mime="audio/flac").status_code == 200


def test_expired_url_is_403(api: Api) -> None:
    api.faults(url_ttl_s=0)  # expires is floor(now): already in the past
    url, _ = api.slot()
    assert _assert_storage_error(api.put(url), 403, "AccessDenied") == "Request has expired"


def test_tampered_or_incomplete_urls_are_403(api: Api) -> None:
    url, _ = api.slot()
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    flipped = query["signature"][:-1] + ("0" if query["signature"][-1] != "0" else "1")
    later = str(int(query["expires"]) + 3600)
    _assert_storage_error(
        api.put(f"{base}?{urlencode({**query, 'signature': flipped})}"),
        403,
        "SignatureDoesNotMatch",
    )
    _assert_storage_error(
        api.put(f"{base}?{urlencode({**query, 'expires': later})}"), 403, "SignatureDoesNotMatch"
    )
    _assert_storage_error(api.put(base), 403, "AccessDenied")
    other = f"{parts.scheme}://{parts.netloc}/_upload/not-a-job?{parts.query}"
    _assert_storage_error(api.put(other), 403, "AccessDenied")
    assert api.put(url).status_code == 200  # the genuine URL still works


def test_second_put_is_403_and_counted_once(api: Api) -> None:
    url, _ = api.slot()
    assert api.put(url).status_code == 200
    _assert_storage_error(api.put(url), 403, "AccessDenied")
    stats = api.stats()
    assert stats["uploads_by_sha256"] == {AUDIO_SHA: 1}
    assert stats["responses"]["upload"] == {"200": 1, "403": 1}


def test_oversize_upload_is_413_declared_or_streamed(api: Api) -> None:
    url, request_id = api.slot()
    _assert_storage_error(api.put(url, b"x" * (MAX_UPLOAD + 1)), 413, "EntityTooLarge")

    def chunks() -> Iterator[bytes]:  # no Content-Length: enforced while streaming
        for _ in range(MAX_UPLOAD // 65536 + 2):
            yield b"y" * 65536

    response = api.http.put(url, content=chunks(), headers={"Content-Type": "audio/wav"})
    _assert_storage_error(response, 413, "EntityTooLarge")
    assert api.status(request_id).json()["processingStatus"] == "PENDING"
    assert api.put(url, b"z" * MAX_UPLOAD).status_code == 200  # exactly the limit is fine


def test_empty_upload_ends_in_error(api: Api) -> None:
    _, body = api.transcribe(b"")
    assert body == {
        "transcription": [],
        "processingStatus": "ERROR",
        "transcriptionStatus": "ERROR",
        "errorMessage": "audio file is empty",
    }


def test_forced_error_by_sha256(api: Api) -> None:
    api.faults(job_error_sha256=[AUDIO_SHA.upper()])
    _, body = api.transcribe()
    assert body["processingStatus"] == "ERROR" and "injected" in body["errorMessage"]
    assert body["transcription"] == [] and "vttTranscription" not in body
    _, other = api.transcribe(b"different bytes")
    assert other["processingStatus"] == "COMPLETED"


def test_job_error_rate_one_fails_every_job(api: Api) -> None:
    api.faults(job_error_rate=1.0)
    assert api.transcribe()[1]["processingStatus"] == "ERROR"


def test_processing_delay_keeps_the_job_pending(api: Api) -> None:
    api.faults(processing_delay_s=(0.3, 0.3))
    url, request_id = api.slot()
    started = time.monotonic()
    assert api.put(url).status_code == 200
    assert api.status(request_id).json()["processingStatus"] == "PENDING"
    api.finished(request_id)
    assert time.monotonic() - started >= 0.3


# -- injected faults and stats ----------------------------------------------------------------


def test_429_and_503_with_retry_after_are_counted(api: Api) -> None:
    api.faults(rate_429={"token": 1.0}, rate_503={"status": 1.0}, retry_after_s=1.5)
    throttled = api.http.post("/api/v1/token", headers=basic())
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "2"
    assert throttled.json() == {"message": "Too many requests"}
    unavailable = api.status("anything")
    assert unavailable.status_code == 503 and unavailable.headers["retry-after"] == "2"
    assert unavailable.json() == {"message": "Service unavailable"}
    stats = api.stats()
    assert stats["requests"] == {"token": 2, "presign": 0, "upload": 0, "status": 1}
    assert stats["responses"]["token"] == {"200": 1, "429": 1}
    assert stats["responses"]["status"] == {"503": 1}


def test_upload_faults_and_zero_retry_after(api: Api) -> None:
    url, _ = api.slot()
    api.faults(rate_503={"upload": 1.0}, retry_after_s=0)
    response = api.put(url)
    assert response.status_code == 503 and response.headers["retry-after"] == "0"
    api.faults(rate_503={})
    assert api.put(url).status_code == 200  # the fault fired before the URL was consumed


def test_seeded_faults_replay_exactly(api: Api) -> None:
    def run() -> list[int]:
        api.faults(rate_429={"status": 0.3}, rate_503={"status": 0.3}, seed=42)
        return [api.status("x").status_code for _ in range(20)]

    first = run()
    assert set(first) == {404, 429, 503}
    assert run() == first


def test_latency_is_added_before_answering(api: Api) -> None:
    api.faults(latency_s={"status": 0.25})
    started = time.monotonic()
    api.status("x")
    assert time.monotonic() - started >= 0.25


def test_stats_count_uploads_and_jobs(api: Api) -> None:
    api.transcribe()
    api.transcribe()
    api.transcribe(b"other")
    api.transcribe(b"")
    api.slot()
    stats = api.stats()
    assert stats["uploads_by_sha256"] == {
        AUDIO_SHA: 2,
        hashlib.sha256(b"other").hexdigest(): 1,
        hashlib.sha256(b"").hexdigest(): 1,
    }
    assert stats["jobs"] == {"PENDING": 1, "COMPLETED": 3, "ERROR": 1}
    assert stats["requests"]["presign"] == 5 and stats["requests"]["upload"] == 4
    assert stats["callbacks"] == {"sent": 0, "delivered": 0, "failed": 0, "dropped": 0}


# -- control plane ----------------------------------------------------------------------------


def test_faults_merge_validate_and_reset(api: Api) -> None:
    startup = api.control("GET", "faults").json()
    assert startup == SandboxSettings().faults.model_dump(mode="json")  # env-aware defaults
    merged = api.faults(rate_429={"presign": 0.5}, seed=3)
    assert merged["rate_429"] == {"presign": 0.5} and merged["seed"] == 3
    assert api.faults(url_ttl_s=60)["rate_429"] == {"presign": 0.5}
    for bad in (
        {"rate_429": {"nope": 1}},
        {"job_error_rate": 2},
        {"unknown": 1},
        {"processing_delay_s": [2, 1]},
    ):
        response = api.control("PUT", "faults", json=bad)
        assert response.status_code == 422 and isinstance(response.json()["detail"], list)
    assert api.control("PUT", "faults", content=b"[1]").status_code == 422
    assert api.control("GET", "faults").json()["url_ttl_s"] == 60
    api.control("POST", "reset")
    assert api.control("GET", "faults").json() == startup


def test_unknown_paths_and_methods_answer_json(api: Api) -> None:
    assert api.http.get("/nope").json() == {"message": "Not Found"}
    assert api.http.get("/api/v1/get-transcription").status_code == 405


# -- callbacks --------------------------------------------------------------------------------


def test_callback_is_delivered_signed(api: Api, receiver: Receiver, server: SandboxServer) -> None:
    request_id, body = api.transcribe(callbackUrl=receiver.url)
    [delivery] = wait_until(lambda: receiver.received)
    payload = delivery["body"]
    assert list(payload) == ["requestId", "transcription", "signature", "createdAt"]
    assert payload["requestId"] == request_id
    assert payload["transcription"] == [{**s, "speaker": "0"} for s in body["transcription"]]
    assert (
        isinstance(payload["createdAt"], int)
        and abs(payload["createdAt"] / 1000 - time.time()) < 60
    )
    assert delivery["headers"]["user-agent"] == "Invox-Medical-Webhook/1.0"
    assert delivery["headers"]["content-type"] == "application/json"
    secret, api_key = server.settings.callback_secret, server.settings.callback_api_key
    verify_callback_signature(payload, secret=secret, api_key=api_key)
    with pytest.raises(CallbackSignatureError):
        verify_callback_signature(
            {**payload, "requestId": "forged"}, secret=secret, api_key=api_key
        )
    stats = wait_until(lambda: (s := api.stats())["callbacks"]["delivered"] and s)
    assert stats["callbacks"] == {"sent": 1, "delivered": 1, "failed": 0, "dropped": 0}


def test_callback_retries_then_gives_up(api: Api, receiver: Receiver) -> None:
    receiver.fail_first = 1
    request_id, _ = api.transcribe(callbackUrl=receiver.url)
    wait_until(lambda: len(receiver.received) == 2)
    log = wait_until(lambda: (c := api.control("GET", "callbacks").json()) and len(c) == 2 and c)
    assert [(a["attempt"], a["status"], a["error"], a["dropped"]) for a in log] == [
        (1, 500, None, False),
        (2, 204, None, False),
    ]
    assert {a["requestId"] for a in log} == {request_id} and log[0]["url"] == receiver.url
    receiver.fail_first = 100
    api.transcribe(callbackUrl=receiver.url)
    stats = wait_until(lambda: (s := api.stats())["callbacks"]["failed"] and s)
    assert stats["callbacks"] == {
        "sent": 5,
        "delivered": 1,
        "failed": 1,
        "dropped": 0,
    }  # 1 + 2 retries


def test_unreachable_callback_records_the_error(api: Api, receiver: Receiver) -> None:
    dead = receiver.url.replace(f":{receiver.server.port}/", ":9/")
    api.transcribe(callbackUrl=dead)
    log = wait_until(lambda: (c := api.control("GET", "callbacks").json()) and len(c) == 3 and c)
    assert all(a["status"] is None and a["error"] for a in log)


def test_no_callback_on_error_by_default(api: Api, receiver: Receiver) -> None:
    _, body = api.transcribe(b"", callbackUrl=receiver.url)
    assert body["processingStatus"] == "ERROR"
    assert api.control("GET", "callbacks").json() == [] and receiver.received == []


def test_dropped_callback_is_never_sent(api: Api, receiver: Receiver) -> None:
    api.faults(drop_callback_rate=1.0)
    request_id, body = api.transcribe(callbackUrl=receiver.url)
    assert body["processingStatus"] == "COMPLETED"
    stats = wait_until(lambda: (s := api.stats())["callbacks"]["dropped"] and s)
    assert stats["callbacks"] == {"sent": 0, "delivered": 0, "failed": 0, "dropped": 1}
    [record] = api.control("GET", "callbacks").json()
    assert record["dropped"] is True and record["requestId"] == request_id
    assert receiver.received == []


# -- the alternative server: normalised spellings, one status key, error callbacks ------------


def test_normalised_error_messages(alt: Api) -> None:
    assert alt.http.post("/api/v1/get-transcription", json={}).json() == {"message": "Unauthorized"}
    assert alt.status("").json()["message"] and "messsage" not in alt.status("").json()
    assert alt.status("nope").json() == {
        "message": "Transcription not found",
        "errorType": "transcriptionNotFound",
    }
    alt.faults(forbidden=True)
    response = alt.presign()
    assert response.status_code == 403
    assert (
        response.json()["errorType"] == "noBatchTranscribe"
        and "BATCH-TRANSCRIBE" in response.json()["message"]
    )


def test_forbidden_uses_the_typed_spelling(api: Api) -> None:
    api.faults(forbidden=True)
    for response in (api.presign(), api.status("x")):
        assert response.status_code == 403
        assert response.json()["errorType"] == "forbidden" and "messsage" in response.json()


def test_single_status_key_and_configurable_default_version(alt: Api) -> None:
    request_id, body = alt.transcribe()
    assert body["transcriptionStatus"] == "COMPLETED" and "processingStatus" not in body
    assert "vttTranscription" in body  # default_api_version=2025-11-01 on this server
    assert "vttTranscription" not in alt.status(request_id, version=OLD).json()


def test_callback_on_error_carries_the_message(
    alt: Api, receiver: Receiver, alt_server: SandboxServer
) -> None:
    alt.transcribe(b"", callbackUrl=receiver.url)
    [delivery] = wait_until(lambda: receiver.received)
    payload = delivery["body"]
    assert list(payload) == ["requestId", "transcription", "errorMessage", "signature", "createdAt"]
    assert payload["transcription"] == [] and payload["errorMessage"] == "audio file is empty"
    settings = alt_server.settings
    verify_callback_signature(
        payload, secret=settings.callback_secret, api_key=settings.callback_api_key
    )


# -- servers with their own settings ------------------------------------------------------------


def test_results_expire_after_result_ttl() -> None:
    with SandboxServer(SandboxSettings(processing="instant", result_ttl_s=0.2)) as running:
        api = Api(running.base_url)
        request_id, _ = api.transcribe()
        wait_until(lambda: api.status(request_id).status_code == 404)
        assert api.stats()["jobs"] == {"PENDING": 0, "COMPLETED": 0, "ERROR": 0}


def test_asr_mode_reports_undecodable_audio_and_transcribes_speech() -> None:
    settings = SandboxSettings(processing="asr")
    with SandboxServer(settings) as running:
        api = Api(running.base_url)
        _, body = api.transcribe()
        assert body["processingStatus"] == "ERROR"
        assert "not a recognisable audio container" in body["errorMessage"]
        _, body = api.transcribe(SAMPLE_WAV.read_bytes())
        assert body["processingStatus"] == "COMPLETED" and body["transcription"]
        assert body["vttTranscription"].startswith("WEBVTT\n\n00:")


def test_instant_mode_never_loads_pocketsphinx() -> None:
    code = (
        "import sys\n"
        "from sandbox import create_app, SandboxSettings\n"
        "create_app(SandboxSettings(processing='instant'))\n"
        "assert 'pocketsphinx' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)


def test_processing_status_only() -> None:
    with SandboxServer(
        SandboxSettings(processing="instant", status_field="processingStatus")
    ) as running:
        _, body = Api(running.base_url).transcribe()
        assert body["processingStatus"] == "COMPLETED" and "transcriptionStatus" not in body


def test_uploads_are_private_and_deleted(tmp_path: Path) -> None:
    settings = SandboxSettings(
        processing="instant",
        upload_dir=tmp_path / "up",
        faults=Faults(processing_delay_s=(0.3, 0.3)),
    )
    with SandboxServer(settings) as running:
        api = Api(running.base_url)
        url, request_id = api.slot()
        assert api.put(url).status_code == 200
        [job_dir] = (tmp_path / "up").iterdir()
        [audio] = job_dir.iterdir()
        assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(audio.stat().st_mode) == 0o600 and audio.read_bytes() == AUDIO
        api.finished(request_id)
        assert list(job_dir.iterdir()) == []
        url, _ = api.slot()
        api.faults(processing_delay_s=(30, 30))
        assert api.put(url).status_code == 200
        assert len(list(job_dir.iterdir())) == 1
        api.control("POST", "reset")
        assert list(job_dir.iterdir()) == []
        url, _ = Api(running.base_url).slot()
        assert (
            api.http.put(url, content=AUDIO, headers={"Content-Type": "audio/wav"}).status_code
            == 200
        )
    assert list((tmp_path / "up").iterdir()) == []  # shutdown wiped the private directory


# -- pure pieces ------------------------------------------------------------------------------


def test_vtt_format() -> None:
    segments = [Segment(0.01, 1.05, "mock text"), Segment(61.5, 3725.25, "a < b & c")]
    assert build_vtt(segments) == (
        "WEBVTT\n\n00:00:00.010 --> 00:00:01.050\nmock text\n\n"
        "00:01:01.500 --> 01:02:05.250\na &lt; b &amp; c\n"
    )
    assert build_vtt([]) == "WEBVTT\n"


def test_instant_transcript_is_a_function_of_the_hash() -> None:
    for digest in (hashlib.sha256(bytes([i])).hexdigest() for i in range(30)):
        segments = instant_transcript(digest, 7.3)
        assert segments == instant_transcript(digest, 7.3)
        assert 1 <= len(segments) <= 4 and segments[-1].end <= 7.3
        assert all(a.end <= b.start for a, b in itertools.pairwise(segments))
    assert len(instant_transcript(AUDIO_SHA, 0.4)) == 1


def test_job_transitions_follow_the_table() -> None:
    job = Job("r", "audio/wav", None, 0)
    with pytest.raises(InvalidTransition):
        job.complete([])
    assert job.claim_upload() and not job.claim_upload()
    job.begin_processing(AUDIO_SHA, 1)
    assert job.public_status == "PENDING" and job.sha256 == AUDIO_SHA
    job.fail("boom")
    assert job.state is JobState.ERROR and job.terminal and job.error_message == "boom"
    with pytest.raises(InvalidTransition):
        job.complete([])
