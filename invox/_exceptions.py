"""One exception tree: transport vs status errors, each marked transient or terminal.

Every error carries ``error_type`` (machine-readable, stable: it lands in output rows),
``status_code``, ``retryable`` and ``retry_after``. Messages never hold secrets, pre-signed
URL signatures or transcript text.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, ClassVar

import httpx

__all__ = [
    "APIStatusError",
    "APIUnreachableError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "InvoxError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PollTimeoutError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseFormatError",
    "ResponseLostError",
    "ServerError",
    "TerminalError",
    "TransientError",
    "TransportError",
    "UnprocessableEntityError",
    "UploadURLRejectedError",
    "error_from_response",
    "error_from_transport",
    "parse_retry_after",
]

_MAX_MESSAGE = 300


class InvoxError(Exception):
    """Base of every error the client raises."""

    error_type: ClassVar[str] = "invox_error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        upstream_error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after
        self.upstream_error_type = upstream_error_type


class TransientError(InvoxError):
    """Marker: trying the same call again later may succeed."""

    retryable: ClassVar[bool] = True


class TerminalError(InvoxError):
    """Marker: the same call will fail again; fix the input or configuration first."""

    retryable: ClassVar[bool] = False


class ConfigurationError(TerminalError):
    """The client is not configured well enough to make a call."""

    error_type = "configuration_error"


class TransportError(TransientError):
    """The request never got an HTTP answer (reset, timeout, DNS)."""

    error_type = "transport_error"


class ResponseLostError(TransportError):
    """The request went out but its answer never came (read timeout, reset): it may have worked."""


class APIUnreachableError(TransportError):
    """Nothing listens at the base URL (connection refused or host unknown)."""

    error_type = "api_unreachable"


class ResponseFormatError(TerminalError):
    """The server answered 2xx with a body that does not match the contract."""

    error_type = "bad_response"


class PollTimeoutError(TerminalError):
    """A job was still pending at the polling deadline; its request id resumes it later."""

    error_type = "timeout"

    def __init__(self, message: str, *, request_id: str, last_status: str | None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.last_status = last_status


class APIStatusError(InvoxError):
    """The server answered with a non-2xx status."""

    error_type = "http_error"


class BadRequestError(APIStatusError, TerminalError):
    error_type = "bad_request"


class AuthenticationError(APIStatusError, TerminalError):
    error_type = "unauthorized"


class PermissionDeniedError(APIStatusError, TerminalError):
    error_type = "forbidden"


class NotFoundError(APIStatusError, TerminalError):
    error_type = "not_found"


class RequestTimeoutError(APIStatusError, TransientError):
    error_type = "request_timeout"


class PayloadTooLargeError(APIStatusError, TerminalError):
    error_type = "payload_too_large"


class UnprocessableEntityError(APIStatusError, TerminalError):
    error_type = "unprocessable"


class RateLimitError(APIStatusError, TransientError):
    error_type = "rate_limited"


class ServerError(APIStatusError, TransientError):
    error_type = "server_error"


class UploadURLRejectedError(APIStatusError, TerminalError):
    """The storage refused the PUT (expired, tampered or mismatched URL): get a fresh one."""

    error_type = "upload_url_rejected"


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}

_HINTS: dict[type[APIStatusError], str] = {
    AuthenticationError: "check INVOX_APP_ID and INVOX_API_KEY",
    PermissionDeniedError: "the credential lacks the BATCH-TRANSCRIBE permission; ask Invox to grant it",
    RateLimitError: "slow down; retry after the indicated delay",
    ServerError: "the provider had a transient failure; retry later",
    PayloadTooLargeError: "the file is larger than the provider accepts",
}


def _status_class(status: int, *, upload: bool) -> type[APIStatusError]:
    """Pick the class for a status; a 403 from storage means the URL, not the credential."""
    if upload and status == 403:
        return UploadURLRejectedError
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, APIStatusError)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header, in either of its two forms."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


def _json_body(response: httpx.Response) -> dict[str, Any]:
    """The error body as a dict, or empty when it is not JSON (storage errors are XML)."""
    try:
        body = json.loads(response.content or b"null")
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _server_message(body: dict[str, Any]) -> str | None:
    """The server's message, under ``message`` or the documented typo ``messsage``."""
    for key in ("message", "messsage"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:_MAX_MESSAGE]
    return None


def error_from_response(
    response: httpx.Response, *, operation: str, upload: bool = False
) -> APIStatusError:
    """Map a non-2xx response to its exception class: the only place statuses are read."""
    status = response.status_code
    cls = _status_class(status, upload=upload)
    body = {} if upload else _json_body(response)
    upstream_type = body.get("errorType")
    detail = _server_message(body) or response.reason_phrase or "error"
    hint = _HINTS.get(cls)
    if cls is UploadURLRejectedError:
        hint = (
            "the pre-signed URL expired, was altered or its Content-Type differs; request a new one"
        )
    message = f"{operation} failed: HTTP {status} {detail}" + (f" ({hint})" if hint else "")
    return cls(
        message,
        status_code=status,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        upstream_error_type=upstream_type if isinstance(upstream_type, str) else None,
    )


def error_from_transport(exc: httpx.TransportError, *, operation: str) -> TransportError:
    """Wrap an httpx transport failure without echoing the URL (it may hold a signature)."""
    if isinstance(exc, httpx.ConnectError):
        return APIUnreachableError(
            f"{operation} failed: cannot connect to the API ({type(exc).__name__}); "
            "check INVOX_BASE_URL and that the server is up"
        )
    message = f"{operation} failed: {type(exc).__name__} talking to the API"
    if isinstance(exc, httpx.ReadTimeout | httpx.ReadError | httpx.RemoteProtocolError):
        return ResponseLostError(message)
    return TransportError(message)
