"""Captions: exact WebVTT and SRT text, the API's WebVTT reused, safe private atomic files."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from invox_batch.captions import (
    safe_stem,
    segments_to_srt,
    segments_to_vtt,
    vtt_to_segments,
    write_captions,
    write_file_captions,
    write_run_captions,
)

SEGMENTS: list[tuple[float, float, str, str | None]] = [
    (0.0, 1.0005, "Good morning.", None),
    (61.25, 62.0, "Any pain <today> & since when?", "Dr. Ruiz"),
    (3661.9996, 3723.5, "Since Monday,\n\nmostly at night.", "Patient"),
]


def mode(path: Path) -> int:
    """Permission bits only."""
    return stat.S_IMODE(path.stat().st_mode)


def test_vtt_has_header_hours_milliseconds_voice_tags_and_escaping() -> None:
    assert segments_to_vtt(SEGMENTS) == (
        "WEBVTT\n"
        "\n"
        "00:00:00.000 --> 00:00:01.001\n"
        "Good morning.\n"
        "\n"
        "00:01:01.250 --> 00:01:02.000\n"
        "<v Dr. Ruiz>Any pain &lt;today&gt; &amp; since when?\n"
        "\n"
        "01:01:02.000 --> 01:02:03.500\n"
        "<v Patient>Since Monday,\n"
        "mostly at night.\n"
    )


def test_srt_is_numbered_from_one_with_comma_milliseconds() -> None:
    assert segments_to_srt(SEGMENTS) == (
        "1\n"
        "00:00:00,000 --> 00:00:01,001\n"
        "Good morning.\n"
        "\n"
        "2\n"
        "00:01:01,250 --> 00:01:02,000\n"
        "Dr. Ruiz: Any pain <today> & since when?\n"
        "\n"
        "3\n"
        "01:01:02,000 --> 01:02:03,500\n"
        "Patient: Since Monday,\n"
        "mostly at night.\n"
    )


@pytest.mark.parametrize(
    ("seconds", "clock"),
    [
        (0.0004, "00:00:00,000"),
        (0.0005, "00:00:00,001"),
        (59.9996, "00:01:00,000"),
        (7325.123, "02:02:05,123"),
        (36000, "10:00:00,000"),
    ],
)
def test_millisecond_rounding_carries_into_seconds_minutes_hours(
    seconds: float, clock: str
) -> None:
    assert (
        segments_to_srt([(seconds, seconds, "x", None)]).splitlines()[1] == f"{clock} --> {clock}"
    )


def test_blank_segments_are_skipped_and_numbering_stays_dense() -> None:
    srt = segments_to_srt([(0, 1, "one", None), (1, 2, "  \n ", None), (2, 3, "two", " ")])
    assert srt == "1\n00:00:00,000 --> 00:00:01,000\none\n\n2\n00:00:02,000 --> 00:00:03,000\ntwo\n"
    assert segments_to_srt([]) == ""
    assert segments_to_vtt([]) == "WEBVTT\n"


@pytest.mark.parametrize("segment", [(2.0, 1.0, "x", None), (-1.0, 1.0, "x", None)])
def test_impossible_times_are_refused(segment: tuple[float, float, str, str | None]) -> None:
    with pytest.raises(ValueError):
        segments_to_vtt([segment])


def test_write_captions_writes_both_formats_privately_and_atomically(
    tmp_path: Path, umask_022: None
) -> None:
    vtt, srt = segments_to_vtt(SEGMENTS), segments_to_srt(SEGMENTS)
    paths = write_captions(tmp_path / "out", "visit-001", vtt=vtt, srt=srt)
    folder = tmp_path / "out" / "captions"
    assert paths == [folder / "visit-001.vtt", folder / "visit-001.srt"]
    assert paths[0].read_text(encoding="utf-8") == vtt
    assert paths[1].read_text(encoding="utf-8") == srt
    assert [mode(p) for p in paths] == [0o600, 0o600]
    assert mode(folder) == mode(tmp_path / "out") == 0o700
    assert sorted(p.name for p in folder.iterdir()) == ["visit-001.srt", "visit-001.vtt"]


def test_write_captions_replaces_and_follows_umask_when_not_private(
    tmp_path: Path, umask_022: None
) -> None:
    write_captions(tmp_path, "a", vtt="WEBVTT\n")
    (path,) = write_captions(tmp_path, "a", vtt="WEBVTT\n\nnew\n", private=False)
    assert path.read_text(encoding="utf-8") == "WEBVTT\n\nnew\n"
    assert mode(path) == 0o644
    assert write_captions(tmp_path, "a") == []


@pytest.mark.parametrize(
    "file_id", ["../x", "../../etc/passwd", "/abs/path", "..", ".hidden", "a\\b"]
)
def test_file_ids_cannot_escape_or_hide(tmp_path: Path, file_id: str) -> None:
    (path,) = write_captions(tmp_path, file_id, srt="1\n")
    assert path.parent == tmp_path / "captions"
    assert not path.name.startswith(".")
    assert path.resolve().parent == (tmp_path / "captions").resolve()
    assert [p.name for p in tmp_path.iterdir()] == ["captions"]


def test_safe_stems_keep_plain_ids_and_never_collide() -> None:
    assert safe_stem("visit-001_A.2") == "visit-001_A.2"
    assert safe_stem("a/b") != safe_stem("a_b") == "a_b"
    assert len(safe_stem("x" * 500)) < 140
    with pytest.raises(ValueError):
        safe_stem("")


API_VTT = """WEBVTT

NOTE made by the provider

1
00:00:00.000 --> 00:00:01.500 align:start
<v Doctor>Good morning &amp; welcome.

00:01.500 --> 00:03.250
Second <b>line</b>
continues here
"""


def test_vtt_cues_become_segments_with_speakers() -> None:
    assert vtt_to_segments(API_VTT) == [
        (0.0, 1.5, "Good morning & welcome.", "Doctor"),
        (1.5, 3.25, "Second line\ncontinues here", None),
    ]


def test_srt_from_the_api_vtt_numbers_from_one_with_comma_millis(tmp_path: Path) -> None:
    written = write_file_captions(tmp_path, "visit-1", API_VTT, [], vtt=True, srt=True)
    assert [p.name for p in written] == ["visit-1.vtt", "visit-1.srt"]
    assert (tmp_path / "captions" / "visit-1.vtt").read_text() == API_VTT
    assert (tmp_path / "captions" / "visit-1.srt").read_text() == (
        "1\n00:00:00,000 --> 00:00:01,500\nDoctor: Good morning & welcome.\n\n"
        "2\n00:00:01,500 --> 00:00:03,250\nSecond line\ncontinues here\n"
    )


def test_without_api_vtt_captions_come_from_segments(tmp_path: Path) -> None:
    segments = [(0.0, 1.25, "hello", None), (3661.5, 3662.0, "later", "Nurse")]
    write_file_captions(tmp_path, "v2", None, segments, vtt=False, srt=True)
    assert not (tmp_path / "captions" / "v2.vtt").exists()
    assert (tmp_path / "captions" / "v2.srt").read_text() == (
        "1\n00:00:00,000 --> 00:00:01,250\nhello\n\n"
        "2\n01:01:01,500 --> 01:01:02,000\nNurse: later\n"
    )
    assert write_file_captions(tmp_path, "v3", None, segments, vtt=False, srt=False) == []


def test_unparseable_api_vtt_is_kept_verbatim_and_srt_falls_back_to_segments(
    tmp_path: Path,
) -> None:
    broken = "WEBVTT\n\n00:00.0 --> 00:01.0\nSECRET-CUE-TEXT\n"
    segments = [(0.0, 1.0, "from segments", None)]
    vtt, srt = write_file_captions(tmp_path, "f", broken, segments, vtt=True, srt=True)
    assert vtt.read_text() == broken
    assert "from segments" in srt.read_text() and "SECRET" not in srt.read_text()
    try:
        vtt_to_segments(broken)
    except ValueError as exc:
        assert "SECRET" not in str(exc) and "00:00.0" not in str(exc)  # cue text is PHI
    else:
        raise AssertionError("a malformed timestamp must be refused")


def test_a_run_writes_each_file_and_counts_unusable_timings_without_phi(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [
        ("good", None, [(0.0, 1.0, "fine", None)]),
        ("bad", None, [(2.0, 1.0, "SECRET-TEXT", None)]),
        ("api", API_VTT, []),
    ]
    log = logging.getLogger("test.captions")
    with caplog.at_level(logging.WARNING, logger="test.captions"):
        written, unusable = write_run_captions(tmp_path, rows, True, False, log)
    assert [p.name for p in written] == ["good.vtt", "api.vtt"]
    assert unusable == 1
    assert [r.getMessage() for r in caplog.records] == [
        "no captions for bad: segment 1 ends before it starts"
    ]
    assert write_run_captions(tmp_path, rows[:1], False, False, log) == ([], 0)
