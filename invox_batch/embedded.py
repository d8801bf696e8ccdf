"""Point the client at the real API when configured, else at a sandbox started for this run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydantic import SecretStr

from invox import InvoxSettings
from sandbox.server import SandboxServer
from sandbox.settings import SandboxSettings

__all__ = ["EMBEDDED_NAMESPACE", "resolve_api"]

# The embedded sandbox listens on a new port each run; its results are still "the same API"
# (per processing mode: instant transcripts must never stand in for recognised ones).
EMBEDDED_NAMESPACE = "embedded-sandbox"


@contextmanager
def resolve_api(
    settings: InvoxSettings, say: Callable[[str], None], sandbox: SandboxSettings | None = None
) -> Iterator[InvoxSettings]:
    """Yield client settings; without INVOX_BASE_URL, an embedded sandbox serves for the duration."""
    if settings.base_url:
        yield settings
        return
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
