"""Typed async client for the Invox Medical asynchronous transcription API."""

from inspect import isclass as _isclass
from inspect import isfunction as _isfunction

from ._client import InvoxClient, check_callback_url
from ._config import ACCEPTED_MIME_TYPES, DEFAULT_MIME_TYPES, InvoxSettings
from ._exceptions import (
    APIStatusError,
    APIUnreachableError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InvoxError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PollTimeoutError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    ResponseLostError,
    ServerError,
    TerminalError,
    TransientError,
    TransportError,
    UnprocessableEntityError,
    UploadURLRejectedError,
)
from ._limiter import unlimited
from ._models import (
    TERMINAL_STATUSES,
    PresignedUpload,
    Segment,
    Status,
    Transcription,
)
from ._polling import PollPolicy
from ._signature import CallbackSignatureError, check_created_at, verify_callback_signature
from ._timing import PollTimer

__all__ = [
    "ACCEPTED_MIME_TYPES",
    "DEFAULT_MIME_TYPES",
    "TERMINAL_STATUSES",
    "APIStatusError",
    "APIUnreachableError",
    "AuthenticationError",
    "BadRequestError",
    "CallbackSignatureError",
    "ConfigurationError",
    "InvoxClient",
    "InvoxError",
    "InvoxSettings",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PollPolicy",
    "PollTimeoutError",
    "PollTimer",
    "PresignedUpload",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseFormatError",
    "ResponseLostError",
    "Segment",
    "ServerError",
    "Status",
    "TerminalError",
    "Transcription",
    "TransientError",
    "TransportError",
    "UnprocessableEntityError",
    "UploadURLRejectedError",
    "check_callback_url",
    "check_created_at",
    "unlimited",
    "verify_callback_signature",
]

# Reprs and tracebacks name the public path (invox.RateLimitError), as httpx does.
for _name in __all__:
    if _isclass(_value := globals()[_name]) or _isfunction(_value):
        _value.__module__ = __name__
