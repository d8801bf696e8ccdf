"""One real ``prefect server start`` for this folder, with the deployments and two workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from invox_batch.cli.stack import Stack, free_port
from sandbox.server import SandboxServer

from .client import ServerClient

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def prefect_stack(
    sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Server on a free loopback port (own PREFECT_HOME), pool, deployments and three workers.

    worker-a and worker-b stand in for two machines running shards, two at a time each: four
    shards created at once cannot all land on one of them.
    """
    home = tmp_path_factory.mktemp("prefect-server-home")
    stack = Stack(home=home, port=free_port(), logs=home / "logs")
    invox_env = {
        "INVOX_BASE_URL": sandbox_server.base_url,
        "INVOX_APP_ID": sandbox_server.settings.app_id,
        "INVOX_API_KEY": sandbox_server.settings.api_key,
    }
    try:
        TIMINGS["server_start_s"] = stack.start_server()
        started = time.monotonic()
        stack.deploy(invox_env)
        # Nightly runs (parents included) go to worker-main; shards to worker-a and worker-b only,
        # so a parent or an earlier test's run never holds a slot the shards need. worker-main has
        # no --limit: runs are retried right after they fail, which crashes a 3.8.8 worker with
        # one when it has not yet reaped the run's process (prefect#16806).
        stack.start_worker("worker-main", invox_env, queues=("default",))
        # worker-b has no INVOX_API_KEY: it reads the invox-api-key Secret block instead, so every
        # shard it executes proves that path.
        stack.save_secret(sandbox_server.settings.api_key)
        stack.start_worker("worker-a", invox_env, limit=2, queues=("shards",))
        without_key = {k: v for k, v in invox_env.items() if k != "INVOX_API_KEY"}
        stack.start_worker("worker-b", without_key, limit=2, queues=("shards",))
        TIMINGS["deploy_and_workers_s"] = time.monotonic() - started
        yield stack
    finally:
        stack.stop()
        _report(stack.logs)


def _report(logs: Path) -> None:
    """Timings for the closing note (shown with -s or in the captured output of a failure)."""
    print(f"\nreal-server timings: {TIMINGS}; logs were in {logs}")


@pytest.fixture(scope="session")
def server(prefect_stack: Stack) -> ServerClient:
    """A synchronous driver of the stack's API (PrefectClient under the hood)."""
    return ServerClient(prefect_stack.api_url)
