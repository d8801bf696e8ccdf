"""Result storage whose writes are all-or-nothing and owner-only.

Ledger records decide whether audio is paid for again, and result records hold transcripts.
Prefect's ``LocalFileSystem`` writes files in place, so a crash mid-write leaves a truncated
record that reads as absent (and the audio would be uploaded twice). This subclass writes a
temporary file, fsyncs it and renames it over the target.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio.to_thread
from prefect.filesystems import LocalFileSystem

from invox_batch.dataset import atomic_write, make_dirs, sweep_stale_temps

__all__ = ["AtomicLocalFileSystem", "saved_storage"]


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


async def saved_storage(root: Path) -> AtomicLocalFileSystem:
    """The storage for ``root``, saved as a block (Prefect requires saved blocks on tasks)."""
    make_dirs(root)
    sweep_stale_temps(root, pattern=".*.tmp-*")  # records a killed run was writing
    name = "invox-ledger-" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    storage = AtomicLocalFileSystem(basepath=str(root.resolve()))
    await storage.asave(name=name, overwrite=True)
    return storage
