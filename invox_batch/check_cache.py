"""Local checks remembered by file identity, as git's index does: a rerun re-reads no audio.

A nightly run over a growing folder would otherwise hash every recording it ever saw. An entry
is keyed by the file's path, device, inode, size, modification and change times, the row's
declared mime type and the accepted mime types; any change there means a full check again. Only
local files that passed every check are remembered, so a fixed file is always looked at anew.
Keys are digests: the cache file names no path.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .audio import AudioCheck, is_uri
from .files import atomic_write
from .manifest import ManifestRow

__all__ = ["CheckCache"]


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
