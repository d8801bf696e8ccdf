"""Targets 1, 3 and 4: orchestration overhead, memory at 10x the files, and the cached rerun.

One instant-mode sandbox; bare loop, flow and rerun over the same small WAVs, then the flow
over ten times as many. Concurrency 16 throughout; the poll cap (0.2 s) matches the bare loop.
"""

from __future__ import annotations

from typing import Any

from bench.context import RERUNS, Context, Wanted, median_run, run_bare, run_flow, sandbox
from bench.harness import SandboxProbe, make_wavs
from bench.report import Result, result

TARGETS = (
    "orchestration_overhead_ratio",
    "peak_rss_ratio_10k_to_1k",
    "rerun_api_calls",
    "rerun_wall_ratio",
)
CONCURRENCY = 16
SMALL_S = 0.2
PARAMS: dict[str, Any] = {"polling": {"max_poll_interval_s": 0.2}}


def run(ctx: Context, wanted: Wanted) -> list[Result]:
    """Measure whichever of this group's targets are wanted, sharing the 1k-file flow run."""
    results: list[Result] = []
    manifest = make_wavs(ctx.scratch / "small", [SMALL_S] * ctx.files, seed=0, prefix="b")
    with sandbox(faults={"processing_delay_s": (0, 0)}) as probe:
        raw: dict[str, Any] = {"files": ctx.files, "concurrency": CONCURRENCY}
        ctx.details["scale"] = raw
        if wanted("orchestration_overhead_ratio"):
            raw["bare"] = run_bare(
                probe, f"bare loop, {ctx.files} files", manifest, CONCURRENCY, ctx.files
            )
        out = ctx.scratch / "small-out"
        flow = run_flow(
            probe, f"flow, {ctx.files} files", manifest, out, CONCURRENCY, ctx.files, PARAMS
        )
        raw["flow"] = flow
        print(
            f"  Prefect server start (one-time, not in any ratio): {flow['server_start_s']:.1f} s"
        )
        if "bare" in raw:
            ratio = flow["wall_s"] / raw["bare"]["wall_s"]
            results.append(result("orchestration_overhead_ratio", ratio))
        if wanted("rerun_api_calls") or wanted("rerun_wall_ratio"):
            results += _rerun(ctx, probe, manifest, flow, raw)
        if wanted("peak_rss_ratio_10k_to_1k"):
            results.append(_memory(ctx, probe, flow, raw))
    return results


def _rerun(
    ctx: Context, probe: SandboxProbe, manifest: Any, flow: dict[str, Any], raw: dict[str, Any]
) -> list[Result]:
    """Full reruns of the completed batch into the same out folder; the median counts."""
    out = ctx.scratch / "small-out"
    reruns = [
        run_flow(
            probe, f"rerun {n}, {ctx.files} files", manifest, out, CONCURRENCY, ctx.files, PARAMS
        )
        for n in range(1, RERUNS + 1)
    ]
    raw["rerun"] = rerun = median_run(reruns)
    return [
        result("rerun_api_calls", sum(rerun["calls"].values())),
        result("rerun_wall_ratio", rerun["wall_s"] / flow["wall_s"]),
    ]


def _memory(ctx: Context, probe: SandboxProbe, flow: dict[str, Any], raw: dict[str, Any]) -> Result:
    """The flow's peak RSS over ten times the files, against the 1k run's."""
    probe.reset()  # the sandbox forgets the small batch's jobs; the flow's worker is fresh anyway
    big = make_wavs(ctx.scratch / "big", [SMALL_S] * ctx.big_files, seed=1, prefix="g")
    label = f"flow, {ctx.big_files} files"
    run = run_flow(probe, label, big, ctx.scratch / "big-out", CONCURRENCY, ctx.big_files, PARAMS)
    raw["flow_big"] = run
    ratio = run["peak_rss_mb"] / flow["peak_rss_mb"]
    note = f"{run['peak_rss_mb']:.0f} MB / {flow['peak_rss_mb']:.0f} MB"
    return result("peak_rss_ratio_10k_to_1k", ratio, note)
