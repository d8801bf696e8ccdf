"""Caption files (WebVTT, SRT) per audio file: the API's WebVTT when given, else its segments."""

from __future__ import annotations

import hashlib
import html
import logging
import math
import re
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, BinaryIO

from .files import atomic_write

Segment = tuple[float, float, str, str | None]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_STEM = 120
_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{3})")
_VOICE = re.compile(r"^<v(?:\.[^ >]*)?\s+([^>]*)>")
_TAG = re.compile(r"<[^>]*>")


def _milliseconds(seconds: float) -> int:
    """Whole milliseconds, half-up on the decimal value people see (1.0005 s → 1001 ms)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("caption times must be finite and non-negative")
    return int(Decimal(repr(float(seconds))).quantize(Decimal("0.001"), ROUND_HALF_UP) * 1000)


def _clock(seconds: float, decimal_mark: str) -> str:
    """HH:MM:SS plus milliseconds after the format's mark ('.' for VTT, ',' for SRT)."""
    hours, rest = divmod(_milliseconds(seconds), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{millis:03d}"


def _lines(text: str) -> list[str]:
    """Non-blank lines only: a blank line would end the cue early in both formats."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _vtt_escape(text: str) -> str:
    """Escape what WebVTT cue text treats as markup (this also defuses a literal '-->')."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cues(
    segments: Sequence[Segment], decimal_mark: str
) -> list[tuple[str, list[str], str | None]]:
    """Timings and text lines per cue, skipping segments with no text to show."""
    cues = []
    for number, (start, end, text, speaker) in enumerate(segments, start=1):
        if end < start:
            raise ValueError(f"segment {number} ends before it starts")
        lines = _lines(text)
        if lines:
            timing = f"{_clock(start, decimal_mark)} --> {_clock(end, decimal_mark)}"
            cues.append((timing, lines, speaker.strip() if speaker and speaker.strip() else None))
    return cues


def segments_to_vtt(segments: Sequence[Segment]) -> str:
    """A WebVTT document, with <v Speaker> voice tags where the speaker is known."""
    blocks = ["WEBVTT"]
    for timing, lines, speaker in _cues(segments, "."):
        body = [_vtt_escape(line) for line in lines]
        if speaker:
            body[0] = f"<v {_vtt_escape(speaker)}>{body[0]}"
        blocks.append("\n".join([timing, *body]))
    return "\n\n".join(blocks) + "\n"


def segments_to_srt(segments: Sequence[Segment]) -> str:
    """An SRT document numbered from 1; SRT has no voice tag, so a speaker prefixes the text."""
    blocks = []
    for number, (timing, lines, speaker) in enumerate(_cues(segments, ","), start=1):
        if speaker:
            lines = [f"{speaker}: {lines[0]}", *lines[1:]]
        blocks.append("\n".join([str(number), timing, *lines]))
    return "\n\n".join(blocks) + "\n" if blocks else ""


def safe_stem(file_id: str) -> str:
    """A file name stem that cannot leave captions/ or hide; altered ids get a hash to stay unique."""
    if not file_id:
        raise ValueError("file_id must not be empty")
    stem = _UNSAFE.sub("_", file_id).lstrip(".")
    if stem == file_id and len(stem) <= _MAX_STEM:
        return stem
    digest = hashlib.sha256(file_id.encode()).hexdigest()[:12]
    return f"{stem[:_MAX_STEM]}-{digest}" if stem else digest


def _write_text(path: Path, text: str, *, private: bool | None) -> None:
    """One UTF-8 caption file, atomically."""
    data = text.encode("utf-8")

    def write(handle: BinaryIO) -> None:
        handle.write(data)

    atomic_write(path, write, private=private)


def write_captions(
    out: str | Path,
    file_id: str,
    *,
    vtt: str | None = None,
    srt: str | None = None,
    private: bool | None = None,
) -> list[Path]:
    """Write ``<out>/captions/<file_id>.vtt|.srt`` atomically; returns the paths written."""
    documents = [
        (suffix, text) for suffix, text in ((".vtt", vtt), (".srt", srt)) if text is not None
    ]
    if not documents:
        return []
    folder = Path(out) / "captions"  # atomic_write creates it (owner-only unless shared)
    stem = safe_stem(file_id)
    written = []
    for suffix, text in documents:
        path = folder / f"{stem}{suffix}"
        _write_text(path, text, private=private)
        written.append(path)
    return written


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


def _file_segments(api_vtt: str | None, segments: Sequence[Sequence[Any]]) -> list[Segment]:
    """The API's VTT cues when they parse, else the result's (start, end, text[, speaker])."""
    if api_vtt:
        try:
            return vtt_to_segments(api_vtt)
        except ValueError:
            pass
    return [(float(s[0]), float(s[1]), str(s[2]), s[3] if len(s) > 3 else None) for s in segments]


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
    cues = [] if (api_vtt and not srt) else _file_segments(api_vtt, segments)
    return write_captions(
        out,
        file_id,
        vtt=(api_vtt or segments_to_vtt(cues)) if vtt else None,
        srt=segments_to_srt(cues) if srt else None,
    )


def write_run_captions(
    out: Path,
    rows: Iterable[tuple[str, str | None, Sequence[Sequence[Any]]]],
    vtt: bool,
    srt: bool,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> tuple[list[Path], int]:
    """Captions for each (file_id, api_vtt, segments), and how many had unusable timings."""
    written: list[Path] = []
    unusable = 0
    for file_id, api_vtt, segments in rows:
        try:
            written += write_file_captions(out, file_id, api_vtt, segments, vtt=vtt, srt=srt)
        except ValueError as exc:  # the provider's timings: the transcript itself is still kept
            unusable += 1
            log.warning("no captions for %s: %s", file_id, exc)
    return written, unusable
