"""Transcript producers (instant, ASR) and the WebVTT rendering of contract #27."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path
from typing import Literal

from sandbox.models import Segment, Transcriber, TranscriptionFailed
from sandbox.recognizer import Recognizer, UndecodableAudio, audio_duration_s

__all__ = [
    "AsrTranscriber",
    "InstantTranscriber",
    "build_vtt",
    "instant_transcript",
    "make_transcriber",
]

VOCABULARY: tuple[str, ...] = (
    "patient", "reports", "chest", "pain", "since", "yesterday", "no", "fever", "blood",
    "pressure", "is", "normal", "heart", "rate", "regular", "lungs", "clear", "abdomen",
    "soft", "non", "tender", "history", "of", "hypertension", "diabetes", "allergy",
    "penicillin", "prescribed", "paracetamol", "twice", "daily", "follow", "up", "in",
    "two", "weeks", "mild", "cough", "shortness", "breath", "headache", "nausea",
    "examination", "unremarkable", "refer", "to", "cardiology", "the", "and", "with",
)  # fmt: skip

_SECONDS_PER_SEGMENT = 1.0
_MIN_SEGMENT_S = 0.5


def instant_transcript(sha256: str, duration_s: float | None) -> list[Segment]:
    """A transcript that is a pure function of the audio's hash, so tests can predict it."""
    rng = random.Random(int(sha256[:16], 16))
    count = rng.randint(1, 4)
    if duration_s is not None and duration_s > 0:
        count = max(1, min(count, int(duration_s // _MIN_SEGMENT_S)))
        slot = duration_s / count
    else:
        slot = _SECONDS_PER_SEGMENT
    texts = [_sentence(rng) for _ in range(count)]
    return [_timed(text, index, slot) for index, text in enumerate(texts)]


def _sentence(rng: random.Random) -> str:
    """Three to nine vocabulary words, capitalised, with a full stop."""
    words = [rng.choice(VOCABULARY) for _ in range(rng.randint(3, 9))]
    return " ".join(words).capitalize() + "."


def _timed(text: str, index: int, slot: float) -> Segment:
    """Place a segment inside its slot with a small lead-in and gap, like real speech."""
    start = round(index * slot + min(0.01, slot / 10), 2)
    end = round((index + 1) * slot - min(0.05, slot / 10), 2)
    return Segment(start=start, end=max(start, end), text=text)


def build_vtt(segments: tuple[Segment, ...] | list[Segment]) -> str:
    """``WEBVTT`` then one blank-line-separated cue per segment (no voice tags: no speakers)."""
    cues = [f"{_vtt_time(s.start)} --> {_vtt_time(s.end)}\n{_vtt_text(s.text)}" for s in segments]
    return "WEBVTT\n\n" + "\n\n".join(cues) + "\n" if cues else "WEBVTT\n"


def _vtt_time(seconds: float) -> str:
    """``HH:MM:SS.mmm`` as WebVTT requires."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _vtt_text(text: str) -> str:
    """Escape what WebVTT cue text reserves, and keep each cue on one line."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(escaped.split())


class InstantTranscriber:
    """Deterministic fake transcripts: fast, no models, any non-empty bytes complete."""

    def __init__(self, text: str | None = None) -> None:
        self._text = text

    async def transcribe(self, path: Path, sha256: str) -> list[Segment]:
        """Segments spread over the audio's duration when it can be read."""
        duration = await asyncio.to_thread(audio_duration_s, path)
        segments = instant_transcript(sha256, duration)
        if self._text is not None:
            segments = [dataclasses.replace(s, text=self._text) for s in segments]
        return segments

    async def aclose(self) -> None:
        """Nothing to release."""


class AsrTranscriber:
    """Real recognition through ``sandbox.recognizer``; its worker pool starts on the first job."""

    def __init__(self, model: Literal["clinical", "general"], workers: int) -> None:
        self._model: Literal["clinical", "general"] = model
        self._workers = workers
        self._recognizer: Recognizer | None = None

    def _get(self) -> Recognizer:
        """Start the recognizer (and its process pool) on the first job, not at import."""
        if self._recognizer is None:
            self._recognizer = Recognizer(model=self._model, workers=self._workers)
        return self._recognizer

    async def transcribe(self, path: Path, sha256: str) -> list[Segment]:
        """Recognised segments; undecodable audio becomes the job's ``errorMessage``."""
        try:
            recognised = await self._get().transcribe(path)
        except UndecodableAudio as exc:
            raise TranscriptionFailed(str(exc)) from exc
        return [
            Segment(start=round(s.start, 2), end=round(s.end, 2), text=s.text.strip())
            for s in recognised
            if s.text.strip()
        ]

    async def aclose(self) -> None:
        """Shut the worker pool down off the event loop."""
        if self._recognizer is not None:
            recognizer, self._recognizer = self._recognizer, None
            await asyncio.to_thread(recognizer.close)


def make_transcriber(
    processing: Literal["asr", "instant"],
    model: Literal["clinical", "general"],
    workers: int,
    instant_text: str | None = None,
) -> Transcriber:
    """The transcriber for the configured processing mode."""
    if processing == "instant":
        return InstantTranscriber(instant_text)
    return AsrTranscriber(model, workers)
