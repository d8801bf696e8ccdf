"""Which flow run and deployment this is, for keys and labels: read once per flow run.

``prefect.runtime.deployment.name`` reads the flow run from the API on every access (about
0.1 s); artifacts and events ask several times per run, so the answer is kept here.
"""

from __future__ import annotations

from prefect.context import FlowRunContext
from prefect.runtime import deployment

__all__ = ["deployment_name", "flow_run_id"]

_NAMES: dict[str, str | None] = {}


def flow_run_id() -> str | None:
    """This flow run's id, or None outside one."""
    context = FlowRunContext.get()
    run = context.flow_run if context else None
    return str(run.id) if run else None


def deployment_name() -> str | None:
    """The name of the deployment this flow run belongs to, or None (a run outside one)."""
    context = FlowRunContext.get()
    run = context.flow_run if context else None
    if run is None or run.deployment_id is None:
        return None
    key = str(run.id)
    if key not in _NAMES:
        _NAMES[key] = deployment.name  # one API read for this run
    return _NAMES[key]
