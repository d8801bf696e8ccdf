"""Where a run's dataset goes: a local folder, or any fsspec URI reached through local staging.

Part files are always written locally first (temp file, fsync, rename). For a remote ``out``
(``s3://``, ``gs://``, ``memory://``…) each finished file is then copied with one PUT, which
object stores make all-or-nothing, so readers never see a partial part there either.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import fsspec

from invox import ConfigurationError

__all__ = ["Output"]

_PART_KINDS = ("files", "segments")


@dataclass(frozen=True)
class Output:
    """A parsed ``out``: a local folder, or a filesystem plus a root path inside it."""

    uri: str
    local: Path | None
    fs: Any = None
    root: str = ""

    @classmethod
    def parse(cls, out: str) -> Output:
        """Accept a path, a ``file://`` URI or an fsspec URI whose backend is installed."""
        protocol = fsspec.core.split_protocol(out)[0]
        if protocol in (None, "file", "local"):
            path = unquote(urlsplit(out).path) if protocol else out
            return cls(uri=out, local=Path(path).expanduser())
        try:
            fs, root = fsspec.core.url_to_fs(out)
        except ImportError as exc:
            raise ConfigurationError(
                f"cannot write to {protocol}:// URIs: install its fsspec backend ({exc.name or exc})"
            ) from None
        except ValueError:
            raise ConfigurationError(f"unknown output protocol {protocol!r}") from None
        return cls(uri=out, local=None, fs=fs, root=str(root).rstrip("/"))

    @property
    def is_remote(self) -> bool:
        return self.local is None

    def default_state_dir(self) -> Path:
        """``<out>/.state`` locally; for a remote ``out`` a local folder named after it."""
        if self.local is not None:
            return self.local / ".state"
        base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
        return base / "invox-batch" / hashlib.sha256(self.uri.encode()).hexdigest()[:16]

    def state_dir(
        self, result_storage: str | None = None, local_ledger: bool = False, shared: bool = False
    ) -> Path:
        """Where the run's state lives; with a remote ``out`` the never-pay-twice records must be
        somewhere every machine sees (``shared``: a ledger URL), or kept local on purpose."""
        if result_storage:
            return Path(result_storage).expanduser()
        if self.is_remote and not (local_ledger or shared):
            raise ConfigurationError(
                f"--out {self.uri} is remote but the never-pay-twice records would stay on this "
                "machine, where other machines cannot see them: set INVOX_LEDGER_URL to a "
                "PostgreSQL database every run shares, pass --result-storage PATH on a disk "
                "every run shares, or --local-ledger to keep them here on purpose"
            )
        return self.default_state_dir()

    def check_writable(
        self, result_storage: str | None = None, local_ledger: bool = False, shared: bool = False
    ) -> None:
        """Refuse, before anything is paid for, an output or state location that cannot be written."""
        if self.local is not None:
            _check_local(self.local, "output folder")
        else:
            target = f"{self.root}/.invox-write-check-{uuid.uuid4().hex}"
            try:
                self.fs.makedirs(self.root, exist_ok=True)
                self.fs.pipe_file(target, b"")
                self.fs.rm(target)
            except Exception as exc:  # any backend's failure: say it in one line
                raise ConfigurationError(
                    f"cannot write to the output {self.uri}: {_one_line(exc)}"
                ) from None
        _check_local(self.state_dir(result_storage, local_ledger, shared), "state folder")

    def location(self, relative: Path) -> str:
        """What to tell the user: the final path or URI of a file written under ``relative``."""
        if self.local is not None:
            return str(self.local / relative)
        return f"{self.uri.rstrip('/')}/{relative.as_posix()}"

    def publish(self, staging: Path, relative_paths: Iterable[Path], flow_run_id: str) -> None:
        """Copy staged files to the remote root, then drop this run's parts on other dates."""
        if self.local is not None:
            return
        published = set()
        for relative in relative_paths:
            target = f"{self.root}/{relative.as_posix()}"
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(staging / relative), target)
            published.add(target.lstrip("/"))
        for kind in _PART_KINDS:
            pattern = f"{self.root}/{kind}/run_date=*/{flow_run_id}.parquet"
            for stale in self.fs.glob(pattern):
                if str(stale).lstrip("/") not in published:
                    self.fs.rm(stale)

    def read_text(self, relative: Path) -> str | None:
        """A small text file of the dataset (a run summary), or None when absent."""
        if self.local is not None:
            path = self.local / relative
            return path.read_text() if path.is_file() else None
        target = f"{self.root}/{relative.as_posix()}"
        if not self.fs.exists(target):
            return None
        return str(self.fs.cat_file(target).decode())


def _one_line(exc: BaseException) -> str:
    """An exception as one short line (backends put newlines and XML in their messages)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(f"{type(exc).__name__}: {text}".split())[:300]


def _check_local(path: Path, what: str) -> None:
    """A test write of a hidden temp file in ``path`` or, while it does not exist yet, in its
    nearest existing ancestor (nothing is created that the run would not create)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigurationError(f"cannot write to the {what} {path}: {existing} is not a folder")
    try:
        handle, name = tempfile.mkstemp(prefix=".invox-write-check-", dir=existing)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        raise ConfigurationError(f"cannot write to the {what} {path}: {_one_line(exc)}") from None
