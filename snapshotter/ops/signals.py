"""Graceful stop: SIGTERM/SIGINT set a flag; jobs check it between units of work.

Railway and Kubernetes stop a job with SIGTERM and kill it a little later; a job
that finishes the chunk or symbol in flight, marks its run ``interrupted`` and
exits 143 (130 for SIGINT) loses nothing and leaves an honest tracking row.
"""

from __future__ import annotations

import signal
import threading

from snapshotter.errors import Stopped


class StopFlag:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None

    def request(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise Stopped at a unit-of-work boundary if a stop was requested."""
        if self._event.is_set():
            raise Stopped(self.signum or signal.SIGTERM)

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
