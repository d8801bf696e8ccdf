"""Local checks remembered by file identity, as git's index does: a rerun re-reads no audio.

A nightly run over a growing folder would otherwise hash every recording it ever saw. An entry
is keyed by the file's path, device, inode, size, modification and change times, the row's
declared mime type and the accepted mime types; any change there means a full check again. Only
local files that passed every check are remembered, so a fixed file is always looked at anew.
Keys are digests: the cache file names no path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from invox import InvoxSettings

from .audio import LARGE_FILE_BYTES, AudioCheck, inspect_audio, is_uri
from .files import atomic_write
from .ledger import audio_identity
from .manifest import Manifest, ManifestRow
from .records import Outcome
from .settling import Unit

__all__ = ["CheckCache", "Checked", "check_all", "on_threads", "units_of"]

T = TypeVar("T")
R = TypeVar("R")


class CheckCache:
    """Passed checks by file identity, loaded from and saved to one private JSON file."""

    def __init__(self, path: Path, entries: dict[str, dict[str, Any]]) -> None:
        self.path = path
        self._entries = entries
        self._changed = False

    @classmethod
    def load(cls, path: Path) -> CheckCache:
        """The cache at ``path``; a missing or unreadable file is an empty cache."""
        try:
            entries = json.loads(path.read_bytes())
        except (OSError, ValueError):
            entries = {}
        return cls(path, entries if isinstance(entries, dict) else {})

    def key(self, row: ManifestRow, mime_types: Mapping[str, str]) -> str | None:
        """The row's file identity now, or None when it cannot be cached (remote, bad, absent)."""
        if row.problem is not None or is_uri(row.location):
            return None
        try:
            info = os.stat(row.location)
        except OSError:
            return None
        parts = (
            row.location,
            f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}",
            row.mime_type or "",
            json.dumps(sorted(mime_types.items())),
        )
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def get(self, key: str | None, row: ManifestRow) -> AudioCheck | None:
        """The remembered check for ``key``, or None."""
        entry = self._entries.get(key) if key else None
        if not isinstance(entry, dict):
            return None
        try:
            return AudioCheck(
                Path(row.location),
                str(entry["sha256"]),
                int(entry["bytes"]),
                str(entry["mime_type"]),
                None if entry["duration_s"] is None else float(entry["duration_s"]),
                None,
                None,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, key: str | None, check: AudioCheck) -> None:
        """Remember a passed check under the identity taken before the file was read."""
        if key is None or not check.ok or check.sha256 is None:
            return
        self._entries[key] = {
            "sha256": check.sha256,
            "bytes": check.bytes,
            "mime_type": check.mime_type,
            "duration_s": check.duration_s,
        }
        self._changed = True

    def save(self) -> None:
        """Write the cache atomically, if anything was added."""
        if self._changed:
            payload = json.dumps(self._entries, separators=(",", ":")).encode()
            atomic_write(self.path, lambda handle: handle.write(payload))
            self._changed = False


@dataclass(frozen=True)
class Checked:
    """One manifest row after its local checks: the audio identity it pays for, if any."""

    row: ManifestRow
    check: AudioCheck
    identity: str | None

    def local_failure(self) -> Outcome:
        """The outcome of a row that never reached the API because a local check failed."""
        assert self.check.error_type is not None
        return Outcome.failed(self.check.error_type, self.check.error_message or "")


async def check_all(manifest: Manifest, settings: InvoxSettings, state_dir: Path) -> list[Checked]:
    """Every row's local checks (hashing included) off the event loop; files unchanged since an
    earlier run are taken from the check cache without being read."""
    cache = CheckCache.load(state_dir / "audio-checks.json")
    mime_types, spool, rows = settings.mime_types, state_dir / "spool", manifest.rows
    keys = await asyncio.to_thread(lambda: [cache.key(r, mime_types) for r in rows])
    checks = [cache.get(key, row) for row, key in zip(rows, keys, strict=True)]
    unknown = [i for i, check in enumerate(checks) if check is None]
    todo = [rows[i] for i in unknown]
    threads = await asyncio.to_thread(_threads_for, todo)
    fresh = await on_threads(todo, lambda r: inspect_audio(r, mime_types, spool), threads)
    for i, check in zip(unknown, fresh, strict=True):
        cache.put(keys[i], check)
        checks[i] = check
    await asyncio.to_thread(cache.save)
    return [_checked(row, check, settings) for row, check in zip(rows, checks, strict=True)]


def _threads_for(rows: Sequence[ManifestRow]) -> int:
    """Four threads when hashing dominates (large files: hashlib lets go of the GIL), else one:
    small files are Python-bound, and threads fighting for the GIL checked them 2x slower."""
    sizes = [_local_size(r) for r in rows]
    return 4 if sizes and sum(sizes) / len(sizes) >= LARGE_FILE_BYTES else 1


def _local_size(row: ManifestRow) -> int:
    if is_uri(row.location):
        return LARGE_FILE_BYTES  # fetched over the network first: waiting, not computing
    try:
        return os.stat(row.location).st_size
    except OSError:
        return 0


def _checked(row: ManifestRow, check: AudioCheck | None, settings: InvoxSettings) -> Checked:
    assert check is not None  # every row was checked or found in the cache
    ok = check.ok and check.sha256 and check.local_path and check.mime_type
    identity = (
        audio_identity(check.sha256, settings.environment, settings.api_version)
        if ok and check.sha256
        else None
    )
    return Checked(row, check, identity)


async def on_threads(items: Sequence[T], work: Callable[[T], R], threads: int = 4) -> list[R]:
    """``work`` over every item, in order, on a few threads pulling from one queue: a hand-off
    to the event loop per small file cost three times the checks themselves."""
    results: list[R | None] = [None] * len(items)
    queue = deque(range(len(items)))

    def drain() -> None:
        while True:
            try:
                i = queue.popleft()
            except IndexError:
                return
            results[i] = work(items[i])

    await asyncio.gather(*(asyncio.to_thread(drain) for _ in range(min(threads, len(items)))))
    return cast(list[R], results)


def units_of(checked: list[Checked]) -> dict[str, Unit]:
    """Unique identities among the rows that passed (the first row names the unit)."""
    units: dict[str, Unit] = {}
    for item in checked:
        if item.identity is not None and item.identity not in units:
            path, mime = str(item.check.local_path), str(item.check.mime_type)
            units[item.identity] = Unit(
                item.identity, item.row.file_id, path, mime, item.check.duration_s
            )
    return units
