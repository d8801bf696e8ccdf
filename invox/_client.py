"""The async client: one method per endpoint, each returning a typed model or raising an ``InvoxError``."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import httpx

from ._auth import VERSION_HEADER, TokenProvider
from ._config import InvoxSettings
from ._exceptions import (
    AuthenticationError,
    ConfigurationError,
    ResponseFormatError,
    error_from_response,
    error_from_transport,
    parse_retry_after,
)
from ._limiter import AdaptiveLimiter
from ._models import (
    PresignedUpload,
    Transcription,
    parse_presigned_upload,
    parse_transcription,
)
from ._polling import PollPolicy, poll_until_terminal
from ._redact import install_httpx_log_redaction, redact_url

__all__ = ["InvoxClient", "check_callback_url", "guess_mime_type"]

logger = logging.getLogger("invox")

PRESIGN_PATH = "/api/v1/generate-presigned-url"
TRANSCRIPTION_PATH = "/api/v1/get-transcription"


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def check_callback_url(url: str) -> str:
    """Callbacks carry transcripts: HTTPS only (plain http just for a receiver on this machine)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise ConfigurationError("callback URL is not a valid URL") from None
    local = parsed.host in _LOOPBACK or parsed.host.startswith("127.")
    if parsed.scheme == "https" and parsed.host:
        return url
    if parsed.scheme == "http" and local:
        return url
    raise ConfigurationError(
        "callback URL must be an absolute https:// URL (http:// only for localhost)"
    )


def guess_mime_type(path: str | os.PathLike[str], mime_types: dict[str, str]) -> str | None:
    """The contract mime type for a file's extension, or None when the API does not take it."""
    return mime_types.get(Path(path).suffix.lower())


SMALL_FILE_BYTES = 256 * 1024  # read whole on the loop: four thread hand-offs cost more


async def _read_chunks(path: Path, chunk_bytes: int) -> AsyncIterator[bytes]:
    """Stream a file off the event loop, one chunk in memory at a time."""
    async with await anyio.open_file(path, "rb") as handle:
        while chunk := await handle.read(chunk_bytes):
            yield chunk


def _limiter_for(settings: InvoxSettings) -> AdaptiveLimiter | None:
    """One AIMD limiter per client, or none when adaptive concurrency is switched off."""
    if not settings.adaptive_concurrency:
        return None
    ceiling = settings.max_inflight
    return AdaptiveLimiter(min(settings.initial_concurrency, ceiling), ceiling)


def _json(response: httpx.Response, operation: str) -> Any:
    """The body as JSON, or a format error naming the endpoint."""
    try:
        return response.json()
    except ValueError:
        raise ResponseFormatError(f"{operation} response: body is not JSON") from None


class InvoxClient:
    """Talks to one Invox environment; share one per process or flow run (it pools connections)."""

    def __init__(
        self, settings: InvoxSettings | None = None, *, http: httpx.AsyncClient | None = None
    ) -> None:
        self.settings = settings or InvoxSettings()
        if not self.settings.base_url:
            raise ConfigurationError("INVOX_BASE_URL is not set; point it at the Invox API")
        install_httpx_log_redaction()
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=self.settings.timeout())
        self.limiter = _limiter_for(self.settings)
        self._tokens = TokenProvider(self.settings, self._http, limiter=self.limiter)

    def __repr__(self) -> str:
        return f"InvoxClient(base_url={self.settings.base_url!r}, api_version={self.settings.api_version!r})"

    async def __aenter__(self) -> InvoxClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool if this client created it."""
        if self._owns_http:
            await self._http.aclose()

    @property
    def token_fetches(self) -> int:
        """How many tokens this client has requested (a cache health figure)."""
        return self._tokens.fetches

    async def authenticate(self) -> None:
        """Fetch a token now: the cheapest way to check credentials before a batch."""
        await self._tokens.get()

    async def generate_presigned_url(
        self, mime_type: str, callback_url: str | None = None
    ) -> PresignedUpload:
        """Open a job: a one-shot upload URL and the request id that tracks the result."""
        payload: dict[str, Any] = {"mimeType": mime_type}
        if callback_url:
            payload["callbackUrl"] = check_callback_url(callback_url)
        body = await self._call(PRESIGN_PATH, payload, operation="generate-presigned-url")
        upload = parse_presigned_upload(body)
        logger.debug("presigned %s for request %s", upload.redacted_url, upload.request_id)
        return upload

    async def upload(
        self, presigned_url: str, file: str | os.PathLike[str], mime_type: str
    ) -> None:
        """PUT the file's bytes to the pre-signed URL (a large file streamed from disk), with no bearer token."""
        path = Path(file)
        size = path.stat().st_size
        content: bytes | AsyncIterator[bytes]
        if size <= SMALL_FILE_BYTES:
            content = path.read_bytes()
            size = len(content)
        else:
            content = _read_chunks(path, self.settings.upload_chunk_bytes)
        headers = {"Content-Type": mime_type, "Content-Length": str(size)}
        operation = f"upload to {redact_url(presigned_url)}"
        try:
            response = await self._http.put(presigned_url, content=content, headers=headers)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, operation="upload") from None
        if response.is_error:
            raise error_from_response(response, operation=operation, upload=True)
        logger.debug("uploaded %d bytes to %s", size, redact_url(presigned_url))

    async def get_transcription(self, request_id: str) -> Transcription:
        """The job's current status and, once COMPLETED, its segments."""
        operation = "get-transcription"
        response = await self._request(TRANSCRIPTION_PATH, {"requestId": request_id}, operation)
        result = parse_transcription(request_id, _json(response, operation))
        hint = parse_retry_after(response.headers.get("Retry-After"))
        if hint is None or result.is_terminal:
            return result
        return result.model_copy(update={"retry_after_s": hint})

    async def wait_for_transcription(
        self,
        request_id: str,
        policy: PollPolicy | None = None,
        *,
        on_poll: Callable[[int, str], None] | None = None,
    ) -> Transcription:
        """Poll until COMPLETED or ERROR; raises ``PollTimeoutError`` at the deadline."""
        return await poll_until_terminal(
            lambda: self.get_transcription(request_id),
            request_id,
            policy or PollPolicy(),
            on_poll=on_poll,
        )

    async def transcribe_file(
        self,
        file: str | os.PathLike[str],
        mime_type: str | None = None,
        policy: PollPolicy | None = None,
    ) -> Transcription:
        """Presign, upload and poll one file: the whole flow for scripts and demos."""
        mime = mime_type or guess_mime_type(file, self.settings.mime_types)
        if mime is None:
            raise ConfigurationError(
                f"no Invox mime type for {Path(file).suffix!r}; pass mime_type explicitly"
            )
        slot = await self.generate_presigned_url(mime)
        await self.upload(slot.presigned_url, file, mime)
        return await self.wait_for_transcription(slot.request_id, policy)

    async def _call(self, path: str, payload: dict[str, Any], *, operation: str) -> Any:
        """POST JSON and return the decoded body."""
        return _json(await self._request(path, payload, operation), operation)

    async def _request(self, path: str, payload: dict[str, Any], operation: str) -> httpx.Response:
        """POST JSON with a bearer token; a 401 refreshes the token and retries exactly once.

        The token is taken inside the limiter slot: one taken before queueing for a slot could
        expire in the queue.
        """
        async with self.limiter or contextlib.nullcontext():  # errors leave it with their status
            response = await self._post_authenticated(path, payload, operation)
            if response.is_error:
                error = error_from_response(response, operation=operation)
                if isinstance(error, AuthenticationError):
                    logger.warning("%s: token refused twice; check the credential", operation)
                raise error
        return response

    async def _post_authenticated(
        self, path: str, payload: dict[str, Any], operation: str
    ) -> httpx.Response:
        """The POST with the current token, once more with a fresh token after a 401."""
        token = await self._tokens.get()
        response = await self._post(path, payload, token, operation=operation)
        if response.status_code == 401:
            self._tokens.invalidate(token)
            token = await self._tokens.get()
            response = await self._post(path, payload, token, operation=operation)
        return response

    async def _post(
        self, path: str, payload: dict[str, Any], token: str, *, operation: str
    ) -> httpx.Response:
        """One authenticated POST; transport failures become ``TransportError``."""
        headers = {
            "Authorization": f"Bearer {token}",
            VERSION_HEADER: self.settings.api_version,
        }
        url = f"{self.settings.base_url}{path}"
        try:
            return await self._http.post(url, json=payload, headers=headers)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, operation=operation) from None
