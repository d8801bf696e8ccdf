"""Pure functions of the client: parsing, error mapping, polling schedule, signatures, config."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError

from invox import (
    APIStatusError,
    AuthenticationError,
    CallbackSignatureError,
    InvoxSettings,
    NotFoundError,
    PermissionDeniedError,
    PollPolicy,
    PollTimeoutError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    Transcription,
    UploadURLRejectedError,
    verify_callback_signature,
)
from invox._auth import parse_token_response
from invox._exceptions import error_from_response, parse_retry_after
from invox._models import parse_presigned_upload, parse_transcription
from invox._polling import backoff_delay, next_poll_delay, poll_until_terminal
from invox._redact import redact_url
from invox._signature import sign_callback


def _response(
    status: int, body: object = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers or {})


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["processingStatus", "transcriptionStatus"])
def test_status_is_read_under_either_published_key(key: str) -> None:
    body = {key: "COMPLETED", "transcription": [{"text": "pain", "start": 0.01, "end": 1.05}]}
    result = parse_transcription("r1", body)
    assert result.status == "COMPLETED"
    assert result.segments[0].start == pytest.approx(0.01)
    assert result.text == "pain"


def test_processing_status_wins_when_both_keys_are_sent() -> None:
    body = {"processingStatus": "PENDING", "transcriptionStatus": "COMPLETED", "transcription": []}
    assert parse_transcription("r1", body).status == "PENDING"


def test_pending_body_with_null_transcription_has_no_segments() -> None:
    result = parse_transcription("r1", {"processingStatus": " pending ", "transcription": None})
    assert result.status == "PENDING" and result.segments == () and not result.is_terminal


def test_error_status_keeps_error_message_and_vtt_is_optional() -> None:
    result = parse_transcription("r1", {"processingStatus": "ERROR", "errorMessage": "bad audio"})
    assert result.is_terminal and result.error_message == "bad audio" and result.vtt is None


def test_speaker_numbers_become_strings() -> None:
    body = {
        "processingStatus": "COMPLETED",
        "transcription": [{"text": "t", "start": 0, "end": 1, "speaker": 0}],
    }
    assert parse_transcription("r", body).segments[0].speaker == "0"


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "COMPLETED",
        {},
        {"processingStatus": "DONE"},
        {"processingStatus": 3},
        {"processingStatus": "COMPLETED", "transcription": "words"},
        {"processingStatus": "COMPLETED", "transcription": [{"text": "secret words"}]},
        {"processingStatus": "COMPLETED", "vttTranscription": 5},
    ],
)
def test_malformed_transcription_bodies_raise_format_errors_without_values(body: object) -> None:
    with pytest.raises(ResponseFormatError) as info:
        parse_transcription("r1", body)
    assert "secret words" not in str(info.value)
    assert info.value.error_type == "bad_response" and not info.value.retryable


def test_transcript_text_stays_out_of_reprs() -> None:
    result = parse_transcription(
        "r1",
        {"processingStatus": "COMPLETED", "transcription": [{"text": "PHI", "start": 0, "end": 1}]},
    )
    assert "PHI" not in repr(result) and "PHI" not in repr(result.segments[0])


def test_presigned_upload_repr_and_redaction_hide_the_signature() -> None:
    upload = parse_presigned_upload(
        {"presignedUrl": "https://store.example/up/1?X-Signature=abc123", "requestId": "r1"}
    )
    assert upload.redacted_url == "https://store.example/up/1"
    assert "abc123" not in repr(upload)
    with pytest.raises(ResponseFormatError):
        parse_presigned_upload({"presignedUrl": "", "requestId": "r1"})


def test_redact_url_drops_query_fragment_and_userinfo() -> None:
    assert redact_url("https://u:p@h.example:8443/a/b?sig=1#f") == "https://h.example:8443/a/b"
    assert redact_url("http://[::1") == "<unparseable url>"


@pytest.mark.parametrize(
    ("body", "token", "ttl"),
    [
        ({"accessToken": "t1", "expiresIn": 60}, "t1", 60.0),
        ({"access_token": "t2", "expires_in": "30"}, "t2", 30.0),
        ({"accessToken": "t3"}, "t3", 7200.0),
        ({"accessToken": "t4", "expiresIn": -5}, "t4", 7200.0),
    ],
)
def test_token_response_accepts_both_spellings(body: object, token: str, ttl: float) -> None:
    value, lifetime = parse_token_response(body, 7200.0)
    assert value.get_secret_value() == token and lifetime == ttl


def test_token_response_without_token_is_a_format_error() -> None:
    with pytest.raises(ResponseFormatError):
        parse_token_response({"token": "x"}, 7200.0)


# --- error mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, APIStatusError, False),
        (401, AuthenticationError, False),
        (403, PermissionDeniedError, False),
        (404, NotFoundError, False),
        (408, APIStatusError, True),
        (422, APIStatusError, False),
        (429, RateLimitError, True),
        (500, ServerError, True),
        (503, ServerError, True),
        (418, APIStatusError, False),
    ],
)
def test_status_codes_map_to_classes_with_retryable_flags(
    status: int, cls: type[APIStatusError], retryable: bool
) -> None:
    error = error_from_response(_response(status, {"messsage": "nope"}), operation="op")
    assert isinstance(error, cls)
    assert error.retryable is retryable and error.status_code == status


def test_error_message_reads_either_spelling_and_upstream_error_type() -> None:
    typo = error_from_response(_response(401, {"messsage": "Unauthorized"}), operation="op")
    plain = error_from_response(
        _response(
            404, {"message": "Transcription not found", "errorType": "transcriptionNotFound"}
        ),
        operation="op",
    )
    assert "Unauthorized" in typo.message and "INVOX_API_KEY" in typo.message
    assert "Transcription not found" in plain.message
    assert plain.upstream_error_type == "transcriptionNotFound"


def test_forbidden_says_which_permission_is_missing() -> None:
    error = error_from_response(
        _response(403, {"messsage": "x", "errorType": "forbidden"}), operation="op"
    )
    assert "BATCH-TRANSCRIBE" in error.message


def test_403_on_the_upload_is_its_own_class() -> None:
    error = error_from_response(_response(403), operation="upload", upload=True)
    assert isinstance(error, UploadURLRejectedError) and error.error_type == "upload_url_rejected"


@pytest.mark.parametrize(
    ("header", "seconds"), [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), (None, None)]
)
def test_retry_after_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_http_date_is_in_the_future() -> None:
    assert parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT") > 1e6  # type: ignore[operator]


def test_rate_limit_carries_retry_after() -> None:
    error = error_from_response(
        _response(429, {"message": "slow"}, {"Retry-After": "3"}), operation="op"
    )
    assert error.retry_after == 3.0


# --- polling ---------------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that only moves when the poller sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _statuses(*items: str | Exception) -> Iterator[str | Exception]:
    yield from items


def _fetcher(items: Iterator[str | Exception]):  # type: ignore[no-untyped-def]
    async def fetch() -> Transcription:
        item = next(items)
        if isinstance(item, Exception):
            raise item
        return Transcription(request_id="r9", status=item)  # type: ignore[arg-type]

    return fetch


def test_backoff_grows_geometrically_to_the_cap() -> None:
    policy = PollPolicy(first_delay_s=1, max_delay_s=5, multiplier=2, jitter=0)
    assert [backoff_delay(policy, n) for n in range(5)] == [1, 2, 4, 5, 5]


def test_backoff_jitter_stays_within_bounds() -> None:
    policy = PollPolicy(first_delay_s=10, jitter=0.1)
    assert backoff_delay(policy, 0, rand=lambda: 0.0) == pytest.approx(9.0)
    assert backoff_delay(policy, 0, rand=lambda: 1.0) == pytest.approx(11.0)


def test_poll_returns_the_terminal_result_after_backing_off() -> None:
    clock = FakeClock()
    policy = PollPolicy(first_delay_s=2, max_delay_s=10, jitter=0)
    fetch = _fetcher(_statuses("PENDING", "PENDING", "COMPLETED"))
    result = asyncio.run(poll_until_terminal(fetch, "r9", policy, clock=clock, sleep=clock.sleep))
    assert result.status == "COMPLETED"
    assert clock.sleeps == [2, 4, 8]


def test_poll_honours_retry_after_on_transient_errors() -> None:
    clock = FakeClock()
    policy = PollPolicy(first_delay_s=1, jitter=0)
    busy = RateLimitError("slow down", status_code=429, retry_after=30)
    fetch = _fetcher(_statuses(busy, "ERROR"))
    result = asyncio.run(poll_until_terminal(fetch, "r9", policy, clock=clock, sleep=clock.sleep))
    assert result.status == "ERROR" and clock.sleeps == [1, 30]


def test_later_waits_are_capped_at_a_share_of_the_jobs_age() -> None:
    policy = PollPolicy(first_delay_s=1, max_delay_s=30, multiplier=2, jitter=0, age_share=0.25)
    assert next_poll_delay(policy, 0, age_s=0.0) == 1  # the first poll is the timer's call
    assert next_poll_delay(policy, 3, age_s=40.0) == 8  # the backoff, when it is shorter
    assert next_poll_delay(policy, 5, age_s=40.0) == 10  # else a quarter of the age
    assert next_poll_delay(policy, 5, age_s=0.0) == 0.05  # never a busy loop
    uncapped = PollPolicy(first_delay_s=1, max_delay_s=30, multiplier=2, jitter=0)
    assert next_poll_delay(uncapped, 5, age_s=40.0) == 30


def test_young_jobs_keep_the_plain_backoff_up_to_the_floor() -> None:
    policy = PollPolicy(
        first_delay_s=0.5, max_delay_s=30, jitter=0, next_delay_s=0.05, age_share=0.25
    )
    floored = dataclasses.replace(policy, age_floor_s=0.5)
    assert next_poll_delay(policy, 3, age_s=0.6) == pytest.approx(0.15)  # a quarter of 0.6
    assert next_poll_delay(floored, 3, age_s=0.6) == pytest.approx(0.2)  # the backoff's own
    assert next_poll_delay(floored, 5, age_s=0.6) == pytest.approx(0.5)  # the floor
    assert next_poll_delay(floored, 5, age_s=4.0) == pytest.approx(0.8)  # the backoff again
    assert next_poll_delay(floored, 9, age_s=4.0) == pytest.approx(1.0)  # a quarter of 4 s


@pytest.mark.parametrize("done_at_s", [0.7, 2.0, 3.0, 20.0, 61.0, 200.0])
@pytest.mark.parametrize("age_at_start_s", [0.0, 0.4])
def test_a_slow_jobs_result_comes_at_most_a_quarter_late(
    done_at_s: float, age_at_start_s: float
) -> None:
    clock = FakeClock()
    floor_s = 0.5
    policy = PollPolicy(
        timeout_s=900,
        first_delay_s=0.5 - age_at_start_s,
        max_delay_s=30,
        jitter=0.02,
        next_delay_s=0.05,
        age_share=0.25,
        age_floor_s=floor_s,
        age_at_start_s=age_at_start_s,
    )

    async def fetch() -> Transcription:
        done = clock.now + age_at_start_s >= done_at_s
        return Transcription(request_id="r9", status="COMPLETED" if done else "PENDING")

    asyncio.run(poll_until_terminal(fetch, "r9", policy, clock=clock, sleep=clock.sleep))
    time_to_result = clock.now + age_at_start_s
    if done_at_s >= floor_s / 0.25:  # a slow job: at most a quarter late
        assert time_to_result <= 1.25 * done_at_s
    else:  # a young one: at most the floor late
        assert time_to_result <= done_at_s + floor_s
    assert len(clock.sleeps) <= 30  # geometric, not a fixed fast beat


def test_poll_raises_terminal_errors_at_once() -> None:
    clock = FakeClock()
    fetch = _fetcher(_statuses(NotFoundError("gone", status_code=404)))
    with pytest.raises(NotFoundError):
        asyncio.run(poll_until_terminal(fetch, "r9", PollPolicy(), clock=clock, sleep=clock.sleep))


def test_poll_timeout_names_request_status_and_how_to_resume() -> None:
    clock = FakeClock()
    policy = PollPolicy(timeout_s=10, first_delay_s=3, multiplier=1, jitter=0)
    fetch = _fetcher(_statuses(*["PENDING"] * 10))
    with pytest.raises(PollTimeoutError) as info:
        asyncio.run(poll_until_terminal(fetch, "r9", policy, clock=clock, sleep=clock.sleep))
    error = info.value
    assert error.request_id == "r9" and error.last_status == "PENDING"
    assert "r9" in error.message and "resume" in error.message and error.error_type == "timeout"
    assert clock.now == pytest.approx(10.0)  # the last poll happens at the deadline, not after


# --- callback signatures ---------------------------------------------------------------------

PAYLOAD = {
    "requestId": "req-1",
    "transcription": [{"text": "chest pain", "start": 0.05, "end": 2.0, "speaker": "0"}],
    "createdAt": 1_760_000_000_000,
}


def test_signature_matches_the_documented_formula() -> None:
    message = (
        'req-1|[{"text":"chest pain","start":0.05,"end":2,"speaker":"0"}]|1760000000000|pub-key'
    )
    expected = base64.b64encode(hmac.new(b"s3cret", message.encode(), hashlib.sha256).digest())
    assert sign_callback(PAYLOAD, secret="s3cret", api_key="pub-key") == expected.decode()


def _signed(payload: dict[str, object], secret: str = "s3cret") -> dict[str, object]:
    return {**payload, "signature": sign_callback(payload, secret=secret, api_key="pub-key")}


def test_valid_signature_verifies() -> None:
    verify_callback_signature(
        _signed(PAYLOAD), secret="s3cret", api_key="pub-key", now_ms=1_760_000_001_000
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({**_signed(PAYLOAD), "transcription": []}, "bad_signature"),
        (_signed(PAYLOAD, secret="wrong"), "bad_signature"),
        ({**PAYLOAD}, "missing_signature"),
        (_signed({**PAYLOAD, "createdAt": 1_000}), "stale_timestamp"),
    ],
)
def test_tampered_wrong_secret_unsigned_and_stale_callbacks_are_rejected(
    payload: dict[str, object], reason: str
) -> None:
    with pytest.raises(CallbackSignatureError) as info:
        verify_callback_signature(
            payload, secret="s3cret", api_key="pub-key", now_ms=1_760_000_001_000
        )
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.example.com/invox", True),
        ("http://127.0.0.1:9000/cb", True),
        ("http://localhost/cb", True),
        ("http://hooks.example.com/invox", False),
        ("ftp://hooks.example.com", False),
        ("not a url", False),
    ],
)
def test_callback_urls_must_be_https_except_on_this_machine(url: str, ok: bool) -> None:
    from invox import ConfigurationError, check_callback_url

    if ok:
        assert check_callback_url(url) == url
    else:
        with pytest.raises(ConfigurationError, match="https"):
            check_callback_url(url)


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["not a url", "ftp://host", "/api", "http://"])
def test_base_url_must_be_an_absolute_http_url(url: str) -> None:
    with pytest.raises(ValidationError, match="INVOX_BASE_URL"):
        InvoxSettings(base_url=url)


def test_base_url_trailing_slash_is_dropped_and_version_must_be_a_date() -> None:
    assert InvoxSettings(base_url="https://api.example/").base_url == "https://api.example"
    with pytest.raises(ValidationError, match="INVOX_API_VERSION"):
        InvoxSettings(api_version="latest")


def test_api_key_never_shows_in_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOX_API_KEY", "sentinel-key-123")
    settings = InvoxSettings()
    assert settings.api_key.get_secret_value() == "sentinel-key-123"
    assert "sentinel-key-123" not in repr(settings) and "sentinel-key-123" not in str(settings)
