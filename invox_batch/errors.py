"""The batch side's error vocabulary: one exception root and the ``error_type`` column's values.

Exception tree::

    InvoxBatchError                 anything the batch side refuses; one line, no PHI, no secret
    ├── ManifestError               the manifest cannot be read (a bad row is a failed row instead)
    ├── SchemaDriftError            rows that do not fit the dataset's declared schema
    ├── ReportError                 there is no dataset to report on at that location
    ├── LedgerUnavailable           the ledger's database could not be reached for a while
    └── CallbackRejected            a callback the receiver refuses (carries an HTTP status)

Client errors (``invox.InvoxError`` and its tree) stay the client's; their ``error_type`` values
are members of :class:`ErrorType` too, so every failed row's type is listed here, once.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "FATAL_ERROR_TYPES",
    "CallbackRejected",
    "ErrorType",
    "InvoxBatchError",
    "LedgerUnavailable",
    "ManifestError",
    "ReportError",
    "SchemaDriftError",
]


class ErrorType(StrEnum):
    """Every value of the ``error_type`` column: why a row failed, stable for scripts."""

    # Local checks, before anything is paid.
    BAD_MANIFEST_ROW = "bad_manifest_row"  # the row itself is unusable (no path, bad id)
    FILE_MISSING = "file_missing"  # audio_path names nothing
    NOT_A_FILE = "not_a_file"  # a folder, a FIFO, a device
    UNREADABLE = "unreadable"  # no permission, I/O error, vanished mid-run
    EMPTY_FILE = "empty_file"  # zero bytes
    UNSUPPORTED_TYPE = "unsupported_type"  # audio the API does not accept
    NOT_AUDIO = "not_audio"  # not audio at all (text, an image, a truncated header)
    # The run's own limits.
    BUDGET_EXCEEDED = "budget_exceeded"  # not submitted: max_audio_hours would be exceeded
    INTERNAL_ERROR = "internal_error"  # a bug or a lost worker; see the logs, then rerun
    LEDGER_UNAVAILABLE = "ledger_unavailable"  # the ledger's database was down; rerun
    # The provider's verdict on the job.
    PROVIDER_ERROR = "provider_error"  # the job ended ERROR; a rerun resubmits it
    # The client's errors (invox.InvoxError.error_type).
    CONFIGURATION_ERROR = "configuration_error"
    TRANSPORT_ERROR = "transport_error"
    API_UNREACHABLE = "api_unreachable"
    BAD_RESPONSE = "bad_response"
    TIMEOUT = "timeout"
    HTTP_ERROR = "http_error"
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    REQUEST_TIMEOUT = "request_timeout"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNPROCESSABLE = "unprocessable"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    UPLOAD_URL_REJECTED = "upload_url_rejected"
    INVOX_ERROR = "invox_error"  # any other client error


# Errors that would hit every remaining file the same way: stop calling the API after one.
FATAL_ERROR_TYPES = frozenset(
    {
        ErrorType.UNAUTHORIZED,
        ErrorType.FORBIDDEN,
        ErrorType.API_UNREACHABLE,
        ErrorType.CONFIGURATION_ERROR,
    }
)


class InvoxBatchError(Exception):
    """The root of everything the batch side raises on purpose."""


class ManifestError(InvoxBatchError):
    """The manifest as a whole cannot be used; the message says what to fix."""


class SchemaDriftError(InvoxBatchError, ValueError):
    """Rows that do not match the declared schema; names columns and rows, never values."""


class ReportError(InvoxBatchError, ValueError):
    """No dataset to report on (nothing written yet, or no such run)."""


class LedgerUnavailable(InvoxBatchError):
    """The ledger's database stayed unreachable; what was already recorded is safe: rerun."""


class CallbackRejected(InvoxBatchError):
    """A callback the receiver refuses; ``status`` is the HTTP answer, ``reason`` machine-readable."""

    def __init__(self, reason: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
