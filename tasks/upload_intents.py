"""Write-ahead upload intents: an upload whose outcome we never learned is confirmed, not redone.

Before each PUT the upload task records the job's request id under ``intent-<cache key>.json``
(next to the ledger's records). If the process dies between the provider accepting the audio
and the upload record being saved, or the PUT's answer is lost (read timeout, reset), the next
attempt asks the API about those request ids first: a job that moves past ``PENDING`` proves the
audio arrived, and its request id is adopted instead of paying for a second upload.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from prefect.context import TaskRunContext

from invox import InvoxClient, InvoxError, NotFoundError, unlimited
from invox_batch.files import atomic_write

__all__ = [
    "confirm_landed",
    "find_landed",
    "forget_intent",
    "intent_path",
    "intents_in",
    "record_intent",
]

_PROBE_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)
_FOLDER: ContextVar[Path | None] = ContextVar("intents_folder", default=None)


@contextmanager
def intents_in(folder: Path) -> Iterator[None]:
    """Keep intents in ``folder`` (the ledger's) for upload steps run outside an upload task."""
    token = _FOLDER.set(folder)
    try:
        yield
    finally:
        _FOLDER.reset(token)


def intent_path(cache_key: str) -> Path | None:
    """Where intents live: the ledger's folder, else this task run's local result storage, else
    nowhere (``task.fn``)."""
    folder = _FOLDER.get()
    if folder is not None:
        return folder / f"intent-{cache_key}.json"
    context = TaskRunContext.get()
    storage = context.result_store.result_storage if context else None
    basepath = getattr(storage, "basepath", None)
    return Path(str(basepath)) / f"intent-{cache_key}.json" if basepath else None


def _read_ids(path: Path) -> list[str]:
    """Request ids recorded so far, oldest first; a missing or unreadable file records none."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return []
    ids = data.get("request_ids") if isinstance(data, dict) else None
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def _write_ids(path: Path, ids: list[str]) -> None:
    """Replace the intent atomically; no ids left means no intent file."""
    if not ids:
        path.unlink(missing_ok=True)
        return
    payload = json.dumps({"request_ids": ids}).encode()
    atomic_write(path, lambda handle: handle.write(payload))


def record_intent(cache_key: str, request_id: str) -> None:
    """Append ``request_id`` to the intent, durably, before its audio is sent."""
    path = intent_path(cache_key)
    if path is not None:
        _write_ids(path, [*_read_ids(path), request_id])


def forget_intent(cache_key: str, request_id: str) -> None:
    """The PUT of ``request_id`` certainly did not land (the server refused it): stop asking."""
    path = intent_path(cache_key)
    if path is not None:
        _write_ids(path, [i for i in _read_ids(path) if i != request_id])


async def confirm_landed(client: InvoxClient, request_id: str, grace_s: float) -> bool:
    """True once the job is past PENDING (its audio arrived); False if unknown or still pending."""
    deadline = time.monotonic() + grace_s
    delays = itertools.chain([0.0], _PROBE_DELAYS_S, itertools.repeat(_PROBE_DELAYS_S[-1]))
    for delay in delays:
        if delay:
            if time.monotonic() + delay > deadline:
                return False
            await asyncio.sleep(delay)
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


async def find_landed(client: InvoxClient, cache_key: str, grace_s: float) -> str | None:
    """The request id of an earlier attempt whose audio the provider did receive, if any."""
    path = intent_path(cache_key)
    ids = _read_ids(path) if path else []
    for request_id in reversed(ids):
        if await confirm_landed(client, request_id, grace_s / len(ids)):
            return request_id
    return None
