"""Word error rate and speed of the sandbox recognizer on a manifest of recordings.

Run from the repository root:

    python -m bench.asr_quality [--manifest data/sample/manifest.csv] [--json out.json]

For each model it prints one row per file (WER against reference_text, and the
real-time factor = processing seconds / audio seconds) and an overall row: WER
over all words of all files, RTF over the summed times. Decoder load time is
reported separately and kept out of the RTF.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

import jiwer

from sandbox.recognizer import ASRModel, audio_duration_s, load_decoder, recognize_file

DEFAULT_MANIFEST = Path(__file__).resolve().parent.parent / "data" / "sample" / "manifest.csv"


@dataclass(frozen=True)
class FileResult:
    """One file's outcome, kept whole so the JSON output can be compared across runs."""

    file_id: str
    audio_s: float
    seconds: float
    wer: float
    reference: str
    hypothesis: str

    @property
    def rtf(self) -> float:
        """Real-time factor: below 1 means faster than the audio plays."""
        return self.seconds / self.audio_s


@dataclass(frozen=True)
class ModelResult:
    """All files of one model, plus what loading it cost."""

    model: str
    load_s: float
    files: list[FileResult]

    @property
    def wer(self) -> float:
        """Corpus-level WER, so long files weigh by their word count."""
        return float(
            jiwer.wer([f.reference for f in self.files], [f.hypothesis for f in self.files])
        )

    @property
    def rtf(self) -> float:
        """Summed processing time over summed audio time."""
        return sum(f.seconds for f in self.files) / sum(f.audio_s for f in self.files)


def read_manifest(path: Path) -> list[tuple[Path, str, str]]:
    """(audio path, file_id, reference_text) rows, audio paths resolved against the manifest."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            (path.parent / row["audio_path"], row["file_id"], row["reference_text"])
            for row in csv.DictReader(handle)
        ]


def run_model(model: ASRModel, rows: Sequence[tuple[Path, str, str]]) -> ModelResult:
    """Recognize every row with one model, timing the load apart from the decoding."""
    started = time.perf_counter()
    load_decoder(model)
    load_s = time.perf_counter() - started
    files = []
    for audio, file_id, reference in rows:
        started = time.perf_counter()
        segments = recognize_file(audio, model)
        seconds = time.perf_counter() - started
        hypothesis = " ".join(segment.text for segment in segments)
        files.append(
            FileResult(
                file_id=file_id,
                audio_s=audio_duration_s(audio) or float("nan"),
                seconds=seconds,
                wer=float(jiwer.wer(reference, hypothesis)),
                reference=reference,
                hypothesis=hypothesis,
            )
        )
    return ModelResult(model=model, load_s=load_s, files=files)


def format_table(results: Sequence[ModelResult]) -> str:
    """Per-file and overall rows for each model, as a plain-text table."""
    lines = [f"{'model':<9} {'file':<10} {'audio s':>8} {'proc s':>7} {'RTF':>6} {'WER':>6}"]
    for result in results:
        lines.append("-" * len(lines[0]))
        for f in result.files:
            lines.append(
                f"{result.model:<9} {f.file_id:<10} {f.audio_s:8.2f} {f.seconds:7.3f} "
                f"{f.rtf:6.3f} {f.wer:6.3f}"
            )
        audio_s = sum(f.audio_s for f in result.files)
        seconds = sum(f.seconds for f in result.files)
        lines.append(
            f"{result.model:<9} {'OVERALL':<10} {audio_s:8.2f} {seconds:7.3f} "
            f"{result.rtf:6.3f} {result.wer:6.3f}   (load {result.load_s:.3f} s)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run each model over the manifest and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument(
        "--models", nargs="+", choices=get_args(ASRModel), default=list(get_args(ASRModel))
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--show-text", action="store_true", help="print each hypothesis")
    args = parser.parse_args(argv)
    rows = read_manifest(args.manifest)
    results = [run_model(model, rows) for model in args.models]
    print(format_table(results))
    if args.show_text:
        for result in results:
            for f in result.files:
                print(f"{result.model:<9} {f.file_id:<10} REF {f.reference}")
                print(f"{'':<9} {'':<10} HYP {f.hypothesis}")
    if args.json:
        payload = [
            {
                **asdict(r),
                "wer": r.wer,
                "rtf": r.rtf,
                "files": [{**asdict(f), "rtf": f.rtf} for f in r.files],
            }
            for r in results
        ]
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
