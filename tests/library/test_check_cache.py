"""The local-check cache: a file unchanged since a run is not read again; any change is."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pyarrow as pa

from invox import InvoxSettings
from invox_batch.audio import inspect_audio
from invox_batch.checks import CheckCache, check_all, on_threads
from invox_batch.manifest import Manifest, ManifestRow

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


def test_work_on_threads_keeps_the_items_order_whatever_the_thread_count() -> None:
    items = list(range(200))
    for threads in (1, 3, 8):
        assert asyncio.run(on_threads(items, lambda n: n * n, threads)) == [n * n for n in items]
    assert asyncio.run(on_threads([], lambda n: n, 4)) == []


def test_check_all_answers_every_row_in_order_from_the_cache_or_a_check(tmp_path: Path) -> None:
    wavs = [make_wav(tmp_path / f"a{n}.wav", n) for n in range(6)]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    paths = [*wavs[:3], broken, *wavs[3:]]
    rows = [ManifestRow(i, f"f{i}", p.name, str(p), None, {}, None) for i, p in enumerate(paths)]
    manifest = Manifest("m.csv", rows, pa.schema([]), {}, "0" * 64)
    settings = InvoxSettings(base_url="http://127.0.0.1:9", app_id="a", api_key="k")

    first = asyncio.run(check_all(manifest, settings, tmp_path / "state"))
    again = asyncio.run(check_all(manifest, settings, tmp_path / "state"))  # from the cache

    for checked in (first, again):
        assert [c.row.file_id for c in checked] == [f"f{i}" for i in range(7)]
        assert [c.identity is None for c in checked] == [i == 3 for i in range(7)]
        assert [c.check.sha256 for c in checked] == [c.check.sha256 for c in first]
