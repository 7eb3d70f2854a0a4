"""Exit codes (SPEC) and the error hierarchy that maps onto them: the only home of that mapping.

Every failure a job can meet is raised as one of these classes, each carrying its
exit code (a small hierarchy in the style of httpx's). :func:`exit_code_for` turns
any exception into the process exit status (Ctrl-C before the handlers,
anything unexpected: 70), and :func:`exit_code_for_failures` is the
code of a run that finished with some portfolios or symbols failed.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    PARTIAL = 1  # finished, some portfolios or symbols failed
    USAGE = 64  # EX_USAGE: bad arguments or input, nothing changed
    DATAERR = 65  # EX_DATAERR: provider returned unusable data
    UNAVAILABLE = 69  # EX_UNAVAILABLE: database or provider unreachable after retries
    SOFTWARE = 70  # EX_SOFTWARE: internal error
    CANTCREAT = 73  # EX_CANTCREAT: the database cannot be written (a read-only SQLite file)
    TEMPFAIL = 75  # EX_TEMPFAIL: batch not ready, quota exhausted, lock held, --max-runtime reached; safe to rerun
    CONFIG = 78  # EX_CONFIG: configuration missing or invalid
    SIGINT = 130
    SIGTERM = 143


class SnapshotterError(Exception):
    """Base class: a failure with a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.SOFTWARE


class UsageError(SnapshotterError):
    exit_code = ExitCode.USAGE


class InputError(UsageError):
    """A bad input file (CSV import): reported as file:line: reason."""


class ConfigError(SnapshotterError):
    exit_code = ExitCode.CONFIG


class UnavailableError(SnapshotterError):
    exit_code = ExitCode.UNAVAILABLE


class DatabaseUnavailable(UnavailableError):
    pass


class CantCreate(SnapshotterError):
    """The database cannot be written: a read-only SQLite file (a writing job refuses it up front)."""

    exit_code = ExitCode.CANTCREAT


class TempFailError(SnapshotterError):
    exit_code = ExitCode.TEMPFAIL


class LockHeld(TempFailError):
    pass


class BatchNotReady(TempFailError):
    pass


class Stopped(SnapshotterError):
    """A stop asked from outside the job's work, honoured at a unit-of-work boundary.

    The job finishes the symbol or chunk in flight, marks its run ``interrupted``
    with this message and re-raises; the pings go out and the process exits with
    the subclass's code. Jobs catch this class; the subclasses say why.
    """


class StoppedBySignal(Stopped):
    """SIGTERM (Railway, Kubernetes, docker stop) or SIGINT (Ctrl-C): exit 143 or 130."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.exit_code = ExitCode.SIGINT if signum == signal.SIGINT else ExitCode.SIGTERM
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class MaxRuntimeReached(Stopped):
    """``--max-runtime`` elapsed: stopped as SIGTERM would, but exit 75 (EX_TEMPFAIL): nothing
    is wrong with the data, and a later run continues where this one stopped."""

    exit_code = ExitCode.TEMPFAIL

    def __init__(self, limit: str):
        self.limit = limit
        super().__init__(f"stopped after --max-runtime {limit}")


# Provider errors: each tells the batch what to do with the symbol or the run.
class ProviderError(SnapshotterError):
    """A provider call failed; subclasses say how the batch reacts."""

    exit_code = ExitCode.DATAERR


class TransientProviderError(ProviderError):
    """Timeouts, 5xx, throttling: retried with backoff."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TransientProviderError):
    pass


class QuotaExhausted(ProviderError):
    """Daily budget gone: stop this provider, defer its symbols (exit 75)."""

    exit_code = ExitCode.TEMPFAIL


class ProviderRefused(ProviderError):
    """Bad key or plan refused: abort the run (exit 78)."""

    exit_code = ExitCode.CONFIG


class SymbolNotFound(ProviderError):
    """The provider does not know the symbol: that symbol fails, the others go on."""


class BadProviderData(ProviderError):
    """The response is unusable as a whole: that symbol fails."""


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit status of a command that ended with ``exc``."""
    if isinstance(exc, SnapshotterError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):  # SIGINT before the handlers were installed
        return ExitCode.SIGINT
    return ExitCode.SOFTWARE


def exit_code_for_failures(failures: int) -> ExitCode:
    """A run that finished: 0, or 1 when some units (portfolios, symbols) failed."""
    return ExitCode.PARTIAL if failures else ExitCode.OK

