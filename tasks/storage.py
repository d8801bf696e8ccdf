"""Result storage whose writes are all-or-nothing and owner-only.

Ledger records decide whether audio is paid for again, and result records hold transcripts.
Prefect's ``LocalFileSystem`` writes files in place, so a crash mid-write leaves a truncated
record that reads as absent (and the audio would be uploaded twice). This subclass writes a
temporary file, fsyncs it and renames it over the target.
"""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
from prefect.filesystems import LocalFileSystem

from invox_batch.files import atomic_write, make_dirs, sweep_stale_temps

__all__ = ["AtomicLocalFileSystem", "ledger_storage"]


class AtomicLocalFileSystem(LocalFileSystem):
    """A local folder for result records: atomic renames, 0600 files, 0700 folders."""

    _block_type_name = "Invox Atomic Local File System"

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await anyio.to_thread.run_sync(self._write_atomically, path, content)

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:  # type: ignore[override]
        return self._write_atomically(path, content)

    def _write_atomically(self, path: str, content: bytes) -> str:
        """Temp file in the same folder, fsync, then rename: readers see old or new, never half."""
        target = Path(self._resolve_path(path))
        atomic_write(target, lambda handle: handle.write(content))
        return str(target)


def ledger_storage(root: Path) -> AtomicLocalFileSystem:
    """The storage for ``root``; never saved as a block: no task persists into it, so a run
    spends no API call on it."""
    make_dirs(root)
    sweep_stale_temps(root, ".*.tmp-*")  # records a killed run was writing
    return AtomicLocalFileSystem(basepath=str(root.resolve()))
