"""inspect_audio and detect_mime_type on real files: content wins over names, failures are rows."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import soundfile

from invox import DEFAULT_MIME_TYPES
from invox_batch.audio import AudioCheck, detect_mime_type, inspect_audio
from invox_batch.manifest import ManifestRow, read_manifest

from ..conftest import SAMPLES

MIME = dict(DEFAULT_MIME_TYPES)
RATE = 8000


def audio_bytes(fmt: str, seconds: float = 0.25, subtype: str | None = None) -> bytes:
    """A short tone encoded by libsndfile in the given container."""
    tone = (0.1 * np.sin(np.arange(int(RATE * seconds)) * 0.3)).astype("float32")
    buffer = io.BytesIO()
    soundfile.write(buffer, tone, RATE, format=fmt, subtype=subtype)
    return buffer.getvalue()


def m4a_bytes(major: bytes = b"M4A ", compatible: tuple[bytes, ...] = (b"M4A ", b"isom")) -> bytes:
    """An MP4 'ftyp' box as AAC recorders write it, followed by filler."""
    brands = major + b"\x00\x00\x02\x00" + b"".join(compatible)
    return (8 + len(brands)).to_bytes(4, "big") + b"ftyp" + brands + b"\x00\x00\x00\x08free" * 50


def ebml_bytes(doctype: bytes) -> bytes:
    """An EBML header (WebM or Matroska) followed by filler."""
    return (
        b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82"
        + bytes([0x80 | len(doctype)])
        + doctype
        + b"\x00" * 200
    )


def write(path: Path, data: bytes) -> Path:
    """Create path (and its folder) holding data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def row_for(
    location: Path | str, *, mime_type: str | None = None, problem: str | None = None
) -> ManifestRow:
    """A manifest row pointing at location, as read_manifest would build it."""
    return ManifestRow(0, "f", str(location), str(location), mime_type, {}, problem)


def check(tmp_path: Path, location: Path | str, **row: str | None) -> AudioCheck:
    """inspect_audio with the default extension map, spooling into tmp_path/spool."""
    return inspect_audio(row_for(location, **row), MIME, tmp_path / "spool")


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A private folder on fsspec's in-process memory filesystem, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/a-{uuid.uuid4().hex}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


# --- good audio --------------------------------------------------------------------------------


def test_committed_samples_all_pass_with_content_types_and_durations(tmp_path: Path) -> None:
    manifest = read_manifest(str(SAMPLES / "manifest.csv"))
    checks = [inspect_audio(row, MIME, tmp_path) for row in manifest.rows]
    assert all(c.ok for c in checks), [c.error_message for c in checks]
    assert [c.mime_type for c in checks] == ["audio/wav"] * 6 + ["audio/flac", "audio/ogg"]
    assert all(c.duration_s and 2 < c.duration_s < 10 for c in checks)
    first = checks[0]
    assert first.local_path == SAMPLES.resolve() / "visit-001.wav"
    assert first.sha256 == hashlib.sha256(first.local_path.read_bytes()).hexdigest()
    assert first.bytes == first.local_path.stat().st_size
    assert (first.error_type, first.error_message) == (None, None)


@pytest.mark.parametrize(
    ("fmt", "subtype", "name", "mime"),
    [
        ("WAV", None, "a.wav", "audio/wav"),
        ("WAVEX", None, "b.wav", "audio/wav"),
        ("FLAC", None, "c.flac", "audio/flac"),
        ("OGG", "VORBIS", "d.ogg", "audio/ogg"),
        ("OGG", "OPUS", "e.opus", "audio/ogg"),
        ("MP3", None, "f.mp3", "audio/mp3"),
    ],
)
def test_libsndfile_formats(
    tmp_path: Path, fmt: str, subtype: str | None, name: str, mime: str
) -> None:
    path = write(tmp_path / name, audio_bytes(fmt, 0.5, subtype))
    result = check(tmp_path, path)
    assert result.ok
    assert result.mime_type == mime
    assert result.duration_s == pytest.approx(0.5, abs=0.06)
    assert detect_mime_type(path) == mime


def test_content_wins_over_the_extension(tmp_path: Path) -> None:
    flac_as_wav = write(tmp_path / "really-flac.wav", audio_bytes("FLAC"))
    wav_as_txt = write(tmp_path / "notes.txt", audio_bytes("WAV"))
    assert check(tmp_path, flac_as_wav).mime_type == "audio/flac"
    assert check(tmp_path, wav_as_txt).mime_type == "audio/wav"


def test_configured_labels_are_followed(tmp_path: Path) -> None:
    path = write(tmp_path / "a.mp3", audio_bytes("MP3"))
    mapping = {**MIME, ".mp3": "audio/mpeg"}
    assert inspect_audio(row_for(path), mapping, tmp_path).mime_type == "audio/mpeg"
    assert detect_mime_type(path, mapping) == "audio/mpeg"


def test_manifest_mime_type_wins_and_is_normalised(tmp_path: Path) -> None:
    path = write(tmp_path / "a.wav", audio_bytes("WAV"))
    assert check(tmp_path, path, mime_type="audio/x-wav").mime_type == "audio/x-wav"
    assert check(tmp_path, path, mime_type=" Audio/WAV; codecs=1 ").mime_type == "audio/wav"


def test_m4a_and_webm_by_magic_bytes(tmp_path: Path) -> None:
    m4a = check(tmp_path, write(tmp_path / "a.m4a", m4a_bytes()))
    assert (m4a.ok, m4a.mime_type, m4a.duration_s) == (True, "audio/m4a", None)
    renamed = write(tmp_path / "voice-memo.bin", m4a_bytes(b"mp42", (b"isom", b"M4A ")))
    assert check(tmp_path, renamed).mime_type == "audio/m4a"
    webm = check(tmp_path, write(tmp_path / "a.webm", ebml_bytes(b"webm")))
    assert (webm.ok, webm.mime_type) == (True, "audio/webm")


def test_generic_mp4_needs_the_extension_or_the_manifest_to_vouch(tmp_path: Path) -> None:
    generic = m4a_bytes(b"isom", (b"isom", b"mp41"))
    assert check(tmp_path, write(tmp_path / "phone.m4a", generic)).mime_type == "audio/m4a"
    as_mp4 = write(tmp_path / "phone.mp4", generic)
    refused = check(tmp_path, as_mp4)
    assert refused.error_type == "unsupported_type"
    assert "may hold video" in (refused.error_message or "")
    assert check(tmp_path, as_mp4, mime_type="audio/m4a").mime_type == "audio/m4a"
    assert detect_mime_type(as_mp4) is None


def test_sha256_is_streamed_and_optional(tmp_path: Path) -> None:
    path = write(tmp_path / "a.flac", audio_bytes("FLAC"))
    hashed = check(tmp_path, path)
    assert hashed.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    quick = inspect_audio(row_for(path), MIME, tmp_path, hash_content=False)
    assert quick.ok and quick.sha256 is None and quick.bytes == path.stat().st_size


def test_large_file_is_never_read_into_memory(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    with soundfile.SoundFile(path, "w", RATE, 1, format="WAV", subtype="PCM_16") as out:
        silence = np.zeros(RATE * 60, dtype="int16")
        for _ in range(25):  # 25 minutes, 24 MB
            out.write(silence)
    tracemalloc.start()
    result = check(tmp_path, path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.ok and result.duration_s == pytest.approx(1500)
    assert peak < 4 * 1024 * 1024
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_names_with_spaces_and_non_ascii(tmp_path: Path) -> None:
    path = write(tmp_path / "consulta médica" / "grabación 01 ñ.wav", audio_bytes("WAV"))
    assert check(tmp_path, path).ok
    csv_path = tmp_path / "consulta médica" / "m.csv"
    csv_path.write_text("audio_path\ngrabación 01 ñ.wav\n" + path.as_uri() + "\n", encoding="utf-8")
    rows = read_manifest(str(csv_path)).rows
    assert [inspect_audio(row, MIME, tmp_path).ok for row in rows] == [True, True]


# --- refusals ----------------------------------------------------------------------------------


def test_bad_manifest_row_passes_its_problem_through(tmp_path: Path) -> None:
    result = check(tmp_path, "", problem="audio_path is empty; fill it in")
    assert (result.error_type, result.error_message) == (
        "bad_manifest_row",
        "audio_path is empty; fill it in",
    )
    assert not result.ok


def test_missing_file(tmp_path: Path) -> None:
    result = check(tmp_path, tmp_path / "nope.wav")
    assert result.error_type == "file_missing"
    assert result.error_message == (
        f"audio file not found: {tmp_path / 'nope.wav'} (check audio_path in the manifest)"
    )
    assert result.local_path is None and result.mime_type is None


def test_missing_file_with_stray_spaces_says_so(tmp_path: Path) -> None:
    row = ManifestRow(0, "f", " a.wav", str(tmp_path / " a.wav"), None, {}, None)
    message = inspect_audio(row, MIME, tmp_path).error_message or ""
    assert "leading or trailing spaces" in message


def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link.wav"
    link.symlink_to(tmp_path / "gone.wav")
    result = check(tmp_path, link)
    assert result.error_type == "file_missing"
    assert "broken symbolic link" in (result.error_message or "")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    folder = tmp_path / "recordings.wav"
    folder.mkdir()
    result = check(tmp_path, folder)
    assert result.error_type == "not_a_file"
    assert "is a directory" in (result.error_message or "")


def test_fifo_is_not_a_file_and_is_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    assert check(tmp_path, fifo).error_type == "not_a_file"


def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path / "locked.wav", audio_bytes("WAV"))
    path.chmod(0)
    try:
        path.open("rb").close()
    except PermissionError:
        result = check(tmp_path, path)
        assert result.error_type == "unreadable"
        assert result.error_message == (
            f"cannot read audio file {path}: permission denied "
            "(make it readable by the user running invox-batch)"
        )
    else:
        pytest.skip("running with privileges that read any file (root): chmod cannot deny reads")
    finally:
        path.chmod(0o600)


def test_unreachable_folder(tmp_path: Path) -> None:
    path = write(tmp_path / "locked" / "a.wav", audio_bytes("WAV"))
    path.parent.chmod(0)
    try:
        path.stat()
    except PermissionError:
        result = check(tmp_path, path)
        assert result.error_type == "unreadable"
        assert "permission denied on a folder above it" in (result.error_message or "")
    else:
        pytest.skip("running with privileges that read any file (root): chmod cannot deny reads")
    finally:
        path.parent.chmod(0o700)


def test_empty_file_and_zero_samples(tmp_path: Path) -> None:
    empty = check(tmp_path, write(tmp_path / "empty.wav", b""))
    assert (empty.error_type, empty.bytes) == ("empty_file", 0)
    assert "empty (0 bytes)" in (empty.error_message or "")
    silent = check(tmp_path, write(tmp_path / "header-only.wav", audio_bytes("WAV", 0)))
    assert silent.error_type == "empty_file"
    assert "no samples" in (silent.error_message or "")


def test_garbage_and_text_named_wav_are_not_audio(tmp_path: Path) -> None:
    garbage = check(tmp_path, write(tmp_path / "garbage.wav", os.urandom(20_000)))
    assert garbage.error_type == "not_audio"
    assert garbage.bytes == 20_000
    assert "whatever its extension says" in (garbage.error_message or "")
    page = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>"
    text = check(tmp_path, write(tmp_path / "page.wav", page))
    assert text.error_type == "not_audio"
    assert "contains text" in (text.error_message or "")


def test_checks_of_good_and_undecodable_files_leave_no_descriptor_open(tmp_path: Path) -> None:
    good = write(tmp_path / "good.wav", audio_bytes("WAV"))
    cut = write(tmp_path / "cut.wav", audio_bytes("WAV")[:30])
    garbage = write(tmp_path / "garbage.wav", os.urandom(5_000))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        assert [check(tmp_path, p).error_type for p in (good, cut, garbage)] == [
            None,
            "not_audio",
            "not_audio",
        ]
    assert len(os.listdir("/proc/self/fd")) == before


def test_truncated_header_looks_like_but_cannot_be_decoded(tmp_path: Path) -> None:
    result = check(tmp_path, write(tmp_path / "cut.wav", audio_bytes("WAV")[:30]))
    assert result.error_type == "not_audio"
    assert "looks like WAV but cannot be decoded" in (result.error_message or "")


def test_extension_alone_never_makes_audio(tmp_path: Path) -> None:
    # libsndfile opens any bytes named .vox as headerless audio when given a file name.
    vox = write(tmp_path / "noise.vox", os.urandom(4096))
    assert detect_mime_type(vox) is None
    assert check(tmp_path, vox).error_type == "not_audio"


@pytest.mark.parametrize(
    ("data", "name", "said"),
    [
        (audio_bytes("AIFF"), "a.wav", "AIFF"),
        (audio_bytes("AU"), "a.au", "AU"),
        (audio_bytes("RF64"), "a.wav", "RF64"),
        (ebml_bytes(b"matroska"), "a.webm", "Matroska"),
        (b"\xff\xf1\x50\x80" + b"\x00" * 400, "a.aac", "AAC"),
    ],
)
def test_recognised_formats_the_api_refuses(
    tmp_path: Path, data: bytes, name: str, said: str
) -> None:
    result = check(tmp_path, write(tmp_path / name, data))
    assert result.error_type == "unsupported_type"
    assert said in (result.error_message or "")
    assert detect_mime_type(tmp_path / name) is None


def test_manifest_mime_type_outside_the_accepted_list(tmp_path: Path) -> None:
    path = write(tmp_path / "a.wav", audio_bytes("WAV"))
    result = check(tmp_path, path, mime_type="video/mp4")
    assert result.error_type == "unsupported_type"
    assert "mime_type 'video/mp4' in the manifest is not accepted" in (result.error_message or "")
    assert "audio/x-wav" in (result.error_message or "")


# --- remote (fsspec) audio ---------------------------------------------------------------------


def test_remote_audio_is_spooled_privately_and_hashed(tmp_path: Path, memory_root: str) -> None:
    data = audio_bytes("FLAC", 0.5)
    uri = f"memory:/{memory_root}/in/a.wav"
    with fsspec.open(uri, "wb") as handle:
        handle.write(data)
    result = check(tmp_path, uri)
    assert result.ok and result.mime_type == "audio/flac"
    assert result.local_path is not None and result.local_path.parent == tmp_path / "spool"
    assert result.local_path.read_bytes() == data
    assert stat.S_IMODE(result.local_path.stat().st_mode) == 0o600
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.duration_s == pytest.approx(0.5)


def test_remote_refusals(tmp_path: Path, memory_root: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{memory_root}/folder/inside.wav", audio_bytes("WAV"))
    fs.pipe(f"{memory_root}/junk.wav", os.urandom(5000))
    missing = check(tmp_path, f"memory:/{memory_root}/none.wav")
    assert missing.error_type == "file_missing"
    assert missing.error_message == (
        f"audio file not found: memory:/{memory_root}/none.wav (check audio_path in the manifest)"
    )
    assert check(tmp_path, f"memory:/{memory_root}/folder").error_type == "not_a_file"
    junk = check(tmp_path, f"memory:/{memory_root}/junk.wav")
    assert (junk.error_type, junk.local_path, junk.bytes) == ("not_audio", None, 5000)
    assert junk.sha256 is not None
    assert list((tmp_path / "spool").iterdir()) == []


def test_memory_manifest_and_audio_end_to_end(tmp_path: Path, memory_root: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{memory_root}/batch/a.wav", audio_bytes("WAV"))
    fs.pipe(f"{memory_root}/batch/sub/b.ogg", audio_bytes("OGG"))
    fs.pipe(
        f"{memory_root}/batch/m.csv", b"audio_path,clinic\na.wav,x\nsub/b.ogg,y\nmissing.wav,z\n"
    )
    manifest = read_manifest(f"memory:/{memory_root}/batch/m.csv")
    results = [inspect_audio(row, MIME, tmp_path) for row in manifest.rows]
    assert [r.mime_type for r in results] == ["audio/wav", "audio/ogg", None]
    assert [r.error_type for r in results] == [None, None, "file_missing"]
