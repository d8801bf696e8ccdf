"""Point the client at the real API when configured, else at a sandbox started for this run."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pydantic import SecretStr

from invox import ConfigurationError, InvoxSettings

if TYPE_CHECKING:
    from sandbox.settings import SandboxSettings

__all__ = ["EMBEDDED_NAMESPACE", "NO_SANDBOX", "resolve_api"]

# The embedded sandbox listens on a new port each run; its results are still "the same API"
# (per processing mode: instant transcripts must never stand in for recognised ones).
EMBEDDED_NAMESPACE = "embedded-sandbox"

# What `pip install 'invox-batch[sandbox]'` brings (pyproject.toml): the double and its recognizer.
SANDBOX_EXTRA = ("sandbox", "pocketsphinx", "soxr")
NO_SANDBOX = (
    "INVOX_BASE_URL is not set and the local sandbox is not installed: set "
    "INVOX_BASE_URL/INVOX_APP_ID/INVOX_API_KEY for the real API, or "
    "`pip install 'invox-batch[sandbox]'` for the offline double"
)


def _sandbox_installed() -> bool:
    """Found, not imported: the recognizer loads only when a job needs it."""
    return all(importlib.util.find_spec(name) is not None for name in SANDBOX_EXTRA)


@contextmanager
def resolve_api(
    settings: InvoxSettings, say: Callable[[str], None], sandbox: SandboxSettings | None = None
) -> Iterator[InvoxSettings]:
    """Yield client settings; without INVOX_BASE_URL, an embedded sandbox serves for the duration."""
    if settings.base_url:
        yield settings
        return
    if not _sandbox_installed():
        raise ConfigurationError(NO_SANDBOX)
    from sandbox.server import SandboxServer
    from sandbox.settings import SandboxSettings

    sandbox_settings = sandbox or SandboxSettings()
    with SandboxServer(sandbox_settings) as server:
        say(
            f"INVOX_BASE_URL is not set: using the embedded sandbox at {server.base_url} "
            f"({sandbox_settings.processing} processing; no audio leaves this machine)"
        )
        yield settings.model_copy(
            update={
                "base_url": server.base_url,
                "cache_namespace": settings.cache_namespace
                or f"{EMBEDDED_NAMESPACE}-{sandbox_settings.processing}",
                "app_id": sandbox_settings.app_id,
                "api_key": SecretStr(sandbox_settings.api_key),
            }
        )
