"""The offline double, from the top floor only: ``invox-batch sandbox``, and the embedded sandbox
``run`` starts when ``INVOX_BASE_URL`` is not set."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from invox import ConfigurationError, InvoxSettings

from ..stopping import current_stop
from ._app import app, fail_usage, problems

if TYPE_CHECKING:
    from sandbox.settings import SandboxSettings

__all__ = ["NO_SANDBOX", "resolve_api", "sandbox", "sandbox_settings"]

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
    server = SandboxServer(sandbox_settings).start()
    try:
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
    finally:  # after a signal, an upload still in flight is not waited for: the run is over
        server.stop(now=current_stop().requested)


def _fault_overrides(**flags: Any) -> dict[str, Any]:
    """The fault flags the user actually gave, shaped like ``Faults`` fields."""
    every = ("token", "presign", "upload", "status")
    faults: dict[str, Any] = {}
    if flags["rate_429"] is not None:
        faults["rate_429"] = dict.fromkeys(every, flags["rate_429"])
    if flags["rate_503"] is not None:
        faults["rate_503"] = dict.fromkeys(every, flags["rate_503"])
    if flags["rate_500"] is not None:
        faults["rate_500"] = dict.fromkeys(every, flags["rate_500"])
    if flags["latency"] is not None:
        faults["latency_s"] = dict.fromkeys(every, flags["latency"])
    if flags["processing_delay"] is not None:
        faults["processing_delay_s"] = flags["processing_delay"]
    if flags.get("heavy_tail") is not None:
        faults["heavy_tail_share"], faults["heavy_tail_s"] = flags["heavy_tail"]
    scalar = {
        "processing_rtf": "processing_rtf",
        "max_inflight": "max_inflight",
        "token_ttl": "token_ttl_s",
        "url_ttl": "url_ttl_s",
        "job_error_rate": "job_error_rate",
        "drop_callback_rate": "drop_callback_rate",
        "seed": "seed",
    }
    faults.update({field: flags[flag] for flag, field in scalar.items() if flags[flag] is not None})
    return faults


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    app_id: Annotated[str | None, typer.Option(help="Accepted app id [sandbox-app].")] = None,
    api_key: Annotated[str | None, typer.Option(help="Accepted api key [sandbox-key].")] = None,
    processing: Annotated[
        str | None, typer.Option(help="asr (real recognition) or instant (hash-derived text).")
    ] = None,
    asr_model: Annotated[str | None, typer.Option(help="clinical or general.")] = None,
    rate_429: Annotated[float | None, typer.Option(help="P(429) on every endpoint.")] = None,
    rate_503: Annotated[float | None, typer.Option(help="P(503) on every endpoint.")] = None,
    rate_500: Annotated[float | None, typer.Option(help="P(500) on every endpoint.")] = None,
    latency: Annotated[float | None, typer.Option(help="Seconds added to every answer.")] = None,
    processing_delay: Annotated[
        tuple[float, float] | None, typer.Option(help="MIN MAX seconds before a job ends.")
    ] = None,
    processing_rtf: Annotated[
        tuple[float, float] | None,
        typer.Option(help="MIN MAX factor: a job takes its audio's duration times this."),
    ] = None,
    max_inflight: Annotated[
        int | None, typer.Option(help="API requests served at once; more get 429.")
    ] = None,
    heavy_tail: Annotated[
        tuple[float, float] | None,
        typer.Option(help="SHARE SECONDS: that share of jobs (by audio) takes that long."),
    ] = None,
    token_ttl: Annotated[float | None, typer.Option(help="Token lifetime, seconds.")] = None,
    url_ttl: Annotated[float | None, typer.Option(help="Upload URL lifetime, seconds.")] = None,
    job_error_rate: Annotated[float | None, typer.Option(help="P(job ends ERROR).")] = None,
    drop_callback_rate: Annotated[float | None, typer.Option(help="P(callback lost).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible faults.")] = None,
) -> None:
    """Serve the local Invox API double (INVOX_SANDBOX_* variables set the defaults)."""
    from sandbox.server import serve
    from sandbox.settings import SandboxSettings

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "app_id": app_id,
            "api_key": api_key,
            "processing": processing,
            "asr_model": asr_model,
        }.items()
        if v is not None
    }
    try:
        base = SandboxSettings()
        fault_flags = _fault_overrides(
            rate_429=rate_429,
            rate_503=rate_503,
            rate_500=rate_500,
            latency=latency,
            processing_delay=processing_delay,
            processing_rtf=processing_rtf,
            max_inflight=max_inflight,
            heavy_tail=heavy_tail,
            token_ttl=token_ttl,
            url_ttl=url_ttl,
            job_error_rate=job_error_rate,
            drop_callback_rate=drop_callback_rate,
            seed=seed,
        )
        faults = base.faults.model_copy(update=fault_flags)
        settings = SandboxSettings.model_validate(
            {**base.model_dump(), **overrides, "faults": faults.model_dump()}
        )
    except (ValidationError, SettingsError) as exc:
        raise fail_usage(problems(exc, "INVOX_SANDBOX_")) from None
    serve(settings, host=host, port=port)


def sandbox_settings() -> SandboxSettings | None:
    """The embedded sandbox's INVOX_SANDBOX_* settings, refused in one line before it starts."""
    try:
        from sandbox.settings import SandboxSettings
    except ImportError:
        return None  # resolve_api says how to install it
    try:
        return SandboxSettings()
    except (ValidationError, SettingsError) as exc:
        raise fail_usage(problems(exc, "INVOX_SANDBOX_")) from None
