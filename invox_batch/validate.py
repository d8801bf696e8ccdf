"""`invox-batch validate`: every local check on a manifest, without a single API call."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .audio import AudioCheck, inspect_audio
from .manifest import ManifestRow, read_manifest

__all__ = ["ValidationReport", "render_report", "validate_manifest"]

_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


@dataclass(frozen=True)
class ValidationReport:
    """Each manifest row with its local check; totals count only the rows that would be sent."""

    rows: list[tuple[ManifestRow, AudioCheck]]

    @property
    def bad(self) -> list[tuple[ManifestRow, AudioCheck]]:
        """Rows a run would fail locally, without paying for them."""
        return [(row, check) for row, check in self.rows if not check.ok]

    @property
    def good(self) -> list[tuple[ManifestRow, AudioCheck]]:
        """Rows a run would upload."""
        return [(row, check) for row, check in self.rows if check.ok]

    @property
    def total_duration_s(self) -> float:
        """Audio a run would pay for, over the good rows whose duration is readable."""
        return sum(check.duration_s or 0.0 for _, check in self.good)

    @property
    def total_bytes(self) -> int:
        """Bytes a run would upload."""
        return sum(check.bytes or 0 for _, check in self.good)

    @property
    def unknown_duration(self) -> int:
        """Good rows whose duration we cannot read (M4A, WebM), so the total undercounts."""
        return sum(check.duration_s is None for _, check in self.good)


def validate_manifest(
    source: str, mime_types: Mapping[str, str], spool_dir: Path, *, workers: int = 8
) -> ValidationReport:
    """Check every row as a run would, minus hashing and the API; raises ManifestError."""
    manifest = read_manifest(source)

    def check(row: ManifestRow) -> AudioCheck:
        result = inspect_audio(row, mime_types, spool_dir, hash_content=False)
        return _drop_spooled(result, spool_dir)

    # The work is I/O bound, so a few files at a time.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checks = list(pool.map(check, manifest.rows))
    return ValidationReport(list(zip(manifest.rows, checks, strict=True)))


def _drop_spooled(check: AudioCheck, spool_dir: Path) -> AudioCheck:
    """Delete a spooled copy once its facts are known: validating a bucket must not fill a disk."""
    path = check.local_path
    if path is None or path.parent != spool_dir:
        return check
    path.unlink(missing_ok=True)
    return dataclasses.replace(check, local_path=None)


def render_report(report: ValidationReport, out: TextIO) -> None:
    """One line per bad row, then the totals an operator plans a run with (no transcripts)."""
    for row, check in report.bad:
        out.write(
            f"row {row.index + 1} {_one_line(row.file_id)}: "
            f"[{check.error_type}] {_one_line(check.error_message or '')}\n"
        )
    total, good, bad = len(report.rows), len(report.good), len(report.bad)
    out.write(f"{total} row{'s' if total != 1 else ''}: {good} ok, {bad} bad\n")
    out.write(f"total audio duration: {_duration_line(report)}\n")
    out.write(f"total size: {_size(report.total_bytes)}\n")


def _duration_line(report: ValidationReport) -> str:
    """H:MM:SS and hours, saying how many good files have no readable duration."""
    seconds = report.total_duration_s
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    line = f"{hours}:{rest // 60:02d}:{rest % 60:02d} ({seconds / 3600:.2f} h)"
    known = len(report.good) - report.unknown_duration
    line += f" over {known} file{'s' if known != 1 else ''}"
    if report.unknown_duration:
        line += f"; unknown for {report.unknown_duration} (M4A/WebM: not decodable here)"
    return line


def _size(count: int) -> str:
    """Bytes in binary units for reading, with the exact count for comparing."""
    value, unit = float(count), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    readable = f"{count} bytes" if unit == 0 else f"{value:.1f} {_UNITS[unit]} ({count:,} bytes)"
    return readable


def _one_line(text: str) -> str:
    """Keep each report entry on one line whatever a file name or id contains."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
