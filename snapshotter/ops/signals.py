"""Graceful stop: SIGTERM/SIGINT, or the --max-runtime timer, set a flag; jobs check it between units of work.

Railway and Kubernetes stop a job with SIGTERM and kill it a little later; a job
that finishes the chunk or symbol in flight, marks its run ``interrupted`` and
exits 143 (130 for SIGINT) loses nothing and leaves an honest tracking row.

A run that hangs (a provider that trickles, a batch that never completes, a lock
that never frees) would block every later run: Railway starts no cron run while
one is active, and flock turns the next ones into quiet 75s. :func:`max_runtime`
arms a timer that sets the same flag when the run's time is up: the job stops
exactly as on SIGTERM, with :class:`~snapshotter.errors.MaxRuntimeReached`
(exit 75, "stopped after --max-runtime 2h").
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from snapshotter.core.durations import format_duration
from snapshotter.errors import MaxRuntimeReached, Stopped, StoppedBySignal


class StopFlag:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None
        self._cause: Callable[[], Stopped] | None = None  # the first reason asked wins

    def request(self, signum: int) -> None:
        """A signal asked to stop (called from the signal handler)."""
        if self._cause is None:
            self.signum = signum
            self._cause = lambda: StoppedBySignal(signum)
        self._event.set()

    def expire(self, limit: str) -> None:
        """The run's --max-runtime (``limit``, as written) is over (called from the timer thread)."""
        if self._cause is None:
            self._cause = lambda: MaxRuntimeReached(limit)
        self._event.set()

    def reset(self) -> None:
        """A new command starts: nothing asked yet."""
        self._event.clear()
        self.signum = None
        self._cause = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise Stopped (the subclass of the first reason) at a unit-of-work boundary if a stop was requested."""
        if self._event.is_set():
            raise (self._cause or (lambda: StoppedBySignal(signal.SIGTERM)))()

    def sleep(self, seconds: float) -> None:
        """Sleep that wakes at once on a stop request (then raises Stopped)."""
        self._event.wait(seconds)
        self.check()


STOP = StopFlag()


def install_handlers(flag: StopFlag = STOP) -> None:
    def handler(signum, _frame):
        flag.request(signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


@contextmanager
def max_runtime(seconds: float | None, flag: StopFlag = STOP) -> Iterator[threading.Timer | None]:
    """Within the block, ``flag`` is set after ``seconds`` (None or 0: never), as SIGTERM would.

    The timer is a daemon thread, cancelled when the block ends, so a run that
    finishes in time leaves nothing behind.
    """
    if not seconds or seconds <= 0:
        yield None
        return
    timer = threading.Timer(seconds, flag.expire, args=(format_duration(seconds),))
    timer.name, timer.daemon = "snapshotter-max-runtime", True
    timer.start()
    try:
        yield timer
    finally:
        timer.cancel()
