"""What earlier runs already paid for: Prefect result records keyed by audio identity.

Audio identity is the content sha256 plus the API base URL and version. Each paid attempt at an
identity is a *generation* ``g``: ``upload-<identity>-g<g>`` records the accepted upload (its
request id) and ``result-<identity>-g<g>`` the terminal result. The run saves each record, in
Prefect's JSON result-record format, before it does anything else with that file; every run
reads them first, so a rerun skips paid-for work without a task run or an API call.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prefect._internal.result_records import ResultRecord
from prefect.filesystems import WritableFileSystem
from prefect.results import ResultStore
from prefect.serializers import JSONSerializer
from prefect.types._datetime import now

from .storage import ledger_storage

__all__ = ["Generation", "Ledger", "audio_identity", "result_key", "upload_key"]


def audio_identity(sha256: str, base_url: str, api_version: str) -> str:
    """One key per (audio content, API environment, API version): what "the same job" means."""
    return hashlib.sha256(f"{base_url}|{api_version}|{sha256}".encode()).hexdigest()[:40]


def upload_key(identity: str, generation: int) -> str:
    """Storage key of the record saying this audio was accepted (and under which request id)."""
    return f"upload-{identity}-g{generation}"


def result_key(identity: str, generation: int) -> str:
    """Storage key of the terminal result of that upload."""
    return f"result-{identity}-g{generation}"


@dataclass(frozen=True)
class Generation:
    """Where an identity stands: which attempt to work on and what is already known about it."""

    number: int
    action: Literal["done", "exhausted", "poll", "submit"]
    upload: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


class Ledger:
    """Reads the records the tasks persisted, in the same storage and format."""

    def __init__(
        self, storage: WritableFileSystem, cache_expiration: dt.timedelta | None = None
    ) -> None:
        self.storage = storage
        self.cache_expiration = cache_expiration
        self._store = ResultStore(
            result_storage=storage, serializer=JSONSerializer(), cache_result_in_memory=False
        )

    @property
    def root(self) -> Path:
        """The local folder holding the records (and the upload intents beside them)."""
        return Path(str(getattr(self.storage, "basepath", ".")))

    @classmethod
    async def open(cls, root: Path, cache_expiration: dt.timedelta | None = None) -> Ledger:
        """A ledger over ``root``, whose records are written atomically and owner-only."""
        return cls(ledger_storage(root), cache_expiration)

    async def read(self, key: str) -> dict[str, Any] | None:
        """The record under ``key``, or None when absent, unreadable or expired (one file read)."""
        return await asyncio.to_thread(self._read_known, key, None)

    async def save(
        self, key: str, record: dict[str, Any], expires_in: dt.timedelta | None = None
    ) -> None:
        """Persist ``record`` under ``key`` in the format the tasks' own results use."""
        expiration: Any = now("UTC") + expires_in if expires_in else None  # Prefect's DateTime
        await self._store.awrite(obj=record, key=key, expiration=expiration)

    def _read_known(self, key: str, names: set[str] | None) -> dict[str, Any] | None:
        """The record under ``key`` (None when absent, unreadable or expired), skipping keys a
        folder listing says are absent."""
        if names is not None and key not in names:
            return None
        try:
            content = (self.root / key).read_bytes()
            record: ResultRecord[Any] = ResultRecord.deserialize(
                content, backup_serializer=JSONSerializer()
            )
        except (OSError, ValueError):
            return None
        expiration = record.metadata.expiration
        if expiration is not None and expiration <= dt.datetime.now(dt.UTC):
            return None
        return record.result if isinstance(record.result, dict) else None

    def _locate(
        self,
        identity: str,
        max_resubmits: int,
        force: bool,
        flow_run_id: str | None,
        names: set[str] | None = None,
    ) -> Generation:
        """Decide what this run must do for an identity; the newest generation always wins.

        ``force`` starts a new generation, unless the newest one was paid for by this same flow
        run (a Prefect retry of a forced run resumes instead of paying again).
        """
        number, upload = -1, None
        while (record := self._read_known(upload_key(identity, number + 1), names)) is not None:
            number, upload = number + 1, record
        if upload is None:
            return Generation(0, "submit")
        if force and upload.get("flow_run_id") != flow_run_id:
            return Generation(number + 1, "submit")
        result = self._read_known(result_key(identity, number), names)
        if result is None:
            return Generation(number, "poll", upload)
        if result.get("status") == "COMPLETED":
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
