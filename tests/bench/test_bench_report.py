"""The benchmark's report: rounding, PASS/MISS, the JSON files' shape and the target selector."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.harness import wav_header
from bench.report import (
    LIMITS,
    Result,
    as_records,
    format_table,
    result,
    round_sig,
    timestamp,
    write_results,
)
from bench.suite import failed, selector


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.23456, 1.235),
        (0.000123456, 0.0001235),
        (12345.6, 12350.0),
        (0.0, 0.0),
        (-2.71828, -2.718),
    ],
)
def test_round_sig_keeps_four_significant_digits(value: float, expected: float) -> None:
    assert round_sig(value) == pytest.approx(expected, rel=0, abs=1e-12)


def test_pass_is_measured_within_the_limit_in_the_targets_direction() -> None:
    assert result("rerun_api_calls", 0).passed
    assert not result("rerun_api_calls", 1).passed
    assert result("large_upload_throughput_vs_curl", 0.8).passed
    assert not result("large_upload_throughput_vs_curl", 0.79).passed
    assert not result("orchestration_overhead_ratio", None).passed
    assert not result("orchestration_overhead_ratio", float("nan")).passed


def test_records_have_the_issue_keys_in_a_stable_order() -> None:
    records = as_records(
        [result("time_to_result_ratio", 1.0512345), result("adaptive_429_share", None)]
    )
    assert [list(r) for r in records] == [["target", "measured", "limit", "pass"]] * 2
    assert records[0] == {
        "target": "time_to_result_ratio",
        "measured": 1.051,
        "limit": 1.1,
        "pass": True,
    }
    assert records[1]["measured"] is None and records[1]["pass"] is False


def test_table_shows_each_target_with_value_limit_and_verdict() -> None:
    table = format_table(
        [result("rerun_wall_ratio", 0.5, "slow"), result("large_upload_throughput_vs_curl", 0.9)]
    ).splitlines()
    assert table[1].split() == ["rerun_wall_ratio", "0.5", "<=", "0.1", "MISS", "slow"]
    assert table[2].split() == ["large_upload_throughput_vs_curl", "0.9", ">=", "0.8", "PASS"]


def test_write_results_writes_the_list_and_a_stamped_copy_with_details(tmp_path: Path) -> None:
    results = [result("rerun_api_calls", 3)]
    stamp = timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    dated, latest = write_results(tmp_path, results, {"machine": {"cpu_count": 2}}, stamp)
    assert (dated.name, latest.name) == ("20260102T030405.json", "latest.json")
    assert json.loads(latest.read_text()) == as_records(results)
    body = json.loads(dated.read_text())
    assert body == {"results": as_records(results), "details": {"machine": {"cpu_count": 2}}}


def test_a_partial_run_leaves_latest_json_alone(tmp_path: Path) -> None:
    (tmp_path / "latest.json").write_text("[]\n")
    written = write_results(tmp_path, [result("rerun_api_calls", 0)], {}, "x", latest=False)
    assert written == [tmp_path / "x.json"]
    assert (tmp_path / "latest.json").read_text() == "[]\n"


def test_selector_matches_prefixes_and_everything_without_them() -> None:
    assert all(selector([])(t) for t in LIMITS)
    pick = selector(["rerun", "adaptive_429"])
    assert [t for t in LIMITS if pick(t)] == [
        "rerun_api_calls",
        "rerun_wall_ratio",
        "adaptive_429_share",
    ]


def test_a_crashed_group_reports_its_targets_as_unmeasured_misses() -> None:
    rows = failed(["rerun_api_calls"], RuntimeError("worker flow failed:\nTraceback"))
    assert rows == [Result("rerun_api_calls", None, 0.0, note=rows[0].note)]
    assert rows[0].note == "error: RuntimeError: worker flow failed:"


def test_wav_header_describes_mono_16_bit_pcm(tmp_path: Path) -> None:
    import soundfile as sf

    path = tmp_path / "x.wav"
    path.write_bytes(wav_header(32000) + bytes(32000))
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (
        16000,
        1,
        16000,
        "PCM_16",
    )
