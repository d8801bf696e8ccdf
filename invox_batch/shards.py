"""Slicing a large manifest into shards: which rows each child run of a fan-out handles."""

from __future__ import annotations

import dataclasses

from .manifest import Manifest

__all__ = ["parse_shard", "shard_bounds", "shard_count", "take_shard"]


def parse_shard(shard: str) -> tuple[int, int] | None:
    """``"3/8"`` → ``(3, 8)`` (1-based); empty → None (the whole manifest)."""
    if not shard:
        return None
    number, _, count = shard.partition("/")
    if not (number.isdigit() and count.isdigit()) or not 1 <= int(number) <= int(count):
        raise ValueError(f"shard must look like '3/8' (1 <= shard <= count), got {shard!r}")
    return int(number), int(count)


def shard_count(rows: int, shard_size: int) -> int:
    """How many shards of at most ``shard_size`` rows cover the manifest."""
    return max(1, -(-rows // shard_size))


def shard_bounds(rows: int, number: int, count: int) -> tuple[int, int]:
    """Row slice ``[start, end)`` of shard ``number`` of ``count``: even, contiguous, covering."""
    return (number - 1) * rows // count, number * rows // count


def take_shard(manifest: Manifest, shard: str) -> Manifest:
    """The rows this run handles; row indexes stay those of the whole manifest."""
    parsed = parse_shard(shard)
    if parsed is None:
        return manifest
    start, end = shard_bounds(len(manifest.rows), *parsed)
    return dataclasses.replace(manifest, rows=manifest.rows[start:end])
