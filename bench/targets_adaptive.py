"""Target 6: adaptive concurrency against a sandbox that answers 429 above 8 requests in flight.

The perfectly tuned fixed concurrency is the faster of two runs that know the limit: 8 files in
flight with adaptation off, and 64 files with API requests pinned at 8 (the limiter's start and
ceiling both 8, so it never moves). The adaptive run starts at the client's defaults (4 requests,
ceiling 64) with 64 files. Each run gets a fresh sandbox state and a fresh out folder.
"""

from __future__ import annotations

from typing import Any

from bench.context import Context, Wanted, run_flow, sandbox
from bench.harness import SandboxProbe, make_wavs
from bench.report import Result, result

TARGETS = ("adaptive_vs_tuned_wall_ratio", "adaptive_429_share")
FILES = 600
LIMIT = 8
FAULTS: dict[str, Any] = {
    "max_inflight": LIMIT,
    "latency_s": {"token": 0.02, "presign": 0.02, "status": 0.02},
    "retry_after_s": 0.1,
    "processing_delay_s": (0, 0),
}
PARAMS: dict[str, Any] = {"retrying": {"retry_base_delay_s": 0.1}}
ADAPTIVE = {"INVOX_ADAPTIVE_CONCURRENCY": "true"}
FIXED = {"INVOX_ADAPTIVE_CONCURRENCY": "false"}
PINNED = {**ADAPTIVE, "INVOX_INITIAL_CONCURRENCY": str(LIMIT), "INVOX_MAX_INFLIGHT": str(LIMIT)}


def run(ctx: Context, wanted: Wanted) -> list[Result]:
    """Tuned fixed run, then adaptive run; wall ratio and the adaptive run's 429 share."""
    manifest = make_wavs(ctx.scratch / "adaptive", [0.2] * FILES, seed=7, prefix="a")
    with sandbox(faults=FAULTS) as probe:
        files_tuned = _one(ctx, probe, manifest, "tuned files", LIMIT, FIXED)
        requests_tuned = _one(ctx, probe, manifest, "tuned requests", 64, PINNED)
        adaptive = _one(ctx, probe, manifest, "adaptive", 64, ADAPTIVE)
    tuned = min(files_tuned, requests_tuned, key=lambda run: float(run["wall_s"]))
    ctx.details["adaptive"] = {
        "files": FILES,
        "tuned_files": files_tuned,
        "tuned_requests": requests_tuned,
        "adaptive": adaptive,
    }
    share = adaptive["responses_429"] / max(adaptive["responses_all"], 1)
    note = f"vs the best fixed run, {tuned['wall_s']:.2f} s"
    return [
        result("adaptive_vs_tuned_wall_ratio", adaptive["wall_s"] / tuned["wall_s"], note),
        result("adaptive_429_share", share, f"{adaptive['responses_429']} x 429"),
    ]


def _one(
    ctx: Context,
    probe: SandboxProbe,
    manifest: Any,
    name: str,
    concurrency: int,
    client: dict[str, str],
) -> dict[str, Any]:
    """One flow run from a reset sandbox with these client settings; adds its response counts."""
    probe.reset()
    env = dict(client)
    label = f"flow {name}, concurrency {concurrency}"
    out = ctx.scratch / f"adaptive-{name.replace(' ', '-')}-out"
    result = run_flow(probe, label, manifest, out, concurrency, FILES, PARAMS, env)
    responses: dict[str, dict[str, int]] = probe.stats()["responses"]
    result["responses"] = responses
    result["responses_all"] = sum(sum(by.values()) for by in responses.values())
    result["responses_429"] = sum(by.get("429", 0) for by in responses.values())
    result["max_inflight_seen"] = probe.stats()["max_inflight_seen"]
    print(f"  {'':32s} responses {responses}, max in flight {result['max_inflight_seen']}")
    return result
