"""Data-quality flags: pure functions over what the API returned."""

from __future__ import annotations

from typing import Any

from invox_batch.quality import (
    LONG_SILENCE_S,
    assign_quality,
    count_flags,
    segment_flags,
    words_per_minute,
)


def row(
    text: str | None, duration_s: float | None = 60.0, status: str = "completed"
) -> dict[str, Any]:
    return {"status": status, "text": text, "duration_s": duration_s, "quality": []}


def test_clean_consecutive_segments_have_no_flags() -> None:
    assert segment_flags([(0.0, 1.0, "a"), (1.0, 2.5, "b"), (2.52, 3.0, "c")]) == set()


def test_gap_overlap_and_order_problems_are_each_flagged() -> None:
    assert segment_flags([(0.0, 1.0, "a"), (1.0 + LONG_SILENCE_S, 12.0, "b")]) == {"long_silence"}
    assert segment_flags([(0.0, 2.0, "a"), (1.0, 3.0, "b")]) == {"overlapping_segments"}
    assert segment_flags([(5.0, 6.0, "a"), (1.0, 2.0, "b")]) == {
        "non_monotonic_timestamps",
        "overlapping_segments",
    }
    assert segment_flags([(2.0, 1.0, "backwards")]) == {"non_monotonic_timestamps"}


def test_words_per_minute_needs_a_duration() -> None:
    assert words_per_minute("one two three", 30.0) == 6.0
    assert words_per_minute("one", None) is None and words_per_minute("one", 0.0) is None


def test_short_and_empty_transcripts_are_flagged_against_the_run_median() -> None:
    normal = " ".join(["word"] * 120)  # 120 words per minute
    rows = [
        row(normal),
        row(normal),
        row(normal),
        row("just two"),
        row("  "),
        row(None, status="failed"),
    ]
    flagged = assign_quality(rows, [[(0.0, 1.0, "x")]] * 5 + [[]])
    assert [r["quality"] for r in flagged] == [
        [],
        [],
        [],
        ["short_transcript"],
        ["empty_transcript"],
        [],
    ]
    assert all(r["status"] == row_in["status"] for r, row_in in zip(flagged, rows, strict=True))
    assert count_flags(flagged) == {"empty_transcript": 1, "short_transcript": 1}


def test_no_short_flag_without_enough_transcripts_to_compare() -> None:
    rows = [row(" ".join(["word"] * 120)), row("two words")]
    assert [r["quality"] for r in assign_quality(rows, [[], []])] == [[], []]
