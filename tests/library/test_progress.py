"""Live progress: the tracker's numbers, plain ~10 % lines, and the rich terminal display."""

from __future__ import annotations

import io

from invox_batch.progress import ProgressTracker, listening, plain_listener, progress_display


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tracker_counts_throughput_and_eta() -> None:
    clock = FakeClock()
    tracker = ProgressTracker(4, clock=clock)
    tracker.begin()
    tracker.begin()
    clock.now += 30.0
    snap = tracker.finish("completed", 90.0, began=True)
    assert (snap.done, snap.completed, snap.failed, snap.in_flight) == (1, 1, 0, 1)
    assert snap.audio_s == 90.0 and snap.files_per_min == 2.0 and snap.eta_s == 90.0
    snap = tracker.finish("failed", 90.0, began=False)
    assert snap.failed == 1 and snap.audio_s == 90.0 and snap.in_flight == 1
    assert snap.line().startswith("2/4 files (50%): 1 completed, 1 failed, 1 in flight;")
    assert "ETA 0:00:30" in snap.line()


def test_plain_output_is_about_one_line_per_tenth_never_per_file() -> None:
    stream = io.StringIO()
    tracker = ProgressTracker(1000)
    with listening(plain_listener(stream)):
        for _ in range(1000):
            tracker.begin()
            tracker.finish("completed", 1.0, began=True)
    tracker.finish("completed", 1.0, began=False)  # outside the block: not heard
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11  # the start, then 10 %, 20 %, ... 100 %
    assert lines[-1].startswith("progress: 1000/1000 files (100%): 1000 completed, 0 failed")


def test_progress_display_draws_a_rich_bar_on_a_terminal() -> None:
    stream = io.StringIO()
    tracker = ProgressTracker(2)
    with progress_display(stream, force_terminal=True):
        tracker.begin()
        tracker.finish("completed", 3600.0, began=True)
        tracker.finish("failed", None, began=False)
    shown = stream.getvalue()
    assert "transcribing" in shown and "2/2" in shown
    assert "1 completed, 1 failed, 0 in flight; 1.0000 audio h" in shown


def test_progress_display_prints_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with progress_display(stream):
        ProgressTracker(1).finish("completed", 1.0, began=False)
    assert stream.getvalue() == (
        "progress: 1/1 files (100%): 1 completed, 0 failed, 0 in flight; 0.0003 audio h; "
        + stream.getvalue().split("audio h; ")[1]
    )
    assert stream.getvalue().count("\n") == 1


def test_log_lines_print_above_the_live_bar_not_into_it() -> None:
    """Prefect's console handler prints through a rich console of its own; during the display
    it prints through the display's, so a log line never lands in the middle of the bar."""
    import logging

    from rich.console import Console

    class RichHandler(logging.Handler):
        def __init__(self, console: Console) -> None:
            super().__init__()
            self.console = console

        def emit(self, record: logging.LogRecord) -> None:
            self.console.print(record.getMessage())

    stream, elsewhere = io.StringIO(), io.StringIO()
    handler = RichHandler(Console(file=elsewhere, force_terminal=True))
    logger = logging.getLogger("invox_batch.tests.progress")
    logger.addHandler(handler)
    try:
        tracker = ProgressTracker(2)
        with progress_display(stream, force_terminal=True):
            tracker.begin()
            logger.warning("a log line")
            tracker.finish("completed", 1.0, began=True)
        logger.warning("after the display")
    finally:
        logger.removeHandler(handler)
    assert "a log line" in stream.getvalue() and "a log line" not in elsewhere.getvalue()
    assert "after the display" in elsewhere.getvalue()
    assert handler.console.file is elsewhere
