"""When a symbol that keeps failing is given up on for a while, and when it is tried again. Pure.

A symbol the provider does not know, or has no close for, on ``FAILURES_TO_MARK``
consecutive nightly target dates is marked unavailable (a delisted stock, a ticker
change). From then on the nightly batch skips it, trying again after 1, 2, 4 ...
trading days, at most ``MAX_BACKOFF`` (a week): it burns no quota and raises no
alert every night, yet it is not forgotten. A successful fetch clears it. Reruns on
the same target date do not count twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from snapshotter.core.calendar import is_trading_day

FAILURES_TO_MARK = 5
MAX_BACKOFF = 5  # trading days: weekly


@dataclass(frozen=True)
class SymbolHealth:
    """One row of ``symbol_fetch_failures``."""

    symbol: str
    consecutive_failures: int
    first_failed_on: date
    last_failed_on: date
    last_attempt_at: datetime
    last_error: str
    unavailable_since: date | None = None
    next_attempt_on: date | None = None

    @property
    def unavailable(self) -> bool:
        return self.unavailable_since is not None


def due(health: SymbolHealth | None, target: date) -> bool:
    """Whether the nightly batch for ``target`` tries the symbol."""
    return health is None or not health.unavailable or health.next_attempt_on is None or health.next_attempt_on <= target


def after_failure(
    health: SymbolHealth | None, symbol: str, target: date, now: datetime, error: str, threshold: int = FAILURES_TO_MARK
) -> tuple[SymbolHealth, bool]:
    """The record after a nightly failure on ``target``, and whether it is newly marked unavailable."""
    if health is not None and target <= health.last_failed_on:  # a rerun of the same night: not a new failure
        return replace(health, last_attempt_at=now, last_error=error), False
    n = (health.consecutive_failures if health else 0) + 1
    since = health.unavailable_since if health else None
    marked = since is None and n >= threshold
    if marked:
        since = target
    nxt = None
    if since is not None:
        nxt = trading_days_after(target, backoff(n - threshold))
    return SymbolHealth(
        symbol=symbol,
        consecutive_failures=n,
        first_failed_on=health.first_failed_on if health else target,
        last_failed_on=target,
        last_attempt_at=now,
        last_error=error,
        unavailable_since=since,
        next_attempt_on=nxt,
    ), marked


def backoff(retries: int) -> int:
    """Trading days until the next try: 1, 2, 4, then weekly."""
    return min(2 ** max(0, retries), MAX_BACKOFF)


def trading_days_after(day: date, n: int) -> date:
    """The ``n``-th trading day after ``day``."""
    out = day
    for _ in range(n):
        out += timedelta(days=1)
        while not is_trading_day(out):
            out += timedelta(days=1)
    return out
