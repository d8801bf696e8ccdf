"""The flow's side of the audio-hours budget: which units to submit, and the rows of the rest."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from invox_batch.budget import BudgetPlan, plan_budget, skip_message
from tasks.ledger import Generation

from .outcomes import Outcome
from .reporting import ProgressReporter

__all__ = ["budget_outcome", "over_budget", "plan_units"]


class _Unit(Protocol):
    """What the budget needs of a unit of paid audio."""

    @property
    def identity(self) -> str: ...

    @property
    def duration_s(self) -> float | None: ...


def plan_units(
    units: Iterable[_Unit],
    places: Mapping[str, Generation],
    cap_hours: float | None,
    flow_run_id: str | None = None,
) -> BudgetPlan:
    """Units this run would newly submit count, and so does what an earlier attempt submitted."""
    units = list(units)
    spent = sum(
        u.duration_s or 0.0 for u in units if _submitted_by(places[u.identity], flow_run_id)
    )
    return plan_budget(
        ((u.identity, u.duration_s, places[u.identity].action == "submit") for u in units),
        cap_hours,
        spent_s=spent,
    )


def _submitted_by(place: Generation, flow_run_id: str | None) -> bool:
    """True when this flow run (an earlier attempt of it) already paid for the unit's audio."""
    upload = place.upload
    return bool(flow_run_id and upload and upload.get("flow_run_id") == flow_run_id)


def budget_outcome(plan: BudgetPlan, identity: str) -> Outcome:
    """The failed outcome of a unit left unsubmitted by the cap."""
    return Outcome(
        status="failed",
        error_type="budget_exceeded",
        error_message=skip_message(plan, plan.skipped[identity]),
    )


async def over_budget(
    plan: BudgetPlan, identity: str, duration_s: float | None, progress: ProgressReporter
) -> Outcome:
    """A unit the plan left unsubmitted: its failed outcome, counted as finished."""
    outcome = budget_outcome(plan, identity)
    await progress.advance(outcome.status, duration_s)
    return outcome
