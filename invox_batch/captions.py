"""Caption exports (WebVTT and SRT) built from transcript segments, one file per audio file."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import BinaryIO

from .files import atomic_write

Segment = tuple[float, float, str, str | None]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_STEM = 120


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
