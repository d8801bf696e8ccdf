"""The local-check cache: a file unchanged since a run is not read again; any change is."""

from __future__ import annotations

import os
from pathlib import Path

from invox_batch.audio import inspect_audio
from invox_batch.checks import CheckCache
from invox_batch.manifest import ManifestRow

from ..flow_helpers import make_wav

MIME = {".wav": "audio/wav"}


def row(path: Path, mime_type: str | None = None) -> ManifestRow:
    return ManifestRow(0, "f0", path.name, str(path), mime_type, {}, None)


def remembered(tmp_path: Path, wav: Path) -> tuple[CheckCache, str | None]:
    """A cache that has seen ``wav`` checked and was saved and loaded back."""
    cache = CheckCache.load(tmp_path / "state" / "audio-checks.json")
    key = cache.key(row(wav), MIME)
    cache.put(key, inspect_audio(row(wav), MIME, tmp_path / "spool"))
    cache.save()
    return CheckCache.load(cache.path), key


def test_an_unchanged_file_is_answered_from_the_cache_and_names_no_path(tmp_path: Path) -> None:
    wav = make_wav(tmp_path / "secret-name.wav", 1)
    cache, key = remembered(tmp_path, wav)
    fresh = inspect_audio(row(wav), MIME, tmp_path / "spool")
    assert cache.get(cache.key(row(wav), MIME), row(wav)) == fresh
    assert key is not None and "secret-name" not in cache.path.read_text()


def test_a_rewritten_file_or_another_declared_type_is_checked_again(tmp_path: Path) -> None:
    wav = make_wav(tmp_path / "a.wav", 1)
    cache, _ = remembered(tmp_path, wav)
    assert cache.get(cache.key(row(wav, "audio/x-wav"), MIME), row(wav)) is None
    make_wav(wav, 2)  # same name and size, new content
    os.utime(wav, ns=(0, 0))
    assert cache.get(cache.key(row(wav), MIME), row(wav)) is None


def test_failed_checks_remote_rows_and_a_corrupt_cache_are_not_trusted(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    cache = CheckCache.load(tmp_path / "audio-checks.json")
    key = cache.key(row(empty), MIME)
    cache.put(key, inspect_audio(row(empty), MIME, tmp_path / "spool"))
    assert cache.get(key, row(empty)) is None
    remote = ManifestRow(0, "f", "x.wav", "s3://bucket/x.wav", None, {}, None)
    assert cache.key(remote, MIME) is None
    cache.path.write_text("{not json")
    assert CheckCache.load(cache.path).get(key, row(empty)) is None
