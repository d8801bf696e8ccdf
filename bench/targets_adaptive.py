"""Target 6: adaptive concurrency against a sandbox that answers 429 above 8 requests in flight.

Run A is the perfectly tuned fixed concurrency (8, adaptation off); run B starts at 64 with the
client's AIMD limiter on. Each run gets a fresh sandbox state and a fresh out folder.
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
PARAMS: dict[str, Any] = {"retry_base_delay_s": 0.1}


def run(ctx: Context, wanted: Wanted) -> list[Result]:
    """Tuned fixed run, then adaptive run; wall ratio and the adaptive run's 429 share."""
    manifest = make_wavs(ctx.scratch / "adaptive", [0.2] * FILES, seed=7, prefix="a")
    with sandbox(faults=FAULTS) as probe:
        tuned = _one(ctx, probe, manifest, "tuned", LIMIT, adaptive=False)
        adaptive = _one(ctx, probe, manifest, "adaptive", 64, adaptive=True)
    ctx.details["adaptive"] = {"files": FILES, "tuned": tuned, "adaptive": adaptive}
    share = adaptive["responses_429"] / max(adaptive["responses_all"], 1)
    return [
        result("adaptive_vs_tuned_wall_ratio", adaptive["wall_s"] / tuned["wall_s"]),
        result("adaptive_429_share", share, f"{adaptive['responses_429']} x 429"),
    ]


def _one(
    ctx: Context, probe: SandboxProbe, manifest: Any, name: str, concurrency: int, adaptive: bool
) -> dict[str, Any]:
    """One flow run from a reset sandbox; adds its response counts."""
    probe.reset()
    env = {"INVOX_ADAPTIVE_CONCURRENCY": "true" if adaptive else "false"}
    label = f"flow {name}, concurrency {concurrency}"
    out = ctx.scratch / f"adaptive-{name}-out"
    result = run_flow(probe, label, manifest, out, concurrency, FILES, PARAMS, env)
    responses: dict[str, dict[str, int]] = probe.stats()["responses"]
    result["responses"] = responses
    result["responses_all"] = sum(sum(by.values()) for by in responses.values())
    result["responses_429"] = sum(by.get("429", 0) for by in responses.values())
    result["max_inflight_seen"] = probe.stats()["max_inflight_seen"]
    print(f"  {'':32s} responses {responses}, max in flight {result['max_inflight_seen']}")
    return result
