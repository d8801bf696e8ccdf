"""Who may read what we write: owner-only by default, because outputs hold transcripts (PHI).

``INVOX_BATCH_PRIVATE_FILES=false`` (or ``invox-batch run --shared-files``) lets new files and
folders follow the umask instead, for teams that share an output folder through group access.
"""

from __future__ import annotations

import os

__all__ = ["PRIVATE_FILES_ENV", "private_files"]

PRIVATE_FILES_ENV = "INVOX_BATCH_PRIVATE_FILES"
_FALSE = frozenset({"0", "false", "no", "off"})
_TRUE = frozenset({"", "1", "true", "yes", "on"})


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
