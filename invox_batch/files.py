"""File-system safety: atomic writes, fsync, owner-only permissions, stale temp sweeping.

Outputs and state hold transcripts (PHI) and the never-pay-twice memory, so every write goes
through a hidden temp file, is fsynced and renamed (or hard-linked, when the first writer must
win): readers see the old file or the new one, never half of one. Files are owner-only unless
``INVOX_BATCH_PRIVATE_FILES=false`` (``invox-batch run --shared-files``) lets them follow the umask.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILES_ENV",
    "PRIVATE_FILE_MODE",
    "atomic_write",
    "create_marker",
    "fsync_dir",
    "make_dirs",
    "private_files",
    "sweep_stale_temps",
    "write_once",
]

PRIVATE_FILES_ENV = "INVOX_BATCH_PRIVATE_FILES"
PRIVATE_FILE_MODE, PRIVATE_DIR_MODE = 0o600, 0o700
# A temp file this old belongs to a writer that died (no write takes an hour).
STALE_TEMP_S = 3600.0
_FALSE = frozenset({"0", "false", "no", "off"})
_TRUE = frozenset({"", "1", "true", "yes", "on"})
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def private_files(explicit: bool | None = None) -> bool:
    """The caller's choice when given, else the environment's (owner-only unless switched off)."""
    if explicit is not None:
        return explicit
    raw = os.environ.get(PRIVATE_FILES_ENV, "").strip().lower()
    if raw in _FALSE:
        return False
    if raw in _TRUE:
        return True
    raise ValueError(f"{PRIVATE_FILES_ENV} must be true or false, not {raw[:20]!r}")


def make_dirs(path: Path, *, private: bool | None = None) -> None:
    """Create missing directories (owner-only when private); existing ones keep their mode."""
    private = private_files(private)
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR_MODE if private else 0o777)
        except FileExistsError:
            continue
        if private:
            os.chmod(directory, PRIVATE_DIR_MODE)


def fsync_dir(path: Path) -> None:
    """Make a rename durable: the directory entry is data too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, write: Callable[[BinaryIO], object], private: bool) -> Path:
    """A hidden, fsynced temp file beside ``path`` holding what ``write`` wrote."""
    make_dirs(path.parent, private=private)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
    fd = os.open(tmp, _CREATE_NEW, PRIVATE_FILE_MODE if private else 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            if private:
                os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(
    path: Path, write: Callable[[BinaryIO], object], *, private: bool | None = None
) -> None:
    """Write through a hidden temp file, fsync, rename: readers see the old file or the new one."""
    tmp = _write_temp(path, write, private_files(private))
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_once(path: Path, data: bytes, *, private: bool | None = None) -> bool:
    """Write ``path`` atomically unless it exists; False when another writer got there first."""
    if path.exists():
        return False
    tmp = _write_temp(path, lambda handle: handle.write(data), private_files(private))
    try:
        os.link(tmp, path)  # unlike rename, fails when the file is already there
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def create_marker(path: Path) -> bool:
    """Create an empty owner-only file atomically; False when it already existed."""
    make_dirs(path.parent, private=True)
    try:
        os.close(os.open(path, _CREATE_NEW, PRIVATE_FILE_MODE))
    except FileExistsError:
        return False
    return True


def sweep_stale_temps(root: Path, pattern: str, older_than_s: float = STALE_TEMP_S) -> int:
    """Delete hidden temp files a killed writer left behind (readers never see them anyway)."""
    cutoff = time.time() - older_than_s
    removed = 0
    for temp in root.glob(pattern):
        with contextlib.suppress(OSError):
            if temp.stat().st_mtime < cutoff:
                temp.unlink()
                removed += 1
    return removed
