"""The report's four plots, drawn with matplotlib's Agg backend into inline base64 PNGs; a plot
with nothing to draw is a small SVG of its title and why, which needs no drawing at all."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_SIZE = (6.0, 3.4)
_DPI = 80
_EMPTY = "no fresh results in this selection (all from cache, or none completed)"
_TITLES = {
    "status": "Status breakdown",
    "time_to_result": "Time to result",
    "throughput": "Throughput over the run",
    "duration_vs_time": "Audio duration vs processing time",
}
Draw = Callable[[Axes], None]


def _png(draw: Draw) -> str:
    """One figure drawn by ``draw``, as a data: URI (Figure, not pyplot: no global state)."""
    figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    draw(figure.add_subplot())
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _placeholder_svg(title: str) -> str:
    """A titled placeholder the size of a plot, as a data: URI: a cached run (every file
    settled from the ledger) has three of them, which matplotlib took 75 ms to draw."""
    width, height = (round(side * _DPI) for side in _SIZE)
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="DejaVu Sans, sans-serif" text-anchor="middle">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="50%" y="24" font-size="15">{html.escape(title)}</text>'
        f'<text x="50%" y="50%" font-size="12" fill="#555">{html.escape(_EMPTY)}</text></svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _plot(name: str, draw: Draw | None) -> str:
    """The plot drawn and titled, or its titled placeholder when it has nothing to draw."""
    if draw is None:
        return _placeholder_svg(_TITLES[name])

    def titled(axes: Axes) -> None:
        axes.set_title(_TITLES[name])
        draw(axes)

    return _png(titled)


def _status(statuses: Mapping[str, int], errors: Mapping[str, int]) -> Draw:
    """Rows completed, then failed rows split by error type."""
    labels = ["completed", *(f"failed: {k}" for k in errors)]
    counts = [statuses.get("completed", 0), *errors.values()]
    colors = ["#2e7d32", *["#c62828"] * len(errors)]

    def draw(axes: Axes) -> None:
        bars = axes.barh(labels[::-1], counts[::-1], color=colors[::-1])
        axes.bar_label(bars, padding=2)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("rows")

    return draw


def _ttr(points: Sequence[Mapping[str, Any]]) -> Draw | None:
    """Histogram of seconds from upload to result."""
    values = [p["ttr_s"] for p in points if p["ttr_s"] is not None]
    if not values:
        return None

    def draw(axes: Axes) -> None:
        bins = min(30, max(5, len(values) // 2))
        axes.hist(values, bins=bins, color="#1565c0", edgecolor="white")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("seconds from upload to result")
        axes.set_ylabel("files")

    return draw


def _throughput(points: Sequence[Mapping[str, Any]]) -> Draw | None:
    """Cumulative files completed against time since each run's first upload (s, or min)."""
    runs: dict[str, list[Mapping[str, Any]]] = {}
    for point in points:
        runs.setdefault(point["flow_run_id"], []).append(point)
    if not runs:
        return None

    def draw(axes: Axes) -> None:
        shown = list(runs.items())[:6]
        elapsed = {run_id: _elapsed_s(rows) for run_id, rows in shown}
        longest = max((max(v) for v in elapsed.values() if v), default=0.0)
        scale, unit = (60.0, "minutes") if longest > 300 else (1.0, "seconds")
        for run_id, seconds in elapsed.items():
            times = [s / scale for s in seconds]
            axes.step([0.0, *times], range(len(times) + 1), where="post", label=run_id[:8])
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel(f"{unit} since the run's first upload")
        axes.set_ylabel("files completed")
        axes.legend(title="flow run", fontsize="small")

    return draw


def _elapsed_s(rows: Sequence[Mapping[str, Any]]) -> list[float]:
    """Seconds from the run's first upload to each result, in order."""
    first = min(p["submitted_at"] for p in rows)
    return sorted((p["completed_at"] - first).total_seconds() for p in rows)


def _duration_vs_time(points: Sequence[Mapping[str, Any]]) -> Draw | None:
    """Audio duration against processing time, one dot per file."""
    pairs = [(p["duration_s"], p["ttr_s"]) for p in points if p["duration_s"] is not None]
    if not pairs:
        return None

    def draw(axes: Axes) -> None:
        durations, seconds = zip(*pairs, strict=True)
        axes.scatter(durations, seconds, s=12, alpha=0.6, color="#6a1b9a")
        axes.set_xlabel("audio duration (s)")
        axes.set_ylabel("time to result (s)")

    return draw


def render_plots(
    statuses: Mapping[str, int],
    errors: Mapping[str, int],
    points: Sequence[Mapping[str, Any]],
) -> dict[str, str]:
    """Plot name → data URI (a PNG, or an SVG placeholder), for the HTML template."""
    draws = {
        "status": _status(statuses, errors),
        "time_to_result": _ttr(points),
        "throughput": _throughput(points),
        "duration_vs_time": _duration_vs_time(points),
    }
    return {name: _plot(name, draw) for name, draw in draws.items()}
