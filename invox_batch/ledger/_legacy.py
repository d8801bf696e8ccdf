"""The JSON records of earlier versions (``<state>/results``), read so upgrades never pay again.

Earlier versions kept one file per record in Prefect's result-record layout:
``upload-<identity>-g<n>`` (the accepted upload), ``result-<identity>-g<n>`` (its terminal
result, maybe with an expiration) and ``intent-upload-<identity>-g<n>.json`` (request ids
presigned before their PUT).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LegacyRecords", "read_legacy"]

_RECORD = re.compile(r"^(upload|result)-([0-9a-zA-Z_.-]+)-g(\d+)$")
_INTENT = re.compile(r"^intent-(upload-.+-g\d+)\.json$")


@dataclass
class LegacyRecords:
    """What one folder of JSON records holds."""

    uploads: dict[tuple[str, int], dict[str, Any]]
    results: dict[tuple[str, int], tuple[dict[str, Any], float | None]]  # record, expires
    intents: dict[str, list[str]]
    files: list[Path]


def _decode(content: bytes) -> tuple[dict[str, Any], float | None] | None:
    """The record in a file and when it expires, or None when unreadable or already expired."""
    try:
        data = json.loads(content)
        result = data["result"]
        record = json.loads(result) if isinstance(result, str) else result
        expiration = (data.get("metadata") or {}).get("expiration")
        expires = dt.datetime.fromisoformat(expiration) if expiration else None
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(record, dict) or "request_id" not in record:
        return None
    if expires is None:
        return record, None
    expires = expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC)
    if expires <= dt.datetime.now(dt.UTC):
        return None
    return record, expires.timestamp()


def _names(folder: Path) -> Iterator[Path]:
    try:
        yield from (p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        return


def read_legacy(folder: Path) -> LegacyRecords:
    """Every readable record of the folder; unreadable or expired ones are skipped."""
    found = LegacyRecords({}, {}, {}, [])
    for path in _names(folder):
        record, intent = _RECORD.match(path.name), _INTENT.match(path.name)
        if not (record or intent):
            continue
        found.files.append(path)
        try:
            content = path.read_bytes()
        except OSError:
            continue
        if intent:
            try:
                ids = json.loads(content).get("request_ids")
            except (ValueError, AttributeError):
                continue
            if isinstance(ids, list):
                found.intents[intent.group(1)] = [i for i in ids if isinstance(i, str)]
            continue
        assert record is not None
        decoded = _decode(content)
        if decoded is None:
            continue
        key = (record.group(2), int(record.group(3)))
        if record.group(1) == "upload":
            found.uploads[key] = decoded[0]
        else:
            found.results[key] = decoded
    return found
