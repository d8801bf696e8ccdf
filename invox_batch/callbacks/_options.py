"""Callback-mode settings, refused before a run starts: from the CLI's flags or the flow's parameters."""

from __future__ import annotations

from typing import Any, Literal

from invox import ConfigurationError, InvoxSettings

from ._receiver import ReceiverConfig

__all__ = ["CompletionMode", "callback_options", "check_completion", "parse_listen"]

CompletionMode = Literal["poll", "callback"]


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) → (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigurationError(f"callback_listen must be host:port, not {listen!r}")
    return host.strip("[]"), int(port)


def check_completion(mode: CompletionMode, callback_url: str | None, listen: str | None) -> None:
    """Callback mode needs somewhere for callbacks to arrive: a URL you run, or a listen address."""
    if mode == "callback" and not (callback_url or listen):
        raise ConfigurationError(
            "completion='callback' needs callback_url (a receiver you run) or callback_listen"
        )
    if listen is not None:
        parse_listen(listen)


def callback_options(
    settings: InvoxSettings,
    completion: str,
    grace_s: float,
    store: str | None,
    listen: str | None,
    callback_url: str | None,
) -> dict[str, Any]:
    """The flow's callback-mode parameters from ``run``'s flags (ConfigurationError when unusable)."""
    if completion not in ("poll", "callback"):
        raise ConfigurationError("--completion must be poll or callback")
    if completion == "poll":
        if listen or store:
            raise ConfigurationError(
                "--callback-listen/--callback-store need --completion callback"
            )
        return {}
    if listen is None and callback_url is None:
        raise ConfigurationError(
            "--completion callback needs --callback-listen HOST:PORT (a receiver in this run) or "
            "--callback-url pointing at a receiver you run (`invox-batch callbacks`)"
        )
    if listen is not None:
        parse_listen(listen)
        ReceiverConfig.from_settings(settings)  # the in-run receiver must be able to check
    return {
        "completion": completion,
        "callback_grace_s": grace_s,
        "callback_store": store,
        "callback_listen": listen,
    }
