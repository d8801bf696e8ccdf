"""Thin HTTP handlers: parse and check the request, call the backend, shape the answer."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

from pydantic import TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.errors import (
    ApiError,
    StorageError,
    access_denied,
    bad_request,
    entity_too_large,
    forbidden,
    invalid_credentials,
    not_found,
    signature_mismatch,
    throttled,
    unauthorized,
    validation_error_response,
)
from sandbox.models import Job, SandboxBackend
from sandbox.settings import Endpoint, Faults, SandboxSettings, parse_api_version
from sandbox.transcripts import build_vtt

__all__ = ["ACCEPTED_MIME_TYPES", "VERSION_HEADER", "VTT_SINCE", "build_routes"]

VERSION_HEADER = "X-Invox-Medical-Api-Version"
VTT_SINCE = date(2025, 11, 1)
# Contract §9's list plus audio/mpeg, which its own example uses; the double keeps its own copy.
ACCEPTED_MIME_TYPES: frozenset[str] = frozenset(
    {
        "audio/x-wav",
        "audio/wav",
        "audio/mp3",
        "audio/m4a",
        "audio/flac",
        "audio/ogg",
        "audio/webm",
        "audio/mpeg",
    }
)
MAX_JSON_BYTES = 64 * 1024
# After an over-size streamed upload, read (and discard) this much more so the client sees 413.
DRAIN_BYTES = 16 * 1024 * 1024

# Every field the client reads, with the wrong type.
MALFORMED_BODY: dict[str, Any] = {
    "accessToken": 42,
    "presignedUrl": ["not", "a", "url"],
    "requestId": None,
    "processingStatus": {"status": "COMPLETED"},
    "transcription": "not a list",
}

Handler = Callable[[Request], Awaitable[Response]]
_PATCH = TypeAdapter(dict[str, Any])


def backend_of(request: Request) -> SandboxBackend:
    """The backend ``create_app`` hung on the app."""
    return cast(SandboxBackend, request.app.state.backend)


# -- cross-cutting: stats, latency, injected faults, error rendering --------------------------


def guarded(endpoint: Endpoint) -> Callable[[Handler], Handler]:
    """Count the request, apply latency and 429/503 faults, render errors, count the status."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: Request) -> Response:
            backend = backend_of(request)
            stats = backend.stats
            stats.count_request(endpoint)
            status = 500
            try:
                response = await _answer(request, backend, endpoint, handler)
                status = response.status_code
                return response
            finally:
                stats.count_response(endpoint, status)

        return wrapper

    return decorate


@contextlib.contextmanager
def _admitted(backend: SandboxBackend, endpoint: Endpoint) -> Iterator[None]:
    """Hold one of ``max_inflight`` API slots for the whole answer, or 429 at once when full."""
    if endpoint == "upload":  # object storage, not the API: never limited
        yield
        return
    if not backend.admit(endpoint):
        raise throttled(429, backend.faults.retry_after_s)
    try:
        yield
    finally:
        backend.release()


async def _answer(
    request: Request, backend: SandboxBackend, endpoint: Endpoint, handler: Handler
) -> Response:
    """Admission, then faults (latency, then one draw for 429/503), then the real handler."""
    try:
        with _admitted(backend, endpoint):
            latency = backend.faults.latency_s.get(endpoint, 0.0)
            if latency > 0:
                await asyncio.sleep(latency)
            fault = backend.draw_fault(endpoint)
            if fault is not None:
                raise throttled(fault, backend.faults.retry_after_s)
            response = await handler(request)
            if backend.draw_malformed(endpoint):
                response = JSONResponse(MALFORMED_BODY)
            slow = backend.draw_slow(endpoint)
            if slow > 0:
                await asyncio.sleep(slow)
            return response
    except ApiError as exc:
        return exc.to_response(normalise=backend.settings.normalise_error_messages)
    except StorageError as exc:
        return exc.to_response()


# -- shared request checks --------------------------------------------------------------------


def _authorise(request: Request, backend: SandboxBackend) -> None:
    """Bearer token must be live (401), and the credential must hold BATCH-TRANSCRIBE (403)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not backend.tokens.is_valid(token.strip()):
        raise unauthorized()
    if backend.faults.forbidden:
        raise forbidden(backend.settings.forbidden_error_type)


def _api_version(request: Request, settings: SandboxSettings) -> date:
    """The dated version from the header, or the configured default when absent (contract #4)."""
    raw = request.headers.get(VERSION_HEADER)
    version = parse_api_version((settings.default_api_version if raw is None else raw).strip())
    if version is None:
        raise bad_request(
            f"Invalid {VERSION_HEADER} {raw!r}: expected YYYY-MM-DD", "invalidApiVersion"
        )
    return version


async def _json_object(request: Request) -> dict[str, Any]:
    """A small JSON object body, else 400 ``invalidRequestBody``."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise bad_request(f"Request body exceeds {MAX_JSON_BYTES} bytes", "invalidRequestBody")
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object", "invalidRequestBody")
    return data


# -- token ------------------------------------------------------------------------------------


def _credentials_ok(header: str, settings: SandboxSettings) -> bool:
    """``Basic base64(appId:apiKey)`` matching the configured credential (contract §4, #2)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    app_id, sep, api_key = decoded.partition(":")
    expected = f"{settings.app_id}:{settings.api_key}"
    return bool(sep) and hmac.compare_digest(f"{app_id}:{api_key}".encode(), expected.encode())


@guarded("token")
async def issue_token(request: Request) -> Response:
    """``{accessToken, expiresIn}`` for good Basic credentials (names assumed, contract #2)."""
    backend = backend_of(request)
    if not _credentials_ok(request.headers.get("authorization", ""), backend.settings):
        raise invalid_credentials()
    ttl = backend.faults.token_ttl_s
    token = backend.tokens.issue(ttl, backend.settings.fixed_token)
    return JSONResponse({"accessToken": token, "expiresIn": math.ceil(ttl)})


# -- generate-presigned-url ---------------------------------------------------------------------


def _mime_type(value: object) -> str:
    """Trimmed and one of the accepted types (contract #11)."""
    mime = value.strip() if isinstance(value, str) else None
    if mime not in ACCEPTED_MIME_TYPES:
        accepted = ", ".join(sorted(ACCEPTED_MIME_TYPES))
        raise bad_request(f"mimeType must be one of: {accepted}", "invalidMimeType")
    return mime


def _callback_url(value: object) -> str | None:
    """Absent/null, or an absolute http(s) URL with a host (contract #12)."""
    if value is None:
        return None
    if (
        isinstance(value, str)
        and value == value.strip()
        and value.isprintable()
        and " " not in value
    ):
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises on a non-numeric or out-of-range port
        except ValueError:
            parts = None
        if parts is not None and parts.scheme in ("http", "https") and parts.hostname:
            return value
    raise bad_request("callbackUrl must be an absolute http(s) URL", "invalidCallbackUrl")


def _presigned_url(request: Request, backend: SandboxBackend, job: Job) -> str:
    """Points back at the scheme/host/port the client used, so any base URL works."""
    base = str(request.base_url).rstrip("/")
    query = urlencode(
        {
            "expires": job.url_expires,
            "signature": backend.url_signature(job.request_id, job.mime_type, job.url_expires),
        }
    )
    return f"{base}/_upload/{job.request_id}?{query}"


@guarded("presign")
async def generate_presigned_url(request: Request) -> Response:
    """``{presignedUrl, requestId}`` for a new job awaiting its upload (contract §5.1)."""
    backend = backend_of(request)
    _authorise(request, backend)
    _api_version(request, backend.settings)
    body = await _json_object(request)
    mime = _mime_type(body.get("mimeType"))
    callback = _callback_url(body.get("callbackUrl"))
    job = backend.create_job(mime, callback)
    return JSONResponse(
        {"presignedUrl": _presigned_url(request, backend, job), "requestId": job.request_id}
    )


# -- PUT upload (object storage) ----------------------------------------------------------------


def _upload_job(request: Request, backend: SandboxBackend) -> Job:
    """S3-like checks in S3's order: query auth, signature, expiry, signed Content-Type."""
    expires_raw = request.query_params.get("expires", "")
    signature = request.query_params.get("signature", "")
    if not expires_raw.isdigit() or not signature:
        raise access_denied(
            "Query-string authentication requires the expires and signature parameters"
        )
    job = backend.get_job(request.path_params["request_id"])
    if job is None:
        raise access_denied("The pre-signed URL does not refer to a known upload")
    expected = backend.url_signature(job.request_id, job.mime_type, int(expires_raw))
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise signature_mismatch(
            "The request signature we calculated does not match the signature you provided"
        )
    if time.time() >= int(expires_raw):
        raise access_denied("Request has expired")
    content_type = request.headers.get("content-type", "").strip()
    if content_type != job.mime_type:
        raise signature_mismatch(
            f"Content-Type {content_type!r} does not match the signed mimeType {job.mime_type!r}"
        )
    return job


def _declared_length(request: Request) -> int | None:
    """The Content-Length header, when present and numeric."""
    raw = request.headers.get("content-length", "")
    return int(raw) if raw.isdigit() else None


async def _store_upload(request: Request, backend: SandboxBackend, job: Job) -> tuple[str, int]:
    """Stream the body to disk while hashing it; memory stays flat whatever the size."""
    limit = backend.settings.max_upload_bytes
    digest = hashlib.sha256()
    size = 0
    stall = backend.draw_upload_stall()
    with backend.uploads.create(job.request_id) as file:
        async with contextlib.aclosing(request.stream()) as stream:
            async for chunk in stream:
                if stall > 0:
                    await asyncio.sleep(stall)
                    stall = 0.0
                size += len(chunk)
                if size > limit:
                    break
                digest.update(chunk)
                file.write(chunk)
    if size > limit:
        backend.uploads.delete(job.request_id)
        await _drain(request)
        raise entity_too_large(limit)
    return digest.hexdigest(), size


async def _drain(request: Request) -> None:
    """Swallow a bounded rest of an oversize body, so the client reads the 413 rather than a reset."""
    drained = 0
    with contextlib.suppress(RuntimeError):  # the body had already ended: nothing to drain
        async with contextlib.aclosing(request.stream()) as stream:
            async for chunk in stream:
                drained += len(chunk)
                if drained > DRAIN_BYTES:
                    return


@guarded("upload")
async def upload(request: Request) -> Response:
    """One PUT per pre-signed URL; a completed upload starts processing (contract §6)."""
    backend = backend_of(request)
    job = _upload_job(request, backend)
    declared = _declared_length(request)
    if declared is not None and declared > backend.settings.max_upload_bytes:
        raise entity_too_large(backend.settings.max_upload_bytes)
    if not job.claim_upload():
        raise access_denied("This pre-signed URL has already been used")
    try:
        sha256, size = await _store_upload(request, backend, job)
    except ClientDisconnect:
        job.release_upload()
        backend.uploads.delete(job.request_id)
        raise StorageError(
            400, "IncompleteBody", "The request body ended before it was complete"
        ) from None
    except BaseException:
        job.release_upload()
        backend.uploads.delete(job.request_id)
        raise
    if not backend.is_current(job):
        backend.uploads.delete(job.request_id)
        raise access_denied("The sandbox was reset during this upload")
    backend.upload_received(job, sha256, size)
    return Response(status_code=200)


# -- get-transcription --------------------------------------------------------------------------


def _status_body(job: Job, version: date, settings: SandboxSettings) -> dict[str, Any]:
    """Segments, VTT (COMPLETED, version >= 2025-11-01), the status key(s), errorMessage on ERROR."""
    body: dict[str, Any] = {"transcription": [s.to_wire() for s in job.segments]}
    status = job.public_status
    if status == "COMPLETED" and version >= VTT_SINCE:
        body["vttTranscription"] = build_vtt(job.segments)
    if settings.status_field in ("both", "processingStatus"):
        body["processingStatus"] = status
    if settings.status_field in ("both", "transcriptionStatus"):
        body["transcriptionStatus"] = status
    if status == "ERROR":
        body["errorMessage"] = job.error_message
    return body


@guarded("status")
async def get_transcription(request: Request) -> Response:
    """The job's status and transcript (contract §5.2, #8-#10)."""
    backend = backend_of(request)
    _authorise(request, backend)
    version = _api_version(request, backend.settings)
    body = await _json_object(request)
    request_id = body.get("requestId")
    if not isinstance(request_id, str) or not request_id.strip():
        raise bad_request("requestId must be a non-empty string", "invalidRequestId")
    job = backend.get_job(request_id)
    if job is None:
        raise not_found()
    backend.status_polled(job)
    return JSONResponse(_status_body(job, version, backend.settings))


# -- control plane (no auth) -------------------------------------------------------------------


async def reset(request: Request) -> Response:
    """Forget jobs, tokens, stats, callbacks and uploads; restore the startup faults."""
    await backend_of(request).reset()
    return JSONResponse({"reset": True})


async def get_faults(request: Request) -> Response:
    """The fault set in force."""
    return JSONResponse(backend_of(request).faults.model_dump(mode="json"))


async def put_faults(request: Request) -> Response:
    """Merge a partial Faults object onto the current one (top-level keys replace)."""
    backend = backend_of(request)
    try:
        patch = _PATCH.validate_json(await request.body())
        faults = Faults.model_validate({**backend.faults.model_dump(), **patch})
    except ValidationError as exc:
        return validation_error_response(exc)
    backend.set_faults(faults, reseed="seed" in patch)
    return JSONResponse(faults.model_dump(mode="json"))


async def get_stats(request: Request) -> Response:
    """Counters, uploads per sha256, jobs per status, callbacks, concurrency, time-to-result."""
    backend = backend_of(request)
    return JSONResponse(backend.stats.to_wire(backend.job_counts()))


async def get_callbacks(request: Request) -> Response:
    """Every callback attempt so far, oldest first."""
    return JSONResponse([a.to_wire() for a in backend_of(request).callback_log])


def build_routes(token_path: str) -> list[BaseRoute]:
    """The API, the pre-signed upload target and the control plane."""
    return [
        Route(token_path, issue_token, methods=["POST"]),
        Route("/api/v1/generate-presigned-url", generate_presigned_url, methods=["POST"]),
        Route("/api/v1/get-transcription", get_transcription, methods=["POST"]),
        Route("/_upload/{request_id}", upload, methods=["PUT"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        Route("/_sandbox/faults", get_faults, methods=["GET"]),
        Route("/_sandbox/faults", put_faults, methods=["PUT"]),
        Route("/_sandbox/stats", get_stats, methods=["GET"]),
        Route("/_sandbox/callbacks", get_callbacks, methods=["GET"]),
    ]
