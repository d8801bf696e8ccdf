"""The flow's completion modes: poll on a schedule, or wait for a callback and then fetch once.

In ``callback`` mode a recorded callback only decides *when* to call ``get-transcription``; the
result itself always comes from that authenticated call (contract §10 #19), through the same
cached ``poll`` task as in ``poll`` mode. So a forged or tampered callback can at worst cause one
early status call, never a different result, and the never-pay-twice records stay the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from invox import InvoxSettings, PollPolicy, check_callback_url

from ._options import CompletionMode, parse_listen
from ._receiver import ReceiverConfig, running_receiver
from ._store import CallbackStore

__all__ = ["CallbackCompletion", "Completion", "PollCompletion", "completion_for"]

HINT_FIRST_POLL_S = 0.05  # a callback says the job ended: ask at once, then back off as usual
STORE_CHECK_S = 0.2
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
_log = logging.getLogger("invox_batch.callbacks")


class Completion(Protocol):
    """Decides when the poll task starts asking for one request's result."""

    async def policy(self, request_id: str, base: PollPolicy) -> PollPolicy:
        """The poll policy to use for this request, after any waiting this mode does."""
        ...


class PollCompletion:
    """``poll`` mode: the duration-scaled schedule as given."""

    async def policy(self, request_id: str, base: PollPolicy) -> PollPolicy:
        """Poll on the base schedule."""
        return base


@dataclass
class CallbackCompletion:
    """``callback`` mode: wait for the request's record in the store, else poll after a grace."""

    store: CallbackStore
    grace_s: float
    check_every_s: float = STORE_CHECK_S
    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    log: Logger = _log

    async def policy(self, request_id: str, base: PollPolicy) -> PollPolicy:
        """Wait up to the expected processing time plus the grace, then fetch at once."""
        started = time.monotonic()
        limit = min(base.first_delay_s + self.grace_s, base.timeout_s)
        if await self._arrived(request_id, started + limit):
            self.counts["callback"] += 1
        else:
            self.counts["fallback"] += 1
            self.log.info(
                "no callback for request %s after %gs; polling instead", request_id, limit
            )
        waited = time.monotonic() - started
        return dataclasses.replace(
            base,
            first_delay_s=min(HINT_FIRST_POLL_S, base.first_delay_s),
            timeout_s=max(base.timeout_s - waited, HINT_FIRST_POLL_S),
        )

    async def _arrived(self, request_id: str, deadline: float) -> bool:
        """Check the store until the record appears or the deadline passes."""
        while not self.store.has(request_id):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(self.check_every_s, left))
        return True


@contextmanager
def completion_for(
    mode: CompletionMode,
    *,
    grace_s: float,
    store_dir: Path,
    listen: str | None,
    callback_url: str | None,
    settings: InvoxSettings,
    log: Logger = _log,
) -> Iterator[tuple[Completion, str | None]]:
    """The run's completion mode and the callbackUrl to send, with the receiver running if asked
    (the values come checked, from the ``Callbacks`` parameter group)."""
    if mode == "poll":
        yield PollCompletion(), callback_url
        return
    completion = CallbackCompletion(CallbackStore(store_dir), grace_s, log=log)
    if listen is None:
        yield completion, callback_url
    else:
        host, port = parse_listen(listen)
        config = ReceiverConfig.from_settings(settings)
        with running_receiver(completion.store, config, host, port) as receiver_url:
            url = callback_url or check_callback_url(receiver_url)
            log.info("callback receiver listening on %s", receiver_url)
            yield completion, url
    log.info(
        "callback mode: %d requests signalled by callback, %d fell back to polling",
        completion.counts["callback"],
        completion.counts["fallback"],
    )
