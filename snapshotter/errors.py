"""Exit codes (SPEC.md) and the error hierarchy that maps onto them.

Every failure a job can meet is raised as one of these classes; the CLI maps
``exc.exit_code`` to the process exit status, so the mapping lives here only.
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
    TEMPFAIL = 75  # EX_TEMPFAIL: batch not ready, quota exhausted, lock held; safe to rerun
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


class TempFailError(SnapshotterError):
    exit_code = ExitCode.TEMPFAIL


class LockHeld(TempFailError):
    pass


class BatchNotReady(TempFailError):
    pass


class Stopped(SnapshotterError):
    """Raised at a unit-of-work boundary after SIGTERM/SIGINT."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.exit_code = ExitCode.SIGINT if signum == signal.SIGINT else ExitCode.SIGTERM
        super().__init__(f"stopped by {signal.Signals(signum).name}")


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
