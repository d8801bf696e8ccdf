"""Secrets from Prefect ``Secret`` blocks when the worker's environment has none: the API key
(``invox-api-key``) and the ledger's database URL (``invox-ledger-url``, it may carry a password)."""

from __future__ import annotations

import os
from typing import Any, cast

from prefect.blocks.system import Secret
from pydantic import SecretStr

from invox import InvoxSettings
from invox_batch.ledger import ENV as LEDGER_ENV

__all__ = ["LEDGER_SECRET_BLOCK", "SECRET_BLOCK", "ledger_url", "with_secret_block"]

SECRET_BLOCK = "invox-api-key"
LEDGER_SECRET_BLOCK = "invox-ledger-url"


async def with_secret_block(settings: InvoxSettings, block: str = SECRET_BLOCK) -> InvoxSettings:
    """``INVOX_API_KEY`` wins; otherwise the ``invox-api-key`` Secret block, if it exists."""
    if os.environ.get("INVOX_API_KEY") or settings.api_key.get_secret_value():
        return settings
    try:
        secret = cast("Secret[Any]", await Secret.aload(block))
    except ValueError:  # no such block: the missing credential is reported by the first call
        return settings
    value = secret.get()
    return settings.model_copy(update={"api_key": SecretStr(str(value))})


async def ledger_url(parameter: str | None) -> tuple[SecretStr | None, str]:
    """The ledger URL and where it came from: the flow parameter (never with a password), else
    ``INVOX_LEDGER_URL``, else the ``invox-ledger-url`` Secret block; none means SQLite."""
    if parameter:
        return SecretStr(parameter), "state.ledger_url"
    if value := os.environ.get(LEDGER_ENV, "").strip():
        return SecretStr(value), LEDGER_ENV
    try:
        secret = cast("Secret[Any]", await Secret.aload(LEDGER_SECRET_BLOCK))
    except ValueError:  # no such block: the default SQLite ledger in the state folder
        return None, LEDGER_ENV
    value = str(secret.get()).strip()
    return (SecretStr(value) if value else None), f"the Secret block {LEDGER_SECRET_BLOCK}"
