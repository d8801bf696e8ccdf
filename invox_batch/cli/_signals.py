"""What ``run`` does on SIGINT or SIGTERM: the first stops the run (no new file starts, uploads
in flight finish and are recorded, nothing is written, the flow run ends Cancelled) and prints
one line saying how to resume; a second signal exits at once. Either way the process is gone
within 10 s, the grace period Kubernetes and Prefect give before they kill.

The flow runs on a thread of its own so that this (main) thread keeps the signals: Prefect's
engine would otherwise turn SIGTERM into a crash, and Python SIGINT into KeyboardInterrupt.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, suppress
from types import FrameType, TracebackType
from typing import Any

from ..progress import ProgressSnapshot, listening
from ..stopping import Stop, exit_status, resume_line

__all__ = ["Interrupted", "SignalStop"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
CUT_AFTER_S = 6.0  # a flow not stopped by then is cancelled (its run ends Crashed)
EXIT_AFTER_S = 9.0  # the process exits by then, whatever is still running
_WAKE_S = 0.1


class Interrupted(BaseException):
    """A signal arrived while no flow was running to stop: unwind and exit (as KeyboardInterrupt
    would, but without its traceback)."""


class SignalStop:
    """Around a run: the first SIGINT/SIGTERM asks ``stop`` for a graceful stop, a second exits."""

    def __init__(self, stop: Stop, say: Callable[[str], None]) -> None:
        self.stop = stop
        self.say = say
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._progress: ProgressSnapshot | None = None
        self._said = False
        self._lock = threading.RLock()  # re-entrant: the handler may interrupt its own thread
        self._flow: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
        self._waiting = False
        self._timers: list[threading.Timer] = []
        self._stack = ExitStack()

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        self._stack.enter_context(listening(self._remember))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        for timer in self._timers:
            timer.cancel()
        for handler in _console_handlers():  # a longer-lived process (tests) logs on
            handler.removeFilter(_drop)
        self._stack.close()

    @property
    def status(self) -> int:
        """The exit status after a signal: 130 for SIGINT, 143 for SIGTERM."""
        return exit_status(self.signum or signal.SIGINT)

    def run_flow(self, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run the flow's coroutine to its end on a thread of its own (keeping this thread's
        settings context); without signal handlers (not the main thread), right here."""
        if not self._previous:
            return asyncio.run(main())
        box: dict[str, Any] = {}
        context = contextvars.copy_context()

        def target() -> None:
            try:
                box["value"] = context.run(asyncio.run, self._tracked(main()))
            except BaseException as exc:  # handed to the waiting thread, which raises it
                box["error"] = exc

        thread = threading.Thread(target=target, name="invox-batch-flow", daemon=True)
        self._waiting = True
        try:
            thread.start()
            while thread.is_alive():  # the kernel may hand a signal to any thread: the handler
                thread.join(_WAKE_S)  # runs on this one once it wakes
        finally:
            self._waiting = False
        if "error" in box:
            raise box["error"]
        return box["value"]

    def say_resume(self, line: str | None = None) -> None:
        """Print the one line saying how to resume (``line``, or one from the last progress)."""
        with self._lock:
            if self._said:
                return
            self._said = True
        if line is None:
            name = signal.Signals(self.signum or signal.SIGINT).name
            progress = self._progress
            line = resume_line(
                name, *((progress.done, progress.total) if progress else (None, None))
            )
        self.say(line)

    async def _tracked(self, flow: Coroutine[Any, Any, Any]) -> Any:
        """Await the flow, known by its loop and task so that it can be cut."""
        task = asyncio.ensure_future(flow)
        self._flow = (asyncio.get_running_loop(), task)
        return await task

    def _remember(self, snapshot: ProgressSnapshot) -> None:
        self._progress = snapshot

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second: at once
            self.signum = signum
            self._exit_now()
        self.signum = signum
        name = signal.Signals(signum).name
        _quiet_consoles()
        self.stop.request(name)
        self._timers = [
            threading.Timer(CUT_AFTER_S, self._cut),
            threading.Timer(EXIT_AFTER_S, self._exit_now),
        ]
        for timer in self._timers:
            timer.daemon = True
            timer.start()
        if not self._waiting:
            raise Interrupted(signum)
        again = "Ctrl-C again" if signum == signal.SIGINT else f"{name} again"
        self.say(
            f"stopping on {name}: no new file starts, nothing is written ({again} to quit now)"
        )

    def _cut(self) -> None:
        """Cancel a flow that has not stopped by itself (Prefect records the run Crashed)."""
        if self._flow is not None:
            loop, task = self._flow
            with suppress(RuntimeError):  # its loop has closed: the flow is over
                loop.call_soon_threadsafe(task.cancel)

    def _exit_now(self) -> None:
        self.say_resume()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(self.status)


def _quiet_consoles() -> None:
    """After a signal nothing but the resume line reaches the console: no crash reports of the
    abandoned steps, no warnings of connections closing (the flow run's logs still ship)."""
    for handler in _console_handlers():
        handler.addFilter(_drop)


def _drop(record: logging.LogRecord) -> bool:
    return False


def _console_handlers() -> Iterator[logging.Handler]:
    """Every handler printing to a stream (Prefect's console one among them), not to a file."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        if isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler
                ):
                    yield handler
