"""The flow's side of the audio-hours budget: which units to submit, and the rows of the rest."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from invox_batch.budget import BudgetPlan, plan_budget, skip_message
from tasks.ledger import Generation

from .outcomes import Outcome
from .reporting import ProgressReporter

__all__ = ["over_budget", "plan_units"]


class _Unit(Protocol):
    """What the budget needs of a unit of paid audio."""

    @property
    def identity(self) -> str: ...

    @property
    def duration_s(self) -> float | None: ...


def plan_units(
    units: Iterable[_Unit], places: Mapping[str, Generation], cap_hours: float | None
) -> BudgetPlan:
    """Only units this run would newly submit count; cache hits and resumed polls are free."""
    return plan_budget(
        ((u.identity, u.duration_s, places[u.identity].action == "submit") for u in units),
        cap_hours,
    )


async def over_budget(
    plan: BudgetPlan, identity: str, duration_s: float | None, progress: ProgressReporter
) -> Outcome:
    """The failed outcome of a unit left unsubmitted by the cap."""
    outcome = Outcome(
        status="failed",
        error_type="budget_exceeded",
        error_message=skip_message(plan, plan.skipped[identity]),
    )
    await progress.advance(outcome.status, duration_s)
    return outcome
