"""What every target group gets: the suite's options, a scratch folder and the details dict."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import SandboxProbe, calls_since, print_run, run_worker, worker_env

Wanted = Callable[[str], bool]
RERUNS = 3  # a sub-second rerun on a shared 2-core machine varies by a fifth: take the median


@dataclass
class Context:
    """Options and the raw figures each group records for the timestamped results file."""

    files: int
    big_files: int
    scratch: Path
    details: dict[str, Any] = field(default_factory=dict)


@contextmanager
def sandbox(**settings: Any) -> Iterator[SandboxProbe]:
    """An in-process instant-mode sandbox with these settings, and a probe on its control plane."""
    from sandbox import SandboxServer, SandboxSettings

    with SandboxServer(SandboxSettings(processing="instant", **settings)) as server:
        probe = SandboxProbe(server.base_url)
        try:
            yield probe
        finally:
            probe.close()


def run_flow(
    probe: SandboxProbe,
    label: str,
    manifest: Path,
    out: Path,
    concurrency: int,
    files: int,
    params: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One flow run in a fresh worker; adds the API calls it made and prints its line."""
    import json

    before = probe.requests()
    args = ["flow", "--manifest", str(manifest), "--out", str(out)]
    args += ["--concurrency", str(concurrency), "--params", json.dumps(params or {})]
    result = run_worker(args, worker_env(probe.base_url, env))
    result["calls"] = calls_since(before, probe.requests())
    print_run(label, files, result["wall_s"], result["calls"])
    print(
        f"  {'':32s} state {result['state']}, peak RSS {result['peak_rss_mb']:.0f} MB, "
        f"Prefect server start {result['server_start_s']:.1f} s"
    )
    return result


def run_bare(
    probe: SandboxProbe,
    label: str,
    manifest: Path,
    concurrency: int,
    files: int,
    poll_every_s: float | None = None,
) -> dict[str, Any]:
    """The bare asyncio loop in a fresh worker; adds the API calls it made."""
    before = probe.requests()
    args = ["bare", "--manifest", str(manifest), "--concurrency", str(concurrency)]
    if poll_every_s:
        args += ["--poll-every", str(poll_every_s)]
    result = run_worker(args, worker_env(probe.base_url))
    result["calls"] = calls_since(before, probe.requests())
    print_run(label, files, result["wall_s"], result["calls"])
    return result


def median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time, every wall time beside it, the API calls of all of them."""
    ordered = sorted(runs, key=lambda run: run["wall_s"])
    median = dict(ordered[len(ordered) // 2])
    median["wall_s_all"] = [run["wall_s"] for run in runs]
    median["calls"] = {e: sum(run["calls"][e] for run in runs) for e in median["calls"]}
    return median
