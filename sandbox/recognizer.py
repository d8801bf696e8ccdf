"""Offline speech recognition for the sandbox, with pocketsphinx.

Two models share pocketsphinx's bundled US-English acoustic model:

- ``clinical``: the small clinical-domain trigram LM and trimmed dictionary
  built by ``lm/build_lm.py`` (shipped as package data next to this module);
- ``general``: pocketsphinx's bundled general-English LM and full cmudict.

`recognize_file` is synchronous and CPU-bound (pocketsphinx holds the GIL), so
the server uses `Recognizer`, which runs it in a spawn-context process pool.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
import soundfile

# pocketsphinx and soxr (the [sandbox] extra) load lazily: instant mode and header reads need
# neither, and the sandbox package imports without the extra.
if TYPE_CHECKING:
    import pocketsphinx

ASRModel = Literal["clinical", "general"]

SAMPLE_RATE = 16_000
"""Rate the bundled acoustic model was trained on; all audio is resampled to it."""

LM_DIR = Path(__file__).resolve().parent / "lm"

PAUSE_S = 0.3
"""A silence at least this long between two words starts a new segment."""

MAX_CHUNK_S = 60.0
"""Longest stretch decoded as one utterance, so pause-free audio cannot grow memory unbounded."""

_FILLER = re.compile(r"^[<\[+].*[>\]+]$")  # <s>, </s>, <sil>, [NOISE], ++BREATH++
_ALT_PRONUNCIATION = re.compile(r"\(\d+\)$")  # does(2) -> does
_DITHER_SEED = 0
_NOT_AUDIO = "not a recognisable audio container (WAV, FLAC, OGG)"


@dataclass(frozen=True)
class RecognizedSegment:
    """One stretch of speech between pauses, with times in seconds from the file start."""

    start: float
    end: float
    text: str


class UndecodableAudio(Exception):
    """Audio that cannot be decoded or holds no samples; str(exc) is a clear, user-facing reason."""


def decode_audio(path: str | os.PathLike[str]) -> tuple[npt.NDArray[np.float32], int]:
    """Read any container libsndfile knows into mono float32, so callers need not care."""
    if os.path.getsize(path) == 0:
        raise UndecodableAudio("audio file is empty")
    try:
        with soundfile.SoundFile(path) as audio:
            rate = int(audio.samplerate)
            try:
                samples = audio.read(dtype="float32", always_2d=True)
            except (RuntimeError, ValueError) as exc:
                raise UndecodableAudio(f"audio data is corrupt or truncated ({exc})") from exc
    except soundfile.LibsndfileError as exc:
        raise UndecodableAudio(_NOT_AUDIO) from exc
    if samples.shape[0] == 0:
        raise UndecodableAudio("audio file holds no samples")
    mono = samples.mean(axis=1, dtype=np.float32)
    return np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0), rate


def audio_duration_s(path: str | os.PathLike[str]) -> float | None:
    """Duration from the header alone, so callers can price or validate uploads cheaply."""
    try:
        info = soundfile.info(os.fspath(path))
    except (OSError, RuntimeError, ValueError):
        return None
    if info.frames <= 0 or info.samplerate <= 0:
        return None
    return float(info.frames) / float(info.samplerate)


def to_pcm16(samples: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.int16]:
    """Resample to 16 kHz and quantize with TPDF dither, as the acoustic model expects.

    The dither matters: pocketsphinx's log-energy features break down on exact
    digital silence (runs of 0), which truncating float audio to int16 creates
    (measured: WER 0.68 instead of 0.36 on espeak-ng speech). A fixed seed keeps
    results reproducible whichever worker decodes the file.
    """
    if rate != SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32, copy=False)
    rng = np.random.default_rng(_DITHER_SEED)
    # float32 throughout keeps an hour of audio near 4 bytes per sample of scratch memory
    scaled = samples * np.float32(32768.0)
    scaled += rng.random(samples.size, dtype=np.float32)  # difference of two uniforms:
    scaled -= rng.random(samples.size, dtype=np.float32)  # triangular (TPDF) dither, +-1 LSB
    pcm: npt.NDArray[np.int16] = np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)
    return pcm


def _decoder_config(model: ASRModel) -> dict[str, object]:
    """Decoder keyword arguments for a model; quiet, since the server owns the logs."""
    quiet: dict[str, object] = {"loglevel": "FATAL", "samprate": SAMPLE_RATE}
    if model == "clinical":
        return {**quiet, "lm": str(LM_DIR / "clinical.lm"), "dict": str(LM_DIR / "clinical.dict")}
    if model == "general":
        return quiet  # pocketsphinx fills in its bundled en-us LM and cmudict
    raise ValueError(f"unknown ASR model {model!r}; expected 'clinical' or 'general'")


_DECODERS: dict[str, pocketsphinx.Decoder] = {}


def load_decoder(model: ASRModel) -> pocketsphinx.Decoder:
    """Return this process's decoder for a model, loading it once (general takes ~0.3 s)."""
    decoder = _DECODERS.get(model)
    if decoder is None:
        import pocketsphinx

        decoder = pocketsphinx.Decoder(**_decoder_config(model))
        _DECODERS[model] = decoder
    return decoder


def _speech_regions(pcm: npt.NDArray[np.int16]) -> list[tuple[float, float]]:
    """(start, end) seconds of speech found by pocketsphinx's voice activity detector."""
    import pocketsphinx

    endpointer = pocketsphinx.Endpointer(sample_rate=SAMPLE_RATE)
    frame_samples = endpointer.frame_bytes // 2
    regions: list[tuple[float, float]] = []
    for offset in range(0, pcm.size, frame_samples):
        frame = pcm[offset : offset + frame_samples].tobytes()
        last = offset + frame_samples >= pcm.size
        if last and not endpointer.in_speech:
            break  # end_stream is only valid inside a speech region
        speech = endpointer.end_stream(frame) if last else endpointer.process(frame)
        if speech is not None and not endpointer.in_speech:
            regions.append((endpointer.speech_start, endpointer.speech_end))
    return regions


def chunk_bounds(
    total_s: float, regions: Iterable[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Cut the file midway through each pause between speech regions.

    Each chunk keeps the silence around its speech, which decodes better than
    the tightly trimmed VAD region; chunks longer than MAX_CHUNK_S are split evenly.
    """
    cuts = [0.0]
    previous_end: float | None = None
    for start, end in regions:
        if previous_end is not None and start > previous_end:
            cuts.append((previous_end + start) / 2)
        previous_end = end
    cuts.append(total_s)
    bounds: list[tuple[float, float]] = []
    for lo, hi in itertools.pairwise(cuts):
        pieces = max(1, int(np.ceil((hi - lo) / MAX_CHUNK_S)))
        step = (hi - lo) / pieces
        bounds.extend((lo + i * step, lo + (i + 1) * step) for i in range(pieces))
    return [(lo, hi) for lo, hi in bounds if hi > lo]


def clean_word(word: str) -> str | None:
    """Spoken word without its alternate-pronunciation suffix, or None for fillers."""
    if not word or _FILLER.match(word):
        return None
    return _ALT_PRONUNCIATION.sub("", word)


def _timed_words(
    decoder: pocketsphinx.Decoder, pcm: npt.NDArray[np.int16], offset_s: float
) -> Iterator[tuple[float, float, str]]:
    """Decode one chunk as an utterance and yield (start, end, word) in file time."""
    frame_s = 1.0 / float(decoder.config["frate"])
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
    decoder.end_utt()
    if decoder.hyp() is None:
        return
    for segment in decoder.seg():
        word = clean_word(segment.word)
        if word is not None:  # end_frame is inclusive
            start = offset_s + segment.start_frame * frame_s
            yield start, offset_s + (segment.end_frame + 1) * frame_s, word


def group_segments(words: Iterable[tuple[float, float, str]]) -> list[RecognizedSegment]:
    """Join consecutive words into segments, starting a new one at each pause >= PAUSE_S."""
    segments: list[RecognizedSegment] = []
    current: list[tuple[float, float, str]] = []
    for word in words:
        if current and word[0] - current[-1][1] >= PAUSE_S:
            segments.append(_segment(current))
            current = []
        current.append(word)
    if current:
        segments.append(_segment(current))
    return segments


def _segment(words: list[tuple[float, float, str]]) -> RecognizedSegment:
    """One segment from its words, times rounded to the decoder's 10 ms frames."""
    text = " ".join(word for _, _, word in words)
    return RecognizedSegment(start=round(words[0][0], 2), end=round(words[-1][1], 2), text=text)


def recognize_file(
    path: str | os.PathLike[str], model: ASRModel = "clinical"
) -> list[RecognizedSegment]:
    """Synchronous: decode, resample to 16 kHz mono int16 (soxr), run pocketsphinx, return segments."""
    decoder = load_decoder(model)
    samples, rate = decode_audio(path)
    pcm = to_pcm16(samples, rate)
    total_s = pcm.size / SAMPLE_RATE
    words: list[tuple[float, float, str]] = []
    for lo, hi in chunk_bounds(total_s, _speech_regions(pcm)):
        chunk = pcm[round(lo * SAMPLE_RATE) : round(hi * SAMPLE_RATE)]
        words.extend(_timed_words(decoder, chunk, lo))
    return group_segments(words)


class Recognizer:
    """Runs recognize_file in a worker PROCESS pool so the server's event loop never stalls.

    pocketsphinx's process_raw holds the GIL, so threads would not help. Workers are
    started with ``spawn`` (forking a multi-threaded server is unsafe) and load their
    decoder once, in the pool initializer.
    """

    def __init__(self, model: ASRModel = "clinical", workers: int = 1) -> None:
        """Create the pool; worker processes start on the first transcription."""
        _decoder_config(model)  # reject an unknown model here, not in a worker
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.model: ASRModel = model
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=load_decoder,
            initargs=(model,),
        )

    async def transcribe(self, path: str | os.PathLike[str]) -> list[RecognizedSegment]:
        """Recognize a file in a worker; raises UndecodableAudio for unusable audio."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, recognize_file, os.fspath(path), self.model)

    def close(self) -> None:
        """Stop the workers, dropping queued work, so no process outlives the server."""
        self._pool.shutdown(wait=True, cancel_futures=True)
