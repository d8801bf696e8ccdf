"""The run's parameters, grouped as the Prefect UI shows them: one model per concern.

The flow, the CLI and shard runs all build these same models, so a value is validated once, by
pydantic, wherever it comes from; a shard derives its parameters with ``model_copy``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from invox import ConfigurationError, check_callback_url

from .callbacks import CompletionMode, check_completion
from .ledger import ENV as LEDGER_ENV
from .ledger import has_password, parse_url
from .shards import parse_shard

__all__ = [
    "Callbacks",
    "Captions",
    "Polling",
    "Retrying",
    "Scale",
    "Spend",
    "StateStorage",
]

Positive = Annotated[float, Field(gt=0)]


class _Group(BaseModel):
    """A parameter group: immutable, and unknown keys are refused (a typo must not pass)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Spend(_Group):
    """What the run may pay for."""

    max_audio_hours: Positive | None = Field(
        None, description="Submit no more new audio than this; the rest fail as budget_exceeded."
    )
    max_resubmits: int = Field(
        2, ge=0, le=10, description="Resubmissions per audio content after provider errors."
    )
    force: bool = Field(False, description="Resubmit every file, even ones already completed.")


class Polling(_Group):
    """How results are waited for."""

    poll_timeout_s: Positive = Field(
        900.0, description="Stop polling a job after this many seconds; a rerun resumes it."
    )
    first_poll_ratio: Positive = Field(
        0.5, description="First poll after audio duration times this (the provider's speed)."
    )
    max_poll_interval_s: Positive = Field(
        30.0, description="Longest wait between two polls of one job."
    )


class Retrying(_Group):
    """How transient errors (429, 5xx, network) are retried."""

    retries: int = Field(6, ge=0, le=20, description="Retries of one call after transient errors.")
    retry_base_delay_s: float = Field(
        1.0, ge=0, description="First retry delay in seconds; doubles each time, capped at 30."
    )


class Callbacks(_Group):
    """Provider callbacks: where they go, and whether they decide when to fetch a result."""

    completion: CompletionMode = Field(
        "poll", description='"poll", or "callback": fetch each result once its callback arrives.'
    )
    callback_url: str | None = Field(
        None, description="HTTPS URL the provider POSTs results to (polling still decides)."
    )
    callback_grace_s: float = Field(
        60.0, ge=0, description="Callback mode: poll a job with no callback this long after."
    )
    callback_store: str | None = Field(
        None, description="Folder the callback receiver records to; empty: <state>/callbacks."
    )
    callback_listen: str | None = Field(
        None, description="host:port for a receiver run inside this flow (callback mode)."
    )

    @model_validator(mode="after")
    def _usable(self) -> Callbacks:
        """Callback mode needs somewhere for callbacks to arrive; every address must parse."""
        if self.callback_url:
            check_callback_url(self.callback_url)
        check_completion(self.completion, self.callback_url, self.callback_listen)
        return self


class Captions(_Group):
    """Caption files written beside the dataset."""

    vtt: bool = Field(False, description="Write <out>/captions/<file_id>.vtt for completed files.")
    srt: bool = Field(False, description="Write <out>/captions/<file_id>.srt for completed files.")


class Scale(_Group):
    """How much runs at once, and where."""

    max_concurrency: int = Field(8, ge=1, le=256, description="Files in flight at once.")
    files_per_task: int = Field(
        0, ge=0, le=1000, description="Files per Prefect task run; 0: one each up to 100, else 50."
    )
    task_runner: Literal["default", "dask"] = Field(
        "default", description='"dask" settles each file as a task on a Dask cluster.'
    )
    dask_address: str | None = Field(
        None, description="Dask scheduler address; empty: a LocalCluster in the flow's process."
    )
    shard_size: int = Field(
        1000, ge=1, description="From a deployment, larger manifests run as child runs this size."
    )
    shard: str = Field(
        "", pattern=r"^(\d+/\d+)?$", description='The slice a child run handles ("3/8").'
    )
    shard_deployment: str = Field(
        "transcribe-batch/shard", description="The deployment the parent starts shard runs on."
    )

    @field_validator("shard")
    @classmethod
    def _a_slice(cls, shard: str) -> str:
        """A bad slice is refused before any audio is read."""
        parse_shard(shard)
        return shard


class StateStorage(_Group):
    """Where the never-pay-twice records live, and how long results are remembered."""

    # A refused value is never echoed: a ledger URL typed with its password must not reach logs.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    result_storage: str | None = Field(
        None, description="Local folder for the never-pay-twice records; empty: <out>/.state."
    )
    local_ledger: bool = Field(
        False, description="With a remote out: keep the records on this machine on purpose."
    )
    ledger_url: str | None = Field(
        None,
        description=(
            "A PostgreSQL every run shares (postgresql://user@host:port/db), without a password: "
            f"a URL with one goes in {LEDGER_ENV} or the Secret block invox-ledger-url."
        ),
    )
    cache_expiration_days: Positive | None = Field(
        None, description="Forget completed results after this many days."
    )

    @field_validator("ledger_url")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        """Parameters are shown in the UI: a password there would be on every screen."""
        if not url or not url.strip():
            return None
        if has_password(url):
            raise ValueError(
                "must not carry a password (the UI shows parameters): set "
                f"{LEDGER_ENV} in the worker's environment or save the URL as the Prefect "
                "Secret block invox-ledger-url"
            )
        try:
            parse_url(url, "ledger_url")
        except ConfigurationError as exc:
            raise ValueError(exc.message.removeprefix("ledger_url: ")) from None
        return url.strip()

    @field_validator("result_storage")
    @classmethod
    def _a_local_folder(cls, folder: str | None) -> str | None:
        """The records are files on a local or mounted disk: a URI would become a folder
        literally named ``s3:`` and the next machine would pay again."""
        if not folder:
            return None
        scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", folder)
        if scheme is None:
            return folder
        if scheme.group(1).lower() == "file":
            return unquote(urlsplit(folder).path)
        raise ValueError(
            f"must be a local folder, not a {scheme.group(1)}:// URI (the never-pay-twice "
            "records live on a local or mounted disk)"
        )
