"""A small synchronous driver of a real Prefect server's API, for tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.states import AwaitingRetry, Scheduled

T = TypeVar("T")


class ServerClient:
    """Creates, retries and watches flow runs of the stack's deployments."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url

    def _call(self, work: Callable[[PrefectClient], Awaitable[T]]) -> T:
        async def run() -> T:
            async with PrefectClient(api=self.api_url) as client:
                return await work(client)

        return asyncio.run(run())

    def run(self, deployment: str, **parameters: Any) -> UUID:
        """A custom run (parameters merged over the deployment's), scheduled for now."""

        async def create(client: PrefectClient) -> UUID:
            found = await client.read_deployment_by_name(deployment)
            run = await client.create_flow_run_from_deployment(
                found.id, parameters=parameters, state=Scheduled()
            )
            return run.id

        return self._call(create)

    def deployment_id(self, deployment: str) -> UUID:
        """The id of a deployment named ``flow/name``."""

        async def read(client: PrefectClient) -> UUID:
            return (await client.read_deployment_by_name(deployment)).id

        return self._call(read)

    def retry_like_ui(self, flow_run_id: UUID) -> None:
        """What the UI's Retry button does: the same flow run, back to AwaitingRetry."""
        self._call(lambda c: c.set_flow_run_state(flow_run_id, AwaitingRetry(), force=True))

    def read(self, flow_run_id: UUID) -> FlowRun:
        return self._call(lambda c: c.read_flow_run(flow_run_id))

    def wait(self, flow_run_id: UUID, timeout_s: float = 120.0) -> FlowRun:
        """The flow run once final, polled with a deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.read(flow_run_id)
            if run.state and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {flow_run_id} still {run.state} after {timeout_s}s")
            time.sleep(0.5)

    def runs_of(self, deployment_name: str) -> list[FlowRun]:
        """Every flow run of one deployment (by its short name, e.g. ``shard``)."""
        only = DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name]))
        return self._call(lambda c: c.read_flow_runs(deployment_filter=only, limit=200))

    def artifacts_of(self, flow_run_id: UUID) -> list[Any]:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        only = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        return self._call(lambda c: c.read_artifacts(artifact_filter=only))
