"""Durable record of received callbacks: one owner-only JSON file per request id, first one wins.

A plain folder, so the flow can read it from another process or (on a shared file system)
another machine, with no server to run: a record is written to a hidden temp file, fsynced and
hard-linked into place, so readers never see a partial file and a second delivery for the same
request id can never replace the first. ``seen/`` holds one empty marker per accepted signature
(or body), created with ``O_EXCL``: the atomic answer to "was this exact callback seen before?".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..files import create_marker, write_once

__all__ = ["CallbackStore", "Recorded"]

Recorded = Literal["recorded", "duplicate"]


def _digest(text: str | bytes) -> str:
    """A fixed-length, file-name-safe stand-in for an opaque, untrusted value."""
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CallbackStore:
    """``<root>/<sha256(requestId)>.json`` per request; ``<root>/seen/`` replay markers."""

    root: Path

    def path_for(self, request_id: str) -> Path:
        """Where the record of one request id lives (hashed: request ids are untrusted text)."""
        return self.root / f"{_digest(request_id)}.json"

    def has(self, request_id: str) -> bool:
        """True once a callback for this request id has been recorded."""
        return self.path_for(request_id).exists()

    def read(self, request_id: str) -> dict[str, Any] | None:
        """The recorded callback for a request id, or None."""
        try:
            data = json.loads(self.path_for(request_id).read_bytes())
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else None

    def first_sighting(self, fingerprint: str | bytes) -> bool:
        """Claim a signature (or body) atomically; False when it was claimed before: a replay."""
        return create_marker(self.root / "seen" / _digest(fingerprint))

    def forget_sighting(self, fingerprint: str | bytes) -> None:
        """Release a claim whose record could not be written, so a retry is not a replay."""
        (self.root / "seen" / _digest(fingerprint)).unlink(missing_ok=True)

    def record(self, request_id: str, record: dict[str, Any]) -> Recorded:
        """Write the record unless one exists for this request id (the first delivery wins)."""
        data = json.dumps(record, ensure_ascii=False).encode()
        return (
            "recorded" if write_once(self.path_for(request_id), data, private=True) else "duplicate"
        )
