"""The issue-6 benchmark suite: every target measured, printed as a PASS/MISS table, saved as JSON.

    python -m bench.suite [--only <target-prefix>] [--files 1000] [--big-files 10000]

Writes ``bench/results/<UTC stamp>.json`` (the list plus machine details and raw figures) and,
for a full run (no ``--only``), ``bench/results/latest.json`` (the list alone).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from bench import (
    targets_adaptive,
    targets_ledger,
    targets_polling,
    targets_scale,
    targets_tables,
    targets_tail,
    targets_upload,
)
from bench.context import Context, Wanted
from bench.harness import RESULTS
from bench.report import LIMITS, Result, format_table, machine, result, timestamp, write_results

GROUPS: tuple[ModuleType, ...] = (
    targets_scale,
    targets_polling,
    targets_upload,
    targets_adaptive,
    targets_tail,
    targets_ledger,
    targets_tables,
)


def selector(prefixes: Sequence[str]) -> Wanted:
    """Targets whose name starts with any of ``prefixes``; all of them when none are given."""
    return lambda target: not prefixes or any(target.startswith(p) for p in prefixes)


def failed(targets: Sequence[str], error: BaseException) -> list[Result]:
    """A group that crashed: its targets unmeasured (MISS), the error as the note."""
    note = f"error: {type(error).__name__}: {str(error).strip().splitlines()[0][:80]}"
    return [result(t, None, note) for t in targets]


def run_group(group: ModuleType, ctx: Context, wanted: Wanted) -> list[Result]:
    """One group's wanted targets; a crash is reported, not raised, so the rest still run."""
    targets = [t for t in group.TARGETS if wanted(t)]
    print(f"\n== {', '.join(targets)}", flush=True)
    started = time.monotonic()
    try:
        run: Callable[[Context, Wanted], list[Result]] = group.run
        results = [r for r in run(ctx, wanted) if wanted(r.target)]
    except Exception as exc:  # one broken target must not hide the others
        traceback.print_exc()
        results = failed(targets, exc)
    ctx.details.setdefault("group_wall_s", {})[group.__name__] = time.monotonic() - started
    print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="target name prefix")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--big-files", type=int, default=10000)
    args = parser.parse_args()
    wanted = selector(args.only)
    started = time.monotonic()
    stamp = timestamp()
    with tempfile.TemporaryDirectory(prefix="invox-bench-") as tmp:
        ctx = Context(files=args.files, big_files=args.big_files, scratch=Path(tmp))
        ctx.details["machine"] = machine()
        print(f"machine: {ctx.details['machine']}")
        results: list[Result] = []
        for group in GROUPS:
            if any(wanted(t) for t in group.TARGETS):
                results += run_group(group, ctx, wanted)
    order = list(LIMITS)
    results.sort(key=lambda r: order.index(r.target))
    ctx.details["total_wall_s"] = time.monotonic() - started
    # A subset (--only) leaves latest.json to the last full run, so it never mixes runs.
    written = write_results(RESULTS, results, ctx.details, stamp, latest=not args.only)
    print(f"\n{format_table(results)}")
    print(f"\ntotal wall time {ctx.details['total_wall_s']:.0f} s; wrote", *map(str, written))


if __name__ == "__main__":
    main()
