"""One cap across runs: a Prefect global concurrency limit named ``invox-api``, when it exists.

Every file in flight (presign to result) holds one of its slots, so all runs and shards together
keep at most that many files at the API. Without the limit nothing is asked per file. The AIMD
limiter on API requests stays per process.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import concurrency
from prefect.exceptions import ObjectNotFound

from invox_batch.settling import AcrossRuns

__all__ = ["API_LIMIT", "api_limit"]

API_LIMIT = "invox-api"


def _file_slot() -> AbstractAsyncContextManager[object]:
    """One slot of ``invox-api``, held while one file is in flight (renewed while it lasts)."""
    return concurrency(API_LIMIT, occupy=1, strict=False)


async def api_limit() -> AcrossRuns | None:
    """A slot per file when an active ``invox-api`` limit exists on the Prefect server, else None."""
    try:
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(API_LIMIT)
    except ObjectNotFound:
        return None
    if not limit.active:
        return None
    get_run_logger().info(
        "global concurrency limit %s: at most %d files in flight across all runs",
        API_LIMIT,
        limit.limit,
    )
    return _file_slot
