"""Sharding's pure parts (slices, keys, aggregation) and the Secret block fallback."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.credentials import with_secret_block
from flows.sharding import (
    aggregate,
    child_parameters,
    shard_key,
    should_fan_out,
    worker_host,
)
from invox import ConfigurationError, InvoxSettings
from invox_batch.manifest import read_manifest
from invox_batch.parameters import Callbacks, Scale, Spend
from invox_batch.shards import parse_shard, shard_bounds, shard_count, take_shard

from ..flow_helpers import audio_set, write_csv_manifest
from ..helpers import clear_env


def test_parse_shard_reads_one_based_slices_and_refuses_nonsense() -> None:
    assert parse_shard("") is None
    assert parse_shard("3/8") == (3, 8)
    for bad in ("0/8", "9/8", "3", "a/b", "3/8/1", "-1/2"):
        with pytest.raises(ValueError, match="shard must look like"):
            parse_shard(bad)


@given(rows=st.integers(1, 5000), size=st.integers(1, 1200))
def test_shards_cover_every_row_once_and_respect_the_size(rows: int, size: int) -> None:
    count = shard_count(rows, size)
    slices = [shard_bounds(rows, n, count) for n in range(1, count + 1)]
    assert slices[0][0] == 0 and slices[-1][1] == rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(slices))
    assert all(0 < end - start <= size for start, end in slices)


def test_only_a_whole_manifest_above_the_threshold_fans_out_from_a_deployment() -> None:
    assert should_fan_out(1001, 1000, "", "deployment-id")
    assert not should_fan_out(1000, 1000, "", "deployment-id")
    assert not should_fan_out(1001, 1000, "2/2", "deployment-id")
    assert not should_fan_out(1001, 1000, "")  # not a deployment run


def test_shard_keys_are_stable_per_parent_and_distinct_per_shard() -> None:
    key = shard_key("ab" * 32, "parent-1", 2, 4)
    assert key == shard_key("ab" * 32, "parent-1", 2, 4)
    others = {shard_key("ab" * 32, "parent-1", 3, 4), shard_key("ab" * 32, "parent-2", 2, 4)}
    others.add(shard_key("cd" * 32, "parent-1", 2, 4))
    assert key not in others and len(others) == 3


def test_take_shard_keeps_the_whole_manifest_row_indexes(tmp_path: Path) -> None:
    manifest = read_manifest(str(write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 5))))
    assert take_shard(manifest, "") is manifest
    parts = [take_shard(manifest, f"{n}/2") for n in (1, 2)]
    assert [[r.index for r in p.rows] for p in parts] == [[0, 1], [2, 3, 4]]
    assert all(p.sha256 == manifest.sha256 for p in parts)


def test_aggregate_sums_the_children() -> None:
    child = {
        "rows": 3,
        "completed": 2,
        "failed": 1,
        "from_cache": 1,
        "unique_audio": 3,
        "error_types": {"timeout": 1},
        "audio_hours": 0.25,
        "api_calls": {"token": 1, "presign": 2, "upload": 2, "status": 5},
    }
    total = aggregate([child, {**child, "error_types": {"provider_error": 1}}])
    assert (total["rows"], total["completed"], total["failed"], total["from_cache"]) == (6, 4, 2, 2)
    assert total["error_types"] == {"provider_error": 1, "timeout": 1}
    assert total["api_calls"] == {"token": 2, "presign": 4, "upload": 4, "status": 10}
    assert total["audio_hours"] == 0.5


def test_worker_host_prefers_the_configured_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOX_BATCH_WORKER_NAME", "worker-7")
    assert worker_host() == "worker-7"
    monkeypatch.delenv("INVOX_BATCH_WORKER_NAME")
    assert worker_host()


@pytest.mark.usefixtures("prefect_harness")
def test_the_api_key_comes_from_the_secret_block_only_when_the_environment_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.blocks.system import Secret

    clear_env(monkeypatch, "INVOX_API_KEY")
    Secret(value="from-the-block").save("invox-api-key", overwrite=True)
    loaded = asyncio.run(with_secret_block(InvoxSettings()))
    assert loaded.api_key.get_secret_value() == "from-the-block"
    assert "from-the-block" not in repr(loaded)

    missing = asyncio.run(with_secret_block(InvoxSettings(), block="no-such-block"))
    assert missing.api_key.get_secret_value() == ""

    monkeypatch.setenv("INVOX_API_KEY", "from-the-env")
    assert asyncio.run(with_secret_block(InvoxSettings())).api_key.get_secret_value() == (
        "from-the-env"
    )


def _child(
    rows: int, number: int, count: int, spend: Spend | None = None, **callbacks: Any
) -> dict[str, Any]:
    """A child's parameters for a parent with these groups (the rest at their defaults)."""
    parent = {"manifest": "m.csv", "out": "out"}
    return child_parameters(
        parent, spend or Spend(), Callbacks(**callbacks), Scale(), rows, number, count
    )


def test_children_share_the_cap_in_proportion_to_their_rows() -> None:
    children = [_child(7, n, 3, Spend(max_audio_hours=10.0)) for n in (1, 2, 3)]
    assert [c["scale"]["shard"] for c in children] == ["1/3", "2/3", "3/3"]
    assert sum(c["spend"]["max_audio_hours"] for c in children) == pytest.approx(10.0)
    assert _child(7, 1, 3)["spend"]["max_audio_hours"] is None
    assert all(c["manifest"] == "m.csv" for c in children)


def test_children_get_a_receiver_port_of_their_own() -> None:
    child = _child(4, 1, 2, callback_listen="127.0.0.1:8766")
    assert child["callbacks"]["callback_listen"] == "127.0.0.1:0"
    assert _child(4, 1, 2, callback_listen="[::1]:8766")["callbacks"]["callback_listen"] == (
        "[::1]:0"
    )
    fixed = {"callback_listen": "0.0.0.0:8766", "callback_url": "https://cb.example/callbacks"}
    with pytest.raises(ConfigurationError, match="invox-batch callbacks"):
        _child(4, 1, 2, **fixed)


def test_aggregate_sums_the_childrens_budgets() -> None:
    budget = {
        "max_audio_hours": 1.0,
        "submitted_audio_hours": 0.75,
        "cap_hours_left": 0.25,
        "not_submitted_files": 2,
        "not_submitted_audio_hours": 0.5,
    }
    total = aggregate([{"budget": budget}, {"budget": budget}, {"budget": None}])["budget"]
    assert total["max_audio_hours"] == 2.0 and total["not_submitted_files"] == 4
    assert aggregate([{"rows": 1}])["budget"] is None
