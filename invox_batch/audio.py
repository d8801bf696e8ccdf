"""Local checks on one manifest row's audio, so that no upload is ever paid for garbage."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal, TypeVar

import fsspec
import soundfile

from invox import ACCEPTED_MIME_TYPES, DEFAULT_MIME_TYPES

from .errors import ErrorType
from .files import make_dirs
from .manifest import ManifestRow

__all__ = [
    "ACCEPTED_MIME_TYPES",
    "CHUNK_BYTES",
    "LARGE_FILE_BYTES",
    "AudioCheck",
    "detect_mime_type",
    "inspect_audio",
    "is_uri",
]


CHUNK_BYTES = 1024 * 1024
LARGE_FILE_BYTES = 256 * 1024  # hashed in chunks from this size, and its checks worth threads
_HEAD_BYTES = 4096

# Families the API accepts, keyed by the extension whose configured mime type they are sent as.
_FAMILY_MIME = {
    ext: DEFAULT_MIME_TYPES[ext] for ext in (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".webm")
}
_SNDFILE_FAMILY = {"WAV": ".wav", "WAVEX": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3"}
_M4A_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
T = TypeVar("T")


@dataclass(frozen=True)
class AudioCheck:
    """What local checks learnt about a row's audio (as far as they got); uploadable when ok."""

    local_path: Path | None
    sha256: str | None
    bytes: int | None
    mime_type: str | None
    duration_s: float | None
    error_type: ErrorType | None
    error_message: str | None

    @property
    def ok(self) -> bool:
        """True when the row passed every local check and can be uploaded."""
        return self.error_type is None


@dataclass(frozen=True)
class _Content:
    """What the bytes are: accepted audio, an MP4 of unknown content, a refused format, or junk."""

    kind: Literal["audio", "mp4", "unsupported", "not_audio"]
    family: str | None = None
    duration_s: float | None = None
    detail: str = ""


class _Rejected(Exception):
    """A failed check, carrying the facts gathered before it failed."""

    def __init__(
        self,
        error_type: ErrorType,
        message: str,
        *,
        size: int | None = None,
        sha256: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type: ErrorType = error_type
        self.message = message
        self.size = size
        self.sha256 = sha256

    def check(self) -> AudioCheck:
        """The AudioCheck a row reports when this check failed."""
        return AudioCheck(None, self.sha256, self.size, None, None, self.error_type, self.message)


def detect_mime_type(path: Path, mime_types: Mapping[str, str] | None = None) -> str | None:
    """Contract mime type from content alone, never the name: an upload must match its bytes."""
    # libsndfile reads WAV/FLAC/OGG/MP3 (proving them decodable); M4A and WebM, which it cannot
    # read, are recognised by magic bytes.
    # mime_types (extension → mime, as InvoxSettings().mime_types) labels each family, so MP3
    # follows the configured audio/mp3 or audio/mpeg.
    content = _sniff(path)
    if content.kind != "audio" or content.family is None:
        return None
    return _family_mime(content.family, mime_types or {})


def inspect_audio(
    row: ManifestRow,
    mime_types: Mapping[str, str],
    spool_dir: Path,
    *,
    hash_content: bool = True,
) -> AudioCheck:
    """Every local check before paying for an upload; a failure is a returned row, never raised."""
    # hash_content=False skips hashing local files (validate); a remote file's hash comes free
    # with its spooled copy. A failed remote row's spooled copy is deleted (local_path None).
    try:
        return _inspect(row, mime_types, spool_dir, hash_content)
    except _Rejected as rejected:
        return rejected.check()


def _inspect(
    row: ManifestRow, mime_types: Mapping[str, str], spool_dir: Path, hash_content: bool
) -> AudioCheck:
    """inspect_audio's checks in order, raising _Rejected at the first failure."""
    if row.problem is not None:
        raise _Rejected(ErrorType.BAD_MANIFEST_ROW, row.problem)
    accepted = ACCEPTED_MIME_TYPES | set(mime_types.values())
    declared = _declared_mime(row.mime_type, accepted)
    shown = _show(row.location)
    if not is_uri(row.location):
        path = Path(row.location)
        size = _stat_local(path, shown, row.audio_path)
        return _examine(path, size, None, row, shown, mime_types, declared, hash_content)
    path, size, digest = _spool(row.location, spool_dir, shown)
    try:
        return _examine(path, size, digest, row, shown, mime_types, declared, hash_content)
    except _Rejected:
        path.unlink(missing_ok=True)
        raise


def _examine(
    path: Path,
    size: int,
    digest: str | None,
    row: ManifestRow,
    shown: str,
    mime_types: Mapping[str, str],
    declared: str | None,
    hash_content: bool,
) -> AudioCheck:
    """The checks on the bytes themselves, once they are in a local file."""
    if size == 0:
        raise _Rejected(
            ErrorType.EMPTY_FILE,
            f"audio file is empty (0 bytes): {shown}; re-export or re-copy it",
            size=0,
        )
    content = _read_or_reject(lambda: _sniff(path), shown, size, digest)
    mime = _choose_mime(content, declared, row, mime_types, shown, size, digest)
    if content.duration_s == 0:
        raise _Rejected(
            ErrorType.EMPTY_FILE,
            f"audio file holds no samples (0 s of audio): {shown}; re-export it",
            size=size,
            sha256=digest,
        )
    if digest is None and hash_content:
        digest = _read_or_reject(lambda: _sha256(path, size), shown, size, None)
    return AudioCheck(path, digest, size, mime, content.duration_s, None, None)


# --- where the bytes are -----------------------------------------------------------------------


def is_uri(location: str) -> bool:
    """ManifestRow.location is an absolute local path unless it is an fsspec URI."""
    return _URI.match(location) is not None


def _show(text: str) -> str:
    """A path fit for a one-line message: no query string (signatures), no control characters."""
    if "://" in text and "?" in text:
        text = text.split("?", 1)[0]
    if text.isprintable():  # nearly every path: no copy character by character
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _stat_local(path: Path, shown: str, audio_path: str) -> int:
    """The size of a local regular file, or the reason it cannot be used."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise _Rejected(ErrorType.FILE_MISSING, _missing_message(path, shown, audio_path)) from None
    except PermissionError:
        raise _Rejected(
            ErrorType.UNREADABLE,
            f"cannot reach audio file {shown}: permission denied on a folder above it "
            "(grant the user running invox-batch access)",
        ) from None
    except OSError as exc:
        raise _Rejected(
            ErrorType.UNREADABLE, f"cannot access audio file {shown}: {exc.strerror or exc}"
        ) from None
    if stat.S_ISDIR(info.st_mode):
        raise _Rejected(
            ErrorType.NOT_A_FILE,
            f"audio_path is a directory, not an audio file: {shown} "
            "(list each file on its own row)",
        )
    if not stat.S_ISREG(info.st_mode):
        raise _Rejected(
            ErrorType.NOT_A_FILE,
            f"audio_path is not a regular file (a pipe, socket or device): {shown}",
        )
    return info.st_size


def _missing_message(path: Path, shown: str, audio_path: str) -> str:
    """Why a path does not exist, with the hint that most often fixes it."""
    if path.is_symlink():
        return f"audio file is a broken symbolic link: {shown} (its target does not exist)"
    spaces = " (note: audio_path has leading or trailing spaces)"
    hint = spaces if audio_path != audio_path.strip() else ""
    return f"audio file not found: {shown} (check audio_path in the manifest){hint}"


def _spool(uri: str, spool_dir: Path, shown: str) -> tuple[Path, int, str]:
    """Copy a remote file into spool_dir (0600), hashing on the way; (path, size, sha256)."""
    try:
        fs, remote = fsspec.core.url_to_fs(uri)
        info = fs.info(remote)
    except FileNotFoundError:
        raise _Rejected(
            ErrorType.FILE_MISSING,
            f"audio file not found: {shown} (check audio_path in the manifest)",
        ) from None
    except PermissionError:
        raise _Rejected(
            ErrorType.UNREADABLE, f"cannot read audio file {shown}: permission denied"
        ) from None
    except Exception as exc:  # each fsspec backend raises its own exception types
        raise _Rejected(
            ErrorType.UNREADABLE, f"cannot read audio file {shown}: {type(exc).__name__}: {exc}"
        ) from None
    if info.get("type") == "directory":
        raise _Rejected(
            ErrorType.NOT_A_FILE, f"audio_path is a directory, not an audio file: {shown}"
        )
    make_dirs(spool_dir.parent)  # <out>/.state as the output's setting says
    make_dirs(spool_dir, private=True)  # copies of medical audio: owner-only whatever the setting
    handle, name = tempfile.mkstemp(dir=spool_dir, prefix="audio-")
    target = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, fs.open(remote, "rb") as source:
            size, digest = _copy_hashing(source, out)
    except Exception as exc:  # as above: a per-row failure must not stop the batch
        target.unlink(missing_ok=True)
        raise _Rejected(
            ErrorType.UNREADABLE, f"cannot read audio file {shown}: {type(exc).__name__}: {exc}"
        ) from None
    return target, size, digest


def _copy_hashing(source: IO[bytes], out: IO[bytes]) -> tuple[int, str]:
    """Stream source into out in 1 MiB chunks; (bytes copied, sha256)."""
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK_BYTES):
        digest.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _sha256(path: Path, size: int) -> str:
    """sha256 of a file: a small one read whole, a large one in 1 MiB chunks into one reused
    buffer (hashlib releases the GIL); a 1 MiB buffer per small file cost more than hashing it."""
    if size < LARGE_FILE_BYTES:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def _read_or_reject(read: Callable[[], T], shown: str, size: int, digest: str | None) -> T:
    """Run a read of the file, turning OS errors into an 'unreadable' row."""
    try:
        return read()
    except PermissionError:
        raise _Rejected(
            ErrorType.UNREADABLE,
            f"cannot read audio file {shown}: permission denied "
            "(make it readable by the user running invox-batch)",
            size=size,
            sha256=digest,
        ) from None
    except OSError as exc:
        raise _Rejected(
            ErrorType.UNREADABLE,
            f"cannot read audio file {shown}: {exc.strerror or exc}",
            size=size,
            sha256=digest,
        ) from None


# --- what the bytes are ------------------------------------------------------------------------


def _sniff(path: Path) -> _Content:
    """Classify a file by content alone: magic bytes first, then libsndfile."""
    with path.open("rb", buffering=0) as handle:
        head = handle.read(_HEAD_BYTES)
        magic = _sniff_magic(head)
        if magic is not None:
            return magic
        handle.seek(0)
        # A descriptor, not a name: given a name, libsndfile falls back on the extension (any
        # bytes named .vox open as raw audio); nor a file object, read through Python callbacks.
        try:
            with soundfile.SoundFile(handle.fileno(), closefd=False) as info:
                found = (info.format, info.format_info, info.frames, info.samplerate)
        except (soundfile.SoundFileError, RuntimeError, ValueError, TypeError) as exc:
            return _unrecognised(head, getattr(exc, "error_string", None) or str(exc))
    return _from_sndfile(str(found[0]), str(found[1]), int(found[2]), int(found[3]))


def _sniff_magic(head: bytes) -> _Content | None:
    """MP4/M4A and Matroska/WebM, which libsndfile cannot read, by their headers."""
    if head[4:8] == b"ftyp":
        box = int.from_bytes(head[0:4], "big")
        brands = [head[8:12], *(head[i : i + 4] for i in range(16, min(box, len(head)) - 3, 4))]
        if _M4A_BRANDS.intersection(brands):
            return _Content("audio", ".m4a")
        return _Content("mp4", detail=head[8:12].decode("latin-1").strip())
    if head[:4] == b"\x1a\x45\xdf\xa3":
        if b"webm" in head[:256]:
            return _Content("audio", ".webm")
        return _Content("unsupported", detail="Matroska (.mka/.mkv)")
    return None


def _from_sndfile(fmt: str, description: str, frames: int, samplerate: int) -> _Content:
    """Classify what libsndfile decoded; duration when its header gives a believable one."""
    duration = frames / samplerate if samplerate > 0 and 0 <= frames < 2**62 else None
    family = _SNDFILE_FAMILY.get(fmt)
    if family is None:
        return _Content("unsupported", detail=description or fmt)
    return _Content("audio", family, duration)


def _unrecognised(head: bytes, reason: str) -> _Content:
    """Name what undecodable bytes look like, so the message says what to do about them."""
    looks_like = {
        b"RIFF": "WAV" if head[8:12] == b"WAVE" else None,
        b"fLaC": "FLAC",
        b"OggS": "Ogg",
        b"ID3": "MP3",
    }
    for magic, name in looks_like.items():
        if name and head.startswith(magic):
            return _Content(
                "not_audio", detail=f"it looks like {name} but cannot be decoded ({reason})"
            )
    if head[:1] == b"\xff" and len(head) > 1 and head[1] & 0xF6 == 0xF0:
        return _Content("unsupported", detail="raw AAC (ADTS)")
    if head.startswith(b"#!AMR"):
        return _Content("unsupported", detail="AMR")
    if _is_text(head):
        return _Content("not_audio", detail="it contains text, not audio")
    return _Content("not_audio", detail="no WAV, FLAC, Ogg, MP3, M4A or WebM header")


def _is_text(head: bytes) -> bool:
    """True when the first bytes are printable UTF-8 (an error page or a CSV saved as .wav)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return bool(text) and all(ch.isprintable() or ch in "\r\n\t" for ch in text)


# --- which mime type to send -------------------------------------------------------------------


def _family_mime(family: str, mime_types: Mapping[str, str]) -> str:
    """The configured label of an audio family (e.g. .mp3 → audio/mpeg if so configured)."""
    return mime_types.get(family, _FAMILY_MIME[family])


def _declared_mime(value: str | None, accepted: frozenset[str] | set[str]) -> str | None:
    """The manifest's mime_type cell, normalised, if it is one the API accepts."""
    if value is None:
        return None
    mime = value.split(";")[0].strip().lower()
    if mime not in accepted:
        raise _Rejected(
            ErrorType.UNSUPPORTED_TYPE,
            f"mime_type {value!r} in the manifest is not accepted by the Invox API "
            f"(accepted: {', '.join(sorted(accepted))}); fix it, or leave it empty to detect it",
        )
    return mime


def _choose_mime(
    content: _Content,
    declared: str | None,
    row: ManifestRow,
    mime_types: Mapping[str, str],
    shown: str,
    size: int,
    digest: str | None,
) -> str:
    """Content decides whether it is audio at all; then manifest cell > content > extension."""
    if content.kind == "not_audio":
        raise _Rejected(
            ErrorType.NOT_AUDIO,
            f"not a recognisable audio file: {shown} ({content.detail}), "
            "whatever its extension says",
            size=size,
            sha256=digest,
        )
    if content.kind == "unsupported":
        raise _Rejected(
            ErrorType.UNSUPPORTED_TYPE,
            f"{shown} is {content.detail} audio, which the Invox API does not accept; "
            "convert it to WAV, FLAC, MP3, OGG, M4A or WebM",
            size=size,
            sha256=digest,
        )
    if declared is not None:
        return declared
    if content.family is not None:
        return _family_mime(content.family, mime_types)
    by_extension = mime_types.get(PurePosixPath(row.location).suffix.lower())
    if by_extension is not None and by_extension == _family_mime(".m4a", mime_types):
        return by_extension
    raise _Rejected(
        ErrorType.UNSUPPORTED_TYPE,
        f"{shown} is an MP4 file (brand '{content.detail}') that may hold video; if it is "
        "audio-only, name it .m4a or set mime_type to audio/m4a in the manifest",
        size=size,
        sha256=digest,
    )
