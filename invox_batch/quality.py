"""Data-quality flags for completed transcripts, judged only from what the API returned."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "FLAGS",
    "LONG_SILENCE_S",
    "MIN_ROWS_FOR_MEDIAN",
    "OVERLAP_TOLERANCE_S",
    "SHORT_TRANSCRIPT_RATIO",
    "assign_quality",
    "count_flags",
    "segment_flags",
    "words_per_minute",
]

# A completed file speaking at less than this share of the run's median words per audio minute.
SHORT_TRANSCRIPT_RATIO = 0.25
# The median is only a yardstick with at least this many transcripts to compare against.
MIN_ROWS_FOR_MEDIAN = 3
# A gap between two consecutive segments at least this long (seconds).
LONG_SILENCE_S = 10.0
# Segments may touch or overlap by rounding noise without being flagged (seconds).
OVERLAP_TOLERANCE_S = 0.05

FLAGS = (
    "empty_transcript",
    "short_transcript",
    "long_silence",
    "overlapping_segments",
    "non_monotonic_timestamps",
)

Segment = Sequence[Any]


def words_per_minute(text: str | None, duration_s: float | None) -> float | None:
    """Words per minute of audio, or None when the duration is unknown or zero."""
    if not duration_s or duration_s <= 0:
        return None
    return len((text or "").split()) / (duration_s / 60.0)


def segment_flags(segments: Sequence[Segment]) -> set[str]:
    """Timing problems between consecutive segments (start, end, ...)."""
    flags: set[str] = set()
    for segment in segments:
        if float(segment[1]) < float(segment[0]):
            flags.add("non_monotonic_timestamps")
    for before, after in itertools.pairwise(segments):
        start, end, next_start = float(before[0]), float(before[1]), float(after[0])
        if next_start < start:
            flags.add("non_monotonic_timestamps")
        if next_start < end - OVERLAP_TOLERANCE_S:
            flags.add("overlapping_segments")
        if next_start - end >= LONG_SILENCE_S:
            flags.add("long_silence")
    return flags


def _run_median(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The run's median words per minute over completed, non-empty transcripts."""
    rates = [
        rate
        for row in rows
        if row["status"] == "completed" and (row["text"] or "").strip()
        for rate in [words_per_minute(row["text"], row["duration_s"])]
        if rate is not None
    ]
    return statistics.median(rates) if len(rates) >= MIN_ROWS_FOR_MEDIAN else None


def _row_flags(
    row: Mapping[str, Any], segments: Sequence[Segment], median: float | None
) -> list[str]:
    """The flags of one row, in FLAGS order; failed rows have none."""
    if row["status"] != "completed":
        return []
    flags = segment_flags(segments)
    if not (row["text"] or "").strip():
        flags.add("empty_transcript")
    else:
        rate = words_per_minute(row["text"], row["duration_s"])
        if median and rate is not None and rate < SHORT_TRANSCRIPT_RATIO * median:
            flags.add("short_transcript")
    return [flag for flag in FLAGS if flag in flags]


def assign_quality(
    rows: Sequence[dict[str, Any]], segments: Sequence[Sequence[Segment]]
) -> list[dict[str, Any]]:
    """Copies of the ``files`` rows with their ``quality`` list filled (rows stay ``completed``)."""
    median = _run_median(rows)
    return [
        {**row, "quality": _row_flags(row, segs, median)}
        for row, segs in zip(rows, segments, strict=True)
    ]


def count_flags(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Rows carrying each flag, in FLAGS order, leaving out flags nobody has."""
    counts = Counter(flag for row in rows for flag in row.get("quality") or ())
    return {flag: counts[flag] for flag in FLAGS if counts[flag]}
