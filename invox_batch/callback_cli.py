"""The CLI's callback pieces: the ``callbacks`` command body and ``run``'s callback-mode flags."""

from __future__ import annotations

from typing import Any

from invox import ConfigurationError, InvoxSettings

__all__ = ["callback_options"]


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
        from .callbacks import ReceiverConfig

        parse_listen(listen)
        ReceiverConfig.from_settings(settings)  # the in-run receiver must be able to check
    return {
        "completion": completion,
        "callback_grace_s": grace_s,
        "callback_store": store,
        "callback_listen": listen,
    }
