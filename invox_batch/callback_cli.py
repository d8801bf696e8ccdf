"""The CLI's callback pieces: the ``callbacks`` command body and ``run``'s callback-mode flags."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from invox import ConfigurationError, InvoxError, InvoxSettings

__all__ = ["callback_options", "serve_callbacks"]

EXIT_USAGE = 2


def callback_options(
    settings: InvoxSettings,
    completion: str,
    grace_s: float,
    store: str | None,
    listen: str | None,
    callback_url: str | None,
) -> dict[str, Any]:
    """The flow's callback-mode parameters, checked up front (ConfigurationError when unusable)."""
    from flows.callback_mode import parse_listen

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
        from .callback_receiver import ReceiverConfig

        parse_listen(listen)
        ReceiverConfig.from_settings(settings)  # the in-run receiver must be able to check
    return {
        "completion": completion,
        "callback_grace_s": grace_s,
        "callback_store": store,
        "callback_listen": listen,
    }


def serve_callbacks(
    settings: InvoxSettings,
    port: int,
    host: str,
    out: str,
    store: str | None,
    scheme: str | None,
    say: Callable[[str], None],
) -> None:
    """Check the settings, then serve in the foreground until interrupted."""
    from sandbox.server import port_free

    from .callback_receiver import ReceiverConfig, serve_receiver
    from .callback_store import CallbackStore
    from .output import Output

    try:
        config = ReceiverConfig.from_settings(settings, scheme)
        root = Path(store) if store else Output.parse(out).default_state_dir() / "callbacks"
    except InvoxError as exc:
        say(f"error: {exc.message}")
        raise typer.Exit(EXIT_USAGE) from None
    if not port_free(host, port):
        say(f"error: {host}:{port} is in use; pick another with --port")
        raise typer.Exit(EXIT_USAGE)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    serve_receiver(CallbackStore(root), config, host, port, say)
