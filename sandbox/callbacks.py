"""Callback delivery (contract §7, #18-#22): signed POSTs with timeout, retries and backoff."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from sandbox.models import CallbackAttempt, Job, JobState, SandboxBackend
from sandbox.settings import SandboxSettings
from sandbox.signing import sign_callback

__all__ = ["USER_AGENT", "CallbackDispatcher", "callback_payload"]

USER_AGENT = "Invox-Medical-Webhook/1.0"


def callback_payload(job: Job, settings: SandboxSettings, created_at_ms: int) -> dict[str, Any]:
    """``{requestId, transcription, [errorMessage], signature, createdAt}`` in contract order."""
    body: dict[str, Any] = {"requestId": job.request_id, "transcription": []}
    if job.state is JobState.ERROR:
        body["errorMessage"] = job.error_message
    else:
        body["transcription"] = [{**s.to_wire(), "speaker": "0"} for s in job.segments]
    signature = sign_callback(
        {**body, "createdAt": created_at_ms},
        secret=settings.callback_secret,
        api_key=settings.callback_api_key,
    )
    return {**body, "signature": signature, "createdAt": created_at_ms}


class CallbackDispatcher:
    """Sends a finished job's callback; every attempt lands in the backend's log and stats."""

    def __init__(self, backend: SandboxBackend) -> None:
        self._backend = backend
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        """One pooled client, made on first use; proxies ignored since the sandbox is local."""
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        return self._client

    async def __call__(self, job: Job) -> None:
        """Deliver (or deliberately drop) the callback for a job that just finished."""
        settings = self._backend.settings
        url = job.callback_url
        if url is None or (job.state is JobState.ERROR and not settings.callback_on_error):
            return
        if self._backend.draw_callback_drop():
            self._record(CallbackAttempt(job.request_id, url, attempt=1, dropped=True), "dropped")
            return
        payload = callback_payload(job, settings, created_at_ms=int(time.time() * 1000))
        for attempt in range(1, settings.callback_retries + 2):
            if attempt > 1:
                await asyncio.sleep(settings.callback_backoff_s * 2 ** (attempt - 2))
            record = await self._attempt(url, payload, attempt, job.request_id)
            self._record(record, "sent")
            if record.status is not None and 200 <= record.status < 300:
                self._backend.stats.callbacks["delivered"] += 1
                return
        self._backend.stats.callbacks["failed"] += 1

    async def _attempt(
        self, url: str, payload: dict[str, Any], attempt: int, request_id: str
    ) -> CallbackAttempt:
        """One POST; transport failures and timeouts become the record's ``error``."""
        record = CallbackAttempt(request_id, url, attempt)
        try:
            response = await self._http().post(
                url,
                content=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
                timeout=self._backend.settings.callback_timeout_s,
            )
        except httpx.TimeoutException:
            record.error = "timeout"
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        else:
            record.status = response.status_code
        return record

    def _record(self, record: CallbackAttempt, counter: str) -> None:
        """Log the attempt and bump its counter."""
        self._backend.callback_log.append(record)
        self._backend.stats.callbacks[counter] += 1

    async def aclose(self) -> None:
        """Close the pooled client at shutdown."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
