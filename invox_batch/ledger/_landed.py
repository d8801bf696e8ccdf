"""Whether an earlier attempt's audio reached the provider: asked of the API, never guessed."""

from __future__ import annotations

import asyncio
import itertools
import time

from invox import InvoxClient, InvoxError, NotFoundError, unlimited

__all__ = ["confirm_landed"]

_PROBE_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)


async def confirm_landed(client: InvoxClient, request_id: str, grace_s: float) -> bool:
    """True once the job is past PENDING (its audio arrived); False if unknown or still pending."""
    deadline = time.monotonic() + grace_s
    delays = itertools.chain([0.0], _PROBE_DELAYS_S, itertools.repeat(_PROBE_DELAYS_S[-1]))
    for delay in delays:
        if delay:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(delay, left))  # the last probe is at the deadline itself
        try:
            with unlimited():
                status = (await client.get_transcription(request_id)).status
        except NotFoundError:
            return False
        except InvoxError as exc:
            if not exc.retryable:
                return False
            continue
        if status != "PENDING":
            return True
    return False
