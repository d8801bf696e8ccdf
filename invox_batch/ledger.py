"""What earlier runs already paid for: one record per accepted upload and per terminal result.

Audio identity is the content sha256 plus the API base URL and version. Each paid attempt at an
identity is a *generation* ``g``: ``upload-<identity>-g<g>`` records the accepted upload (its
request id) and ``result-<identity>-g<g>`` the terminal result. The run saves each record before
it does anything else with that file; every run reads them first, so a rerun skips paid-for work
without an API call. Records keep the JSON layout of Prefect's result records, so folders written
by earlier versions read as they are.

Write-ahead upload intents live beside them: before each PUT the job's request id is recorded
under ``intent-<upload key>.json``. If the process dies between the provider accepting the audio
and the upload record being saved, or the PUT's answer is lost, the next attempt asks the API
about those request ids first: a job past ``PENDING`` proves the audio arrived, and its request
id is adopted instead of paying for a second upload.

``forget`` erases an identity's records (transcripts included) and leaves ``tombstone-<identity>``
(the identity and when, nothing else): runs then refuse that audio unless forced, and the
forced run's accepted upload lifts the tombstone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from invox import InvoxClient, InvoxError, NotFoundError, unlimited

from .files import atomic_write, make_dirs, sweep_stale_temps
from .records import ResultRecord, UploadRecord

__all__ = [
    "Forgotten",
    "Generation",
    "Ledger",
    "audio_identity",
    "result_key",
    "tombstone_key",
    "upload_key",
]

_PROBE_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)


def audio_identity(sha256: str, base_url: str, api_version: str) -> str:
    """One key per (audio content, API environment, API version): what "the same job" means."""
    return hashlib.sha256(f"{base_url}|{api_version}|{sha256}".encode()).hexdigest()[:40]


def upload_key(identity: str, generation: int) -> str:
    """Name of the record saying this audio was accepted (and under which request id)."""
    return f"upload-{identity}-g{generation}"


def result_key(identity: str, generation: int) -> str:
    """Name of the record holding the terminal result of that upload."""
    return f"result-{identity}-g{generation}"


def tombstone_key(identity: str) -> str:
    """Name of the marker saying this audio's transcripts were erased on purpose."""
    return f"tombstone-{identity}"


@dataclass(frozen=True)
class Forgotten:
    """What erasing identities removed from the ledger: records, and their jobs' request ids."""

    records: int
    request_ids: frozenset[str]


@dataclass(frozen=True)
class Generation:
    """Where an identity stands: which attempt to work on and what is already known about it."""

    number: int
    action: Literal["done", "exhausted", "poll", "submit"]
    upload: UploadRecord | None = None
    result: ResultRecord | None = None


def _encode(key: str, record: dict[str, Any], expiration: dt.datetime | None) -> bytes:
    """A record in Prefect's result-record layout (the result itself a JSON string)."""
    metadata = {
        "storage_key": key,
        "expiration": expiration.isoformat() if expiration else None,
        "serializer": {"type": "json"},
    }
    return json.dumps({"metadata": metadata, "result": json.dumps(record)}).encode()


def _decode(content: bytes) -> dict[str, Any] | None:
    """The record in a file, or None when it is unreadable or expired."""
    try:
        data = json.loads(content)
        result = data["result"]
        record = json.loads(result) if isinstance(result, str) else result
        expiration = (data.get("metadata") or {}).get("expiration")
        expires = dt.datetime.fromisoformat(expiration) if expiration else None
    except (ValueError, TypeError, KeyError):
        return None
    if expires is not None:
        expires = expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC)
        if expires <= dt.datetime.now(dt.UTC):
            return None
    return record if isinstance(record, dict) else None


class Ledger:
    """The never-pay-twice records of one state folder: atomic, owner-only files."""

    def __init__(self, root: Path, cache_expiration: dt.timedelta | None = None) -> None:
        self.root = root
        self.cache_expiration = cache_expiration

    @classmethod
    def open(cls, root: Path, cache_expiration: dt.timedelta | None = None) -> Ledger:
        """The ledger at ``root``, created if missing, temp files of killed writers swept."""
        make_dirs(root)
        sweep_stale_temps(root, ".*.tmp-*")
        return cls(root.resolve(), cache_expiration)

    async def save_upload(self, identity: str, generation: int, record: UploadRecord) -> None:
        """Keep an accepted upload; upload records never expire: that would pay again. A forced
        upload of a forgotten audio lifts its tombstone."""
        await self._save(upload_key(identity, generation), record.to_json(), None)
        (self.root / tombstone_key(identity)).unlink(missing_ok=True)

    async def tombstoned(self, identities: Iterable[str]) -> set[str]:
        """The identities ``forget`` erased (and no forced run transcribed again since)."""

        def find() -> set[str]:
            names = set(os.listdir(self.root)) if self.root.is_dir() else set()
            return {i for i in identities if tombstone_key(i) in names}

        return await asyncio.to_thread(find)

    def forget(self, identities: Iterable[str], *, dry_run: bool = False) -> Forgotten:
        """Erase every record of these identities (intents included) and leave tombstones."""
        wanted = set(identities)
        names = os.listdir(self.root) if self.root.is_dir() else []
        doomed = [n for n in names if _identity_of(n) in wanted]
        request_ids: set[str] = set()
        for name in doomed:
            data = self._read(name, {name})
            if data and isinstance(data.get("request_id"), str):
                request_ids.add(data["request_id"])
            if name.startswith("intent-"):
                request_ids.update(
                    self._intended(name.removeprefix("intent-").removesuffix(".json"))
                )
        if not dry_run:
            stamp = json.dumps({"forgotten_at": dt.datetime.now(dt.UTC).isoformat()}).encode()
            for identity in wanted:
                atomic_write(self.root / tombstone_key(identity), lambda h: h.write(stamp))
            for name in doomed:
                (self.root / name).unlink(missing_ok=True)
        return Forgotten(len(doomed), frozenset(request_ids))

    async def save_result(self, identity: str, generation: int, record: ResultRecord) -> None:
        """Keep a terminal result (forgotten after the cache expiration, if one is set)."""
        expires = dt.datetime.now(dt.UTC) + self.cache_expiration if self.cache_expiration else None
        await self._save(result_key(identity, generation), record.to_json(), expires)

    async def _save(self, key: str, record: dict[str, Any], expires: dt.datetime | None) -> None:
        payload = _encode(key, record, expires)
        await asyncio.to_thread(atomic_write, self.root / key, lambda h: h.write(payload))

    def _read(self, key: str, names: set[str]) -> dict[str, Any] | None:
        """The record under ``key``; keys the folder listing lacks are not even opened."""
        if key not in names:
            return None
        try:
            return _decode((self.root / key).read_bytes())
        except OSError:
            return None

    def _locate(
        self,
        identity: str,
        max_resubmits: int,
        force: bool,
        flow_run_id: str | None,
        names: set[str],
    ) -> Generation:
        """Decide what this run must do for an identity; the newest generation always wins.

        ``force`` starts a new generation, unless the newest one was paid for by this same flow
        run (a Prefect retry of a forced run resumes instead of paying again).
        """
        number, upload = -1, None
        while (data := self._read(upload_key(identity, number + 1), names)) is not None:
            number, upload = number + 1, UploadRecord.from_json(data)
        if upload is None:
            return Generation(0, "submit")
        if force and upload.flow_run_id != flow_run_id:
            return Generation(number + 1, "submit")
        data = self._read(result_key(identity, number), names)
        if data is None:
            return Generation(number, "poll", upload)
        result = ResultRecord.from_json(data)
        if result.completed:
            return Generation(number, "done", upload, result)
        if number >= max_resubmits and not force:
            return Generation(number, "exhausted", upload, result)
        return Generation(number + 1, "submit")

    async def locate_all(
        self, identities: Iterable[str], max_resubmits: int, force: bool, flow_run_id: str | None
    ) -> dict[str, Generation]:
        """Where every identity stands, from one folder listing and only the records that exist."""

        def locate_each() -> dict[str, Generation]:
            names = set(os.listdir(self.root)) if self.root.is_dir() else set()
            return {
                i: self._locate(i, max_resubmits, force, flow_run_id, names) for i in identities
            }

        return await asyncio.to_thread(locate_each)

    def _intent(self, key: str) -> Path:
        return self.root / f"intent-{key}.json"

    def _intended(self, key: str) -> list[str]:
        """Request ids recorded so far, oldest first; a missing or unreadable file records none."""
        try:
            data = json.loads(self._intent(key).read_bytes())
        except (OSError, ValueError):
            return []
        ids = data.get("request_ids") if isinstance(data, dict) else None
        return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []

    def _write_intent(self, key: str, ids: list[str]) -> None:
        """Replace the intent atomically; no ids left means no intent file."""
        if not ids:
            self._intent(key).unlink(missing_ok=True)
            return
        payload = json.dumps({"request_ids": ids}).encode()
        atomic_write(self._intent(key), lambda handle: handle.write(payload))

    def record_intent(self, key: str, request_id: str) -> None:
        """Append ``request_id`` to the intent, durably, before its audio is sent."""
        self._write_intent(key, [*self._intended(key), request_id])

    def forget_intent(self, key: str, request_id: str) -> None:
        """The PUT of ``request_id`` certainly did not land (the server refused it): stop asking."""
        self._write_intent(key, [i for i in self._intended(key) if i != request_id])

    async def find_landed(self, client: InvoxClient, key: str, grace_s: float) -> str | None:
        """The request id of an earlier attempt whose audio the provider did receive, if any."""
        ids = self._intended(key)
        for request_id in reversed(ids):
            if await confirm_landed(client, request_id, grace_s / len(ids)):
                return request_id
        return None


def _identity_of(name: str) -> str | None:
    """The identity a record file belongs to (upload, result or intent), None for others."""
    stem = name.removeprefix("intent-").removesuffix(".json")
    for prefix in ("upload-", "result-"):
        if stem.startswith(prefix) and "-g" in stem:
            return stem.removeprefix(prefix).rsplit("-g", 1)[0]
    return None


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
