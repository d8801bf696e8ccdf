"""Live run progress: one tracker feeds the Prefect progress artifact and any in-process display.

The flow counts; whoever runs it in the same process (``invox-batch run``) subscribes with
``listening(callback)``. On a terminal that is a rich progress bar; elsewhere (CI, cron, worker
logs) one plain line per tenth of the run, never one per file.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TextIO, cast

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

__all__ = [
    "ProgressSnapshot",
    "ProgressTracker",
    "listening",
    "plain_listener",
    "progress_display",
]

Listener = Callable[["ProgressSnapshot"], None]
_listeners: list[Listener] = []


@dataclass(frozen=True)
class ProgressSnapshot:
    """The numbers an operator watches, at one moment of the run (unique audio files)."""

    total: int
    completed: int
    failed: int
    in_flight: int
    audio_s: float
    elapsed_s: float

    @property
    def done(self) -> int:
        """Files finished, whichever way."""
        return self.completed + self.failed

    @property
    def percent(self) -> float:
        """Share of files finished, 0-100 (an empty run is complete)."""
        return 100.0 * self.done / self.total if self.total else 100.0

    @property
    def files_per_min(self) -> float:
        """Files finished per minute of wall time so far."""
        return 60.0 * self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far; None before the first file finishes."""
        if self.done >= self.total:
            return 0.0
        if not self.done or self.elapsed_s <= 0:
            return None
        return (self.total - self.done) * self.elapsed_s / self.done

    def eta(self) -> str:
        """The ETA as H:MM:SS, or '?' before the first file finishes."""
        return "?" if self.eta_s is None else _clock(self.eta_s)

    def counts(self) -> str:
        """Completed, failed, in flight, audio hours and throughput, in one phrase."""
        return (
            f"{self.completed} completed, {self.failed} failed, {self.in_flight} in flight; "
            f"{self.audio_s / 3600:.4f} audio h; {self.files_per_min:.1f} files/min"
        )

    def line(self) -> str:
        """The plain summary line: files done of total, the counts, the ETA."""
        return f"{self.done}/{self.total} files ({self.percent:.0f}%): {self.counts()}; ETA {self.eta()}"


def _clock(seconds: float) -> str:
    """H:MM:SS for an ETA."""
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class ProgressTracker:
    """Counts files as they start and finish, and tells every listener."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.listeners: list[
            Listener
        ] = []  # this run's own (the Prefect artifact), beside _listeners
        self.completed = self.failed = self.in_flight = 0
        self.audio_s = 0.0
        self._clock = clock
        self._started = clock()

    def snapshot(self) -> ProgressSnapshot:
        """The counts now."""
        elapsed = self._clock() - self._started
        return ProgressSnapshot(
            self.total, self.completed, self.failed, self.in_flight, self.audio_s, elapsed
        )

    def begin(self) -> ProgressSnapshot:
        """A file went in flight (it holds a concurrency slot)."""
        self.in_flight += 1
        return self._notify()

    def finish(self, status: str, duration_s: float | None, *, began: bool) -> ProgressSnapshot:
        """A file settled; completed audio counts towards the hours processed."""
        self.in_flight -= began
        if status == "completed":
            self.completed += 1
            self.audio_s += duration_s or 0.0
        else:
            self.failed += 1
        return self._notify()

    def _notify(self) -> ProgressSnapshot:
        """Hand the new snapshot to every in-process listener."""
        snapshot = self.snapshot()
        for listener in [*self.listeners, *_listeners]:
            listener(snapshot)
        return snapshot


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Receive every progress snapshot of flows run in this process while inside the block."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def plain_listener(stream: TextIO, steps: int = 10) -> Listener:
    """Print one line each time another 1/steps of the files is done, and at the end."""
    printed = -1

    def listen(snapshot: ProgressSnapshot) -> None:
        nonlocal printed
        step = snapshot.done * steps // snapshot.total if snapshot.total else steps
        if step > printed and (snapshot.done or printed < 0):
            printed = step
            stream.write(f"progress: {snapshot.line()}\n")
            stream.flush()

    return listen


def _rich_bar(console: Console) -> Progress:
    """Line one: files done/total on a bar, with the ETA (line two carries the counts)."""
    return Progress(
        TextColumn("[bold]transcribing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ETA {task.fields[eta]}"),
        console=console,
    )


@contextmanager
def progress_display(
    stream: TextIO | None = None, *, force_terminal: bool | None = None
) -> Iterator[None]:
    """A rich live bar on a terminal, plain ~10 % lines otherwise, for the flows run inside."""
    target = stream or sys.stderr
    console = Console(file=target, force_terminal=force_terminal)
    if not console.is_terminal:
        with listening(plain_listener(target)):
            yield
        return
    bar = _rich_bar(console)
    task = bar.add_task("files", total=None, eta="?")
    counts = Text("starting", style="dim")

    def listen(snapshot: ProgressSnapshot) -> None:
        bar.update(task, total=snapshot.total, completed=snapshot.done, eta=snapshot.eta())
        counts.plain = snapshot.counts()

    live = Live(Group(bar, counts), console=console, refresh_per_second=4)
    with live, listening(listen), _logs_above(console):
        yield


class _PrintsThroughRich(Protocol):
    """A log handler printing through a rich console of its own (Prefect's console handler)."""

    console: Console


def _rich_log_handlers() -> list[_PrintsThroughRich]:
    """Every such handler, on the root logger and every named one."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return [
        cast(_PrintsThroughRich, handler)
        for logger in loggers
        if isinstance(logger, logging.Logger)
        for handler in logger.handlers
        if isinstance(getattr(handler, "console", None), Console)
    ]


@contextmanager
def _logs_above(console: Console) -> Iterator[None]:
    """Log lines print through the live display's console, so they land above the bar instead of
    being written into it."""
    handlers = _rich_log_handlers()
    own = [handler.console for handler in handlers]
    for handler in handlers:
        handler.console = console
    try:
        yield
    finally:
        for handler, previous in zip(handlers, own, strict=True):
            handler.console = previous
