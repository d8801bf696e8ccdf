"""The audio-hours budget: what is admitted, what is left, and the cost estimate."""

from __future__ import annotations

import pytest

from invox_batch.budget import budget_line, cost_line, plan_budget, skip_message


def test_no_cap_admits_everything() -> None:
    plan = plan_budget([("a", 3600.0, True)], None)
    assert plan.skipped == {} and plan.summary() == {}


def test_units_are_admitted_in_order_until_the_next_would_exceed_the_cap() -> None:
    units = [("a", 1800.0, True), ("b", 1200.0, True), ("c", 1200.0, True), ("d", 10.0, True)]
    plan = plan_budget(units, 1.0)
    # c would exceed the hour; d would fit, but the run stops submitting once the cap is reached.
    assert plan.skipped == {"c": "cap", "d": "cap"}
    assert plan.summary() == {
        "max_audio_hours": 1.0,
        "submitted_audio_hours": pytest.approx(0.8333, abs=1e-4),
        "cap_hours_left": pytest.approx(0.1667, abs=1e-4),
        "not_submitted_files": 2,
        "not_submitted_audio_hours": pytest.approx(0.3361, abs=1e-4),
    }
    assert "max_audio_hours=1 would be exceeded" in skip_message(plan, "cap")
    assert "2 files (0.3361 h) not submitted" in budget_line(plan.summary())


def test_free_units_never_count_and_unknown_durations_are_not_submitted() -> None:
    units = [("cached", 7200.0, False), ("resumed", 7200.0, False), ("x", None, True)]
    plan = plan_budget(units, 0.5)
    assert plan.skipped == {"x": "unknown"} and plan.submitted_s == 0.0
    assert "duration is unknown" in skip_message(plan, "unknown")


def test_cost_line() -> None:
    assert cost_line(5400.0, 2.0) == "estimated cost: 1.5000 h x 2 per hour = 3.00"
    assert cost_line(0.0, 2.0, unknown=2).endswith("(plus 2 files of unknown duration)")
    assert cost_line(3600.0, 2.0, duplicates=1) == (
        "estimated cost: 1.0000 h x 2 per hour = 2.00; "
        "each unique audio counted once (1 duplicate row left out)"
    )


def test_a_resubmission_is_charged_and_refused_once_the_cap_is_reached() -> None:
    plan = plan_budget([("a", 1800.0, True)], 1.0, spent_s=600.0)
    assert plan.submitted_s == 2400.0
    assert plan.admit("lost", 1200.0) and plan.submitted_s == 3600.0
    assert not plan.admit("lost-too", 1.0) and plan.skipped == {"lost-too": "cap"}
    assert not plan.admit("unknown", None) and plan.skipped["unknown"] == "unknown"
    assert plan_budget([], None).admit("free", 7200.0)
