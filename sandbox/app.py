"""``create_app``: wire settings, backend, transcriber and callbacks into a Starlette app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.callbacks import CallbackDispatcher
from sandbox.errors import ApiError, StorageError
from sandbox.models import SandboxBackend
from sandbox.routes import backend_of, build_routes
from sandbox.settings import SandboxSettings
from sandbox.transcripts import make_transcriber

__all__ = ["create_app"]


def create_app(settings: SandboxSettings | None = None) -> Starlette:
    """A fresh sandbox; state lives on ``app.state.backend`` and dies with the lifespan."""
    settings = settings if settings is not None else SandboxSettings()
    transcriber = make_transcriber(
        settings.processing, settings.asr_model, settings.asr_workers, settings.instant_text
    )
    backend = SandboxBackend(settings, transcriber)
    dispatcher = CallbackDispatcher(backend)
    backend.notifier = dispatcher

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        """Shutdown cancels jobs and callbacks, stops the recognizer and wipes uploaded audio."""
        try:
            yield
        finally:
            await backend.aclose()
            await dispatcher.aclose()

    app = Starlette(
        routes=build_routes(settings.token_path),
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _http_error,
            ApiError: _api_error,
            StorageError: _storage_error,
        },
    )
    app.state.backend = backend
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer JSON like the rest of the API."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"message": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    """API errors raised outside a guarded handler still use the wire format."""
    assert isinstance(exc, ApiError)
    return exc.to_response(normalise=backend_of(request).settings.normalise_error_messages)


async def _storage_error(request: Request, exc: Exception) -> Response:
    """Storage errors raised outside the upload handler still answer XML."""
    assert isinstance(exc, StorageError)
    return exc.to_response()
