"""Where an audio identity stands, decided from its recorded attempts (pure functions).

Audio identity is the content sha256 plus the API base URL and version. Each paid attempt at an
identity is a *generation*: its accepted upload (the request id) and, later, its terminal result.
The newest uploaded generation always wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ..records import ResultRecord, UploadRecord

__all__ = ["Attempt", "Generation", "audio_identity", "place", "result_key", "upload_key"]


def audio_identity(sha256: str, base_url: str, api_version: str) -> str:
    """One key per (audio content, API environment, API version): what "the same job" means."""
    return hashlib.sha256(f"{base_url}|{api_version}|{sha256}".encode()).hexdigest()[:40]


def upload_key(identity: str, generation: int) -> str:
    """Name of one attempt's upload: its write-ahead intents are kept under it."""
    return f"upload-{identity}-g{generation}"


def result_key(identity: str, generation: int) -> str:
    """Name of one attempt's terminal result in the JSON records of earlier versions."""
    return f"result-{identity}-g{generation}"


@dataclass(frozen=True)
class Generation:
    """Where an identity stands: which attempt to work on and what is already known about it."""

    number: int
    action: Literal["done", "exhausted", "poll", "submit"]
    upload: UploadRecord | None = None
    result: ResultRecord | None = None


@dataclass(frozen=True)
class Attempt:
    """One recorded, accepted upload of an identity and its result, if one is still remembered."""

    generation: int
    upload: UploadRecord
    result: ResultRecord | None = None


def place(
    attempts: Iterable[Attempt], max_resubmits: int, force: bool, flow_run_id: str | None
) -> Generation:
    """Decide what this run must do for an identity; the newest uploaded generation wins.

    ``force`` starts a new generation, unless the newest one was paid for by this same flow run
    (a Prefect retry of a forced run resumes instead of paying again).
    """
    newest = max(attempts, key=lambda a: a.generation, default=None)
    if newest is None:
        return Generation(0, "submit")
    number, upload, result = newest.generation, newest.upload, newest.result
    if force and upload.flow_run_id != flow_run_id:
        return Generation(number + 1, "submit")
    if result is None:
        return Generation(number, "poll", upload)
    if result.completed:
        return Generation(number, "done", upload, result)
    if number >= max_resubmits and not force:
        return Generation(number, "exhausted", upload, result)
    return Generation(number + 1, "submit")
