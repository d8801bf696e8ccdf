"""`make serve` creates the ``invox-api`` global concurrency limit, and leaves an operator's be."""

from __future__ import annotations

import json

from invox_batch.cli.stack import API_LIMIT_SLOTS, Stack
from tasks.limits import API_LIMIT


def _limit(stack: Stack) -> dict[str, object]:
    shown = stack.prefect("global-concurrency-limit", "inspect", API_LIMIT, "--output", "json")
    return dict(json.loads(shown))


def test_serve_creates_the_api_limit_once(prefect_stack: Stack) -> None:
    try:
        prefect_stack.api_limit()
        assert _limit(prefect_stack)["limit"] == API_LIMIT_SLOTS
        prefect_stack.prefect("global-concurrency-limit", "update", API_LIMIT, "--limit", "3")
        prefect_stack.api_limit()  # served again: the operator's setting stays
        created = _limit(prefect_stack)
        assert created["limit"] == 3 and created["active"] is True
    finally:
        prefect_stack.prefect("global-concurrency-limit", "delete", API_LIMIT)
