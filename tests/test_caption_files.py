"""Per-file captions: the API's WebVTT when given (also turned into SRT), else segments."""

from __future__ import annotations

from pathlib import Path

from invox_batch.caption_files import vtt_to_segments, write_file_captions

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
