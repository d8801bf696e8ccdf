"""The API key from a Prefect ``Secret`` block when the worker's environment has none."""

from __future__ import annotations

import os
from typing import Any, cast

from prefect.blocks.system import Secret
from pydantic import SecretStr

from invox import InvoxSettings

__all__ = ["SECRET_BLOCK", "with_secret_block"]

SECRET_BLOCK = "invox-api-key"


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
