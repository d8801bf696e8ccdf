"""Per-file caption files for a run: the API's WebVTT when it gave one, else built from segments."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .captions import Segment, segments_to_srt, segments_to_vtt, write_captions

__all__ = ["vtt_to_segments", "write_file_captions"]

_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{3})")
_VOICE = re.compile(r"^<v(?:\.[^ >]*)?\s+([^>]*)>")
_TAG = re.compile(r"<[^>]*>")


def _seconds(stamp: str) -> float:
    """Seconds of a WebVTT timestamp, ``HH:MM:SS.mmm`` or ``MM:SS.mmm``."""
    match = _TIME.fullmatch(stamp.strip())
    if not match:
        raise ValueError("not a WebVTT timestamp")  # never quote it: cue text is PHI
    hours, minutes, secs, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(secs) + int(millis) / 1000


def _cue(lines: list[str]) -> Segment | None:
    """One cue block as a segment; None for the header, NOTE, STYLE and REGION blocks."""
    timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
    if timing is None:
        return None
    start, _, rest = lines[timing].partition("-->")
    end = rest.split()[0] if rest.split() else ""
    text = lines[timing + 1 :]
    voice = _VOICE.match(text[0]) if text else None
    speaker = voice.group(1).strip() if voice else None
    plain = [html.unescape(_TAG.sub("", line)) for line in text]
    return (_seconds(start), _seconds(end), "\n".join(plain), speaker)


def vtt_to_segments(vtt: str) -> list[Segment]:
    """The cues of a WebVTT document as (start, end, text, speaker) segments."""
    blocks = re.split(r"\n\s*\n", vtt.replace("\r\n", "\n").strip())
    cues = (_cue([line for line in block.split("\n") if line.strip()]) for block in blocks)
    return [cue for cue in cues if cue is not None]


def _segments(raw: Sequence[Sequence[Any]]) -> list[Segment]:
    """Result segments (start, end, text[, speaker]) in the captions' tuple shape."""
    return [(float(s[0]), float(s[1]), str(s[2]), s[3] if len(s) > 3 else None) for s in raw]


def write_file_captions(
    out: Path,
    file_id: str,
    api_vtt: str | None,
    segments: Sequence[Sequence[Any]],
    *,
    vtt: bool,
    srt: bool,
) -> list[Path]:
    """``<out>/captions/<file_id>.vtt`` and/or ``.srt``, from the API's VTT when there is one."""
    if not (vtt or srt):
        return []
    cues = None if (api_vtt and not srt) else _cues(api_vtt, segments)
    return write_captions(
        out,
        file_id,
        vtt=(api_vtt or segments_to_vtt(cues or [])) if vtt else None,
        srt=segments_to_srt(cues or []) if srt else None,
    )


def _cues(api_vtt: str | None, segments: Sequence[Sequence[Any]]) -> list[Segment]:
    """The API's VTT cues when they parse, else the result's segments."""
    if api_vtt:
        try:
            return vtt_to_segments(api_vtt)
        except ValueError:
            pass
    return _segments(segments)
