"""A progress bar on a TTY, nothing otherwise (structured log events cover that case)."""

from __future__ import annotations

import sys
from contextlib import contextmanager


class _NoBar:
    def advance(self, n: int = 1) -> None:
        pass

    def total(self, n: int) -> None:
        pass


class _RichBar:
    def __init__(self, progress, task):
        self._p, self._t = progress, task

    def advance(self, n: int = 1) -> None:
        self._p.advance(self._t, n)

    def total(self, n: int) -> None:
        self._p.update(self._t, total=n)


@contextmanager
def progress_bar(description: str, total: int | None = None, enabled: bool | None = None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _NoBar()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        transient=False,
    ) as p:
        yield _RichBar(p, p.add_task(description, total=total))
