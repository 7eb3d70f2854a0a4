"""A few database connections working through chunks side by side.

Why: a chunk's statements run on one server core, and a chunk is its own
transaction, so chunks are independent; two connections keep two server cores
busy and nearly halve a refresh. Each worker owns one connection, prepared once
by ``setup`` (the snapshot engine's temporary tables live per connection).

The caller stays the only thread that touches the run's state: it submits
chunks, takes results back in completion order, checks the stop flag between
submissions and merges stats. With one worker everything runs inline in the
caller's thread (SQLite, dry runs, single-portfolio backfills).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from snapshotter.ops.logs import in_this_context

Task = Callable[[sa.Connection, Any], Any]
_STOP = object()


class Workers:
    def __init__(self, engine: sa.Engine, n: int, setup: Callable[[sa.Connection], None], teardown: Callable[[sa.Connection], None]):
        self.n = max(1, n)
        self._engine, self._setup, self._teardown = engine, setup, teardown
        self._tasks: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._inline: sa.Connection | None = None
        self.in_flight = 0

    def __enter__(self) -> "Workers":
        if self.n == 1:
            self._inline = self._engine.connect()
            self._setup(self._inline)
            return self
        ready: queue.Queue = queue.Queue()
        for i in range(self.n):
            # each thread in a copy of the caller's context: its log lines carry the run's fields
            t = threading.Thread(target=in_this_context(self._loop), args=(ready,), name=f"snapshotter-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        for _ in range(self.n):  # a worker that cannot connect fails the run before any chunk
            err = ready.get()
            if err is not None:
                self.__exit__(None, None, None)
                raise err
        return self

    def __exit__(self, *exc) -> None:
        if self._inline is not None:
            try:
                self._teardown(self._inline)
            finally:
                self._inline.close()
                self._inline = None
            return
        for _ in self._threads:
            self._tasks.put(_STOP)
        for t in self._threads:
            t.join()
        self._threads.clear()

    def _loop(self, ready: queue.Queue) -> None:
        try:
            conn = self._engine.connect()
            self._setup(conn)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            ready.put(exc)
            return
        ready.put(None)
        try:
            while (item := self._tasks.get()) is not _STOP:
                fn, arg = item
                try:
                    self._results.put((arg, fn(conn, arg), None))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    self._results.put((arg, None, exc))
        finally:
            try:
                self._teardown(conn)
            finally:
                conn.close()

    def submit(self, fn: Task, arg: Any) -> None:
        """Queue ``fn(conn, arg)``; with one worker it runs now."""
        self.in_flight += 1
        if self._inline is not None:
            try:
                self._results.put((arg, fn(self._inline, arg), None))
            except BaseException as exc:  # noqa: BLE001 - re-raised by next_result, like a worker's
                self._results.put((arg, None, exc))
            return
        self._tasks.put((fn, arg))

    def next_result(self) -> tuple[Any, Any]:
        """(arg, result) of the next finished task; its exception is raised here."""
        arg, result, exc = self._results.get()
        self.in_flight -= 1
        if exc is not None:
            raise exc
        return arg, result

    def drain(self) -> Iterator[tuple[Any, Any]]:
        """Every outstanding result; the first exception is raised after all have finished."""
        first = None
        while self.in_flight:
            try:
                yield self.next_result()
            except BaseException as exc:  # noqa: BLE001
                first = first or exc
        if first is not None:
            raise first
