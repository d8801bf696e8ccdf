"""Named crash points for the crash-matrix tests: a no-op unless ``INVOX_BATCH_FAILPOINT`` is set.

``INVOX_BATCH_FAILPOINT=<name>[:<nth>]`` makes the process kill itself with SIGKILL the ``nth``
time (default 1st) execution reaches ``failpoint(name)``: no cleanup, no ``finally``, exactly
like a power cut or the OOM killer. Production code pays one dictionary lookup per call.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

__all__ = ["ENV", "POINTS", "failpoint", "parse"]

ENV = "INVOX_BATCH_FAILPOINT"
# Where the flow calls failpoint(); tests pick from these.
POINTS = ("presign", "upload", "poll", "write_parquet")

_hits: Counter[str] = Counter()
_lock = threading.Lock()


def parse(value: str) -> tuple[str, int]:
    """``name[:nth]`` → (name, nth); a bad value is a test bug, so it fails loudly."""
    name, _, nth = value.partition(":")
    count = int(nth) if nth else 1
    if name not in POINTS or count < 1:
        raise ValueError(f"{ENV} must be one of {POINTS} with an optional ':<n>' (n >= 1)")
    return name, count


def failpoint(name: str) -> None:
    """Die here (SIGKILL to this process) when the environment asks for it."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, nth = parse(wanted)
    if target != name:
        return
    with _lock:
        _hits[name] += 1
        reached = _hits[name] == nth
    if reached:
        os.kill(os.getpid(), signal.SIGKILL)
