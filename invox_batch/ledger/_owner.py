"""Who holds a claim, and whether that holder is certainly dead (so its lease need not run out).

A claim names its flow run, host and pid, plus where the process lives (boot id and pid
namespace, and the process's start time): a process on this same kernel and pid namespace can be
checked directly, so a rerun after a crash takes the claim over at once. Elsewhere only the lease
tells.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Owner", "alive_here"]


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


@functools.cache
def _node() -> str:
    """This kernel boot and pid namespace: where a pid means the same process (read once)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{_read('/proc/sys/kernel/random/boot_id') or socket.gethostname()}/{namespace}"


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if there is no such process."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def process_token(pid: int) -> str:
    return f"{_node()}/{pid}/{_started(pid) or '?'}"


def alive_here(token: str | None) -> bool | None:
    """True/False for a process of this node; None when it lives elsewhere (ask the lease)."""
    parts = (token or "").rsplit("/", 2)
    if len(parts) != 3:
        return None
    node, pid_text, started = parts
    if node != _node() or not pid_text.isdigit() or started == "?":
        return None
    return _started(int(pid_text)) == started


@dataclass(frozen=True)
class Owner:
    """One run's (or one Dask task's) identity as a claim holder."""

    flow_run_id: str | None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)

    @functools.cached_property
    def process(self) -> str:
        """Read once: a claim per file must not cost three reads of ``/proc``."""
        return process_token(self.pid)

    def describe(self) -> str:
        """How the holder is named in log lines (no secrets: ids, host, pid)."""
        return f"flow run {self.flow_run_id or '?'} on {self.host} (pid {self.pid})"
