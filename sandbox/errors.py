"""Every error the sandbox sends, in the provider's wire formats, built in one place."""

from __future__ import annotations

import json
import math
from typing import Literal
from xml.sax.saxutils import escape

from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

__all__ = [
    "ApiError",
    "StorageError",
    "access_denied",
    "bad_request",
    "entity_too_large",
    "forbidden",
    "invalid_credentials",
    "not_found",
    "signature_mismatch",
    "throttled",
    "unauthorized",
    "validation_error_response",
]

MessageKey = Literal["messsage", "message"]

# Contract #6: the typed 400/401/403 bodies spell "messsage"; the 404 example spells "message".
_TYPED_SPELLING = frozenset({400, 401, 403})


class ApiError(Exception):
    """An API error answered as JSON ``{messsage|message, errorType?}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        key: MessageKey | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.key: MessageKey = key or ("messsage" if status in _TYPED_SPELLING else "message")
        self.headers = headers or {}

    def to_response(self, *, normalise: bool) -> JSONResponse:
        """The JSON body; ``normalise`` forces the ``message`` spelling everywhere."""
        body: dict[str, str] = {"message" if normalise else self.key: self.message}
        if self.error_type is not None:
            body["errorType"] = self.error_type
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def bad_request(message: str, error_type: str) -> ApiError:
    """400 with an ``errorType`` from the endpoint's (partly invented) enum."""
    return ApiError(400, message, error_type=error_type)


def unauthorized() -> ApiError:
    """401 for a missing, unknown or expired bearer token (contract #3)."""
    return ApiError(401, "Unauthorized")


def invalid_credentials() -> ApiError:
    """401 from the token endpoint, spelled ``message`` as contract #2 shows."""
    return ApiError(
        401, "Invalid credentials", key="message", headers={"WWW-Authenticate": "Basic"}
    )


def forbidden(error_type: str) -> ApiError:
    """403: the credential lacks the ``BATCH-TRANSCRIBE`` permission."""
    return ApiError(403, "Credential lacks the BATCH-TRANSCRIBE permission", error_type=error_type)


def not_found() -> ApiError:
    """404 exactly as the get-transcription page's example."""
    return ApiError(404, "Transcription not found", error_type="transcriptionNotFound")


_INJECTED = {429: "Too many requests", 500: "Internal server error", 503: "Service unavailable"}


def throttled(status: Literal[429, 500, 503], retry_after_s: float) -> ApiError:
    """An injected 429/500/503; 429 and 503 carry ``Retry-After`` (the knob's integer ceiling)."""
    headers = {} if status == 500 else {"Retry-After": str(math.ceil(retry_after_s))}
    return ApiError(status, _INJECTED[status], key="message", headers=headers)


class StorageError(Exception):
    """An object-storage (pre-signed URL) error, answered as S3-style XML."""

    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def to_response(self) -> Response:
        """``<Error><Code>..</Code><Message>..</Message>..</Error>`` like S3 sends."""
        fields = {"Code": self.code, "Message": self.message, **self.extra}
        inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
        body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'
        return Response(body, status_code=self.status, media_type="application/xml")


def access_denied(message: str) -> StorageError:
    """403 AccessDenied: bad/missing query auth, unknown key, expired or reused URL."""
    return StorageError(403, "AccessDenied", message)


def signature_mismatch(message: str) -> StorageError:
    """403 SignatureDoesNotMatch: tampered URL or a Content-Type other than the signed one."""
    return StorageError(403, "SignatureDoesNotMatch", message)


def entity_too_large(max_bytes: int) -> StorageError:
    """413 EntityTooLarge with the limit, as S3 reports it."""
    return StorageError(
        413,
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size",
        MaxSizeAllowed=str(max_bytes),
    )


def validation_error_response(exc: ValidationError) -> JSONResponse:
    """422 ``{"detail": [...]}`` with pydantic's error list, JSON-safe."""
    return JSONResponse({"detail": json.loads(exc.json(include_url=False))}, status_code=422)
