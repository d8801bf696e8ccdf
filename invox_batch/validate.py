"""`invox-batch validate`: every local check on a manifest, without a single API call."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .audio import AudioCheck, inspect_audio
from .manifest import ManifestRow, read_manifest

__all__ = ["ValidationReport", "render_report", "validate_manifest"]

_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")
# Over-size files named one a line; the rest as a count.
_OVERSIZE_SHOWN = 10


@dataclass(frozen=True)
class ValidationReport:
    """Each manifest row with its local check; totals count each unique audio a run would send
    once (``audio`` names each good row's audio: its sha256, or its location when unique)."""

    rows: list[tuple[ManifestRow, AudioCheck]]
    max_upload_bytes: int | None = None
    audio: dict[int, str] = field(default_factory=dict)  # row index -> audio identity

    @property
    def bad(self) -> list[tuple[ManifestRow, AudioCheck]]:
        """Rows a run would fail locally, without paying for them."""
        return [(row, check) for row, check in self.rows if not check.ok]

    @property
    def good(self) -> list[tuple[ManifestRow, AudioCheck]]:
        """Rows a run would upload."""
        return [(row, check) for row, check in self.rows if check.ok]

    @property
    def unique(self) -> list[AudioCheck]:
        """One check per distinct audio among the good rows: a run uploads and pays for each once."""
        seen: dict[str, AudioCheck] = {}
        for row, check in self.good:
            seen.setdefault(self.audio.get(row.index, f"row:{row.index}"), check)
        return list(seen.values())

    @property
    def duplicates(self) -> int:
        """Good rows whose audio another good row already has."""
        return len(self.good) - len(self.unique)

    @property
    def total_duration_s(self) -> float:
        """Audio a run would pay for: each unique audio once, over those with a readable duration."""
        return sum(check.duration_s or 0.0 for check in self.unique)

    @property
    def total_bytes(self) -> int:
        """Bytes a run would upload (each unique audio once)."""
        return sum(check.bytes or 0 for check in self.unique)

    @property
    def unknown_duration(self) -> int:
        """Unique audio whose duration we cannot read (M4A, WebM), so the total undercounts."""
        return sum(check.duration_s is None for check in self.unique)

    @property
    def oversize(self) -> list[tuple[ManifestRow, AudioCheck]]:
        """Good rows over the upload size limit: the provider may refuse them."""
        limit = self.max_upload_bytes
        return [(r, c) for r, c in self.good if limit is not None and (c.bytes or 0) > limit]


def validate_manifest(
    source: str,
    mime_types: Mapping[str, str],
    spool_dir: Path,
    *,
    workers: int = 8,
    max_upload_bytes: int | None = None,
) -> ValidationReport:
    """Check every row as a run would, minus the API (and hashing, but for files of equal size,
    which may be one audio twice); raises ManifestError."""
    manifest = read_manifest(source)

    def check(row: ManifestRow) -> AudioCheck:
        result = inspect_audio(row, mime_types, spool_dir, hash_content=False)
        return _drop_spooled(result, spool_dir)

    # The work is I/O bound, so a few files at a time.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checks = list(pool.map(check, manifest.rows))
        rows = list(zip(manifest.rows, checks, strict=True))
        audio = _audio_identities(rows, pool)
    return ValidationReport(rows, max_upload_bytes, audio)


def _audio_identities(
    rows: list[tuple[ManifestRow, AudioCheck]], pool: ThreadPoolExecutor
) -> dict[int, str]:
    """Each good row's audio: its sha256 when known or when another file has its size (only
    those are hashed), else its location (a file of unique size is unique audio)."""
    good = [(row, check) for row, check in rows if check.ok]
    audio = {row.index: f"at:{row.location}" for row, _ in good}
    files = {row.location: check for row, check in good if check.sha256 is None}
    sizes = Counter(check.bytes for check in files.values())
    to_hash = [
        (location, check.local_path)
        for location, check in files.items()
        if check.local_path is not None and sizes[check.bytes] > 1
    ]
    hashed = pool.map(_sha256, [path for _, path in to_hash])
    digests = dict(zip([location for location, _ in to_hash], hashed, strict=True))
    for row, check in good:
        audio[row.index] = check.sha256 or digests.get(row.location, audio[row.index])
    return audio


def _sha256(path: Path) -> str:
    """A local file's sha256, or its path when it can no longer be read (it is then not merged)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return f"at:{path}"
    return digest.hexdigest()


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
    _render_oversize(report, out)


def _render_oversize(report: ValidationReport, out: TextIO) -> None:
    """A warning per file over INVOX_MAX_UPLOAD_BYTES (a screenful, then a count): not a failure."""
    over = report.oversize
    limit = _size(report.max_upload_bytes or 0)
    for row, check in over[:_OVERSIZE_SHOWN]:
        out.write(
            f"warning: row {row.index + 1} {_one_line(row.file_id)}: {_size(check.bytes or 0)} "
            f"is over INVOX_MAX_UPLOAD_BYTES ({limit}); the provider may refuse it\n"
        )
    if len(over) > _OVERSIZE_SHOWN:
        out.write(f"warning: ... and {len(over) - _OVERSIZE_SHOWN} more files over {limit}\n")


def _duration_line(report: ValidationReport) -> str:
    """H:MM:SS and hours, saying how many good files have no readable duration."""
    seconds = report.total_duration_s
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    line = f"{hours}:{rest // 60:02d}:{rest % 60:02d} ({seconds / 3600:.2f} h)"
    known = len(report.unique) - report.unknown_duration
    line += f" over {known} file{'s' if known != 1 else ''}"
    if report.unknown_duration:
        line += f"; unknown for {report.unknown_duration} (M4A/WebM: not decodable here)"
    if report.duplicates:
        line += f"; {_duplicates(report.duplicates)}"
    return line


def _duplicates(count: int) -> str:
    """How many rows repeat an audio another row has, which totals and costs count once."""
    return f"{count} duplicate row{'s' if count != 1 else ''} of the same audio counted once"


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
