"""The audio-hours budget of a run: what may be submitted for payment, and cost estimates.

Only audio this flow run submits (and pays for) counts against ``max_audio_hours``, including
what an earlier attempt of the same flow run (a Prefect Retry) already submitted and a lost job
submitted again. Cache hits and resumed polls of jobs submitted by other runs are free and always
settled. Audio is admitted in manifest order; once the next file would exceed the cap, nothing
more is submitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ErrorType
from .ledger import Generation
from .records import Outcome

__all__ = [
    "BudgetPlan",
    "budget_line",
    "cost_line",
    "estimate_cost",
    "plan_budget",
    "plan_units",
    "skip_message",
]

SECONDS_PER_HOUR = 3600.0


@dataclass
class BudgetPlan:
    """Which units stay unsubmitted, and the hours on either side of the cap (charged as it goes)."""

    cap_hours: float | None
    submitted_s: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)  # identity → reason
    skipped_s: float = 0.0
    unknown_duration: int = 0

    def summary(self) -> dict[str, Any]:
        """The budget part of the run summary (None when the run had no cap)."""
        if self.cap_hours is None:
            return {}
        return {
            "max_audio_hours": self.cap_hours,
            "submitted_audio_hours": round(self.submitted_s / SECONDS_PER_HOUR, 4),
            "cap_hours_left": round(self.cap_hours - self.submitted_s / SECONDS_PER_HOUR, 4),
            "not_submitted_files": len(self.skipped),
            "not_submitted_audio_hours": round(self.skipped_s / SECONDS_PER_HOUR, 4),
        }

    @classmethod
    def spent(cls, cap_hours: float | None) -> BudgetPlan:
        """A plan with nothing left to charge: a Dask task cannot charge the run's shared plan,
        so under a cap it leaves a lost job's resubmission to a rerun."""
        return cls(cap_hours, (cap_hours or 0.0) * SECONDS_PER_HOUR)

    def outcome(self, identity: str) -> Outcome:
        """The failed outcome of a unit left unsubmitted by the cap."""
        return Outcome.failed(ErrorType.BUDGET_EXCEEDED, skip_message(self, self.skipped[identity]))

    def admit(self, identity: str, duration_s: float | None) -> bool:
        """Charge one more submission (a lost job sent again) if it still fits under the cap."""
        if self.cap_hours is None:
            return True
        if duration_s is None:
            self.skipped[identity] = "unknown"
            self.unknown_duration += 1
            return False
        if self.submitted_s + duration_s > self.cap_hours * SECONDS_PER_HOUR:
            self.skipped[identity] = "cap"
            self.skipped_s += duration_s
            return False
        self.submitted_s += duration_s
        return True


def plan_budget(
    units: Iterable[tuple[str, float | None, bool]],
    cap_hours: float | None,
    spent_s: float = 0.0,
) -> BudgetPlan:
    """Admit ``(identity, duration_s, would_pay)`` units in order until the cap would be exceeded.

    ``spent_s`` is audio this flow run already submitted in an earlier attempt (a Retry).
    """
    if cap_hours is None:
        return BudgetPlan(None)
    cap_s = cap_hours * SECONDS_PER_HOUR
    used, skipped_s = spent_s, 0.0
    skipped: dict[str, str] = {}
    unknown = 0
    full = False
    for identity, duration_s, would_pay in units:
        if not would_pay:
            continue
        if duration_s is None:
            skipped[identity] = "unknown"
            unknown += 1
        elif full or used + duration_s > cap_s:
            full = True
            skipped[identity] = "cap"
            skipped_s += duration_s
        else:
            used += duration_s
    return BudgetPlan(cap_hours, used, skipped, skipped_s, unknown)


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
    """Units this run would newly submit count, and so does what an earlier attempt of this same
    flow run (a Retry) already submitted."""
    units = list(units)

    def paid_by_this_run(place: Generation) -> bool:
        return bool(flow_run_id and place.upload and place.upload.flow_run_id == flow_run_id)

    spent = sum(u.duration_s or 0.0 for u in units if paid_by_this_run(places[u.identity]))
    return plan_budget(
        ((u.identity, u.duration_s, places[u.identity].action == "submit") for u in units),
        cap_hours,
        spent_s=spent,
    )


def skip_message(plan: BudgetPlan, reason: str) -> str:
    """Why a file was not submitted, and what to do about it."""
    if reason == "unknown":
        return (
            "not submitted: its audio duration is unknown, so it cannot be counted against "
            f"max_audio_hours={plan.cap_hours:g}; rerun without the cap to transcribe it"
        )
    return (
        f"not submitted: max_audio_hours={plan.cap_hours:g} would be exceeded "
        f"({plan.submitted_s / SECONDS_PER_HOUR:.4f} h already submitted in this run); "
        "rerun with a higher cap (files already transcribed are not paid for again)"
    )


def estimate_cost(duration_s: float, rate_per_hour: float) -> float:
    """Cost of this much audio at a price per audio hour."""
    return duration_s / SECONDS_PER_HOUR * rate_per_hour


def cost_line(
    duration_s: float, rate_per_hour: float, unknown: int = 0, duplicates: int = 0
) -> str:
    """One line for ``validate --rate-per-hour``, saying when durations are missing and that
    rows repeating an audio were counted once (files already transcribed are not known here)."""
    hours = duration_s / SECONDS_PER_HOUR
    line = (
        f"estimated cost: {hours:.4f} h x {rate_per_hour:g} per hour = "
        f"{estimate_cost(duration_s, rate_per_hour):.2f}"
    )
    if unknown:
        line += f" (plus {unknown} file{'s' if unknown != 1 else ''} of unknown duration)"
    if duplicates:
        line += f"; each unique audio counted once ({duplicates} duplicate row"
        line += f"{'s' if duplicates != 1 else ''} left out)"
    return line


def budget_line(budget: dict[str, Any]) -> str:
    """The run summary's budget in one line: submitted, left in the cap, left unsubmitted."""
    files = budget["not_submitted_files"]
    return (
        f"budget: {budget['submitted_audio_hours']} of {budget['max_audio_hours']} audio hours "
        f"submitted ({budget['cap_hours_left']} h of the cap left); "
        f"{files} file{'s' if files != 1 else ''} ({budget['not_submitted_audio_hours']} h) "
        "not submitted: budget_exceeded"
    )
