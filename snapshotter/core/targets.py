"""What day a run is for: each command's target resolved once, from its options and ``now``. Pure.

The shell reads the clock once per command and passes ``now``; these functions
turn the command's date options into the run's target (and range), or raise
:class:`UsageError` (exit 64) before anything is written. The job then carries the
resolved target into its tracking row, its stats, its pings and its summary, so
they can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from snapshotter.core.calendar import effective_trading_date, is_trading_day, trading_days_between
from snapshotter.errors import UsageError


@dataclass(frozen=True)
class DayRange:
    """An explicit range of days and the trading days in it; ``target`` is the last of them."""

    first: date
    last: date
    days: tuple[date, ...]

    @property
    def target(self) -> date:
        return self.days[-1]

    def label(self) -> str:
        return f"{self.first}..{self.last}"


def trading_day(day: date, now: datetime, option: str = "--date") -> date:
    """An explicit target day: a trading day whose close has passed at ``now``."""
    latest = effective_trading_date(now)
    if day > latest:
        raise UsageError(f"{option} {day} is in the future: the latest closed trading day is {latest}")
    if not is_trading_day(day):
        raise UsageError(f"{option} {day} is not an NYSE trading day")
    return day


def nightly_target(day: date | None, now: datetime) -> date:
    """``--date`` when given (checked), else the effective trading date of ``now``."""
    return effective_trading_date(now) if day is None else trading_day(day, now)


def day_range(first: date, last: date, now: datetime, max_days: int | None = None, *, to_option: str = "--to") -> DayRange:
    """An explicit ``--from``/``--to`` range: not reversed, not in the future, not over the cap,
    and holding at least one trading day."""
    latest = effective_trading_date(now)
    if last > latest:
        raise UsageError(f"{to_option} {last} is in the future: the latest closed trading day is {latest}")
    if first > last:
        raise UsageError(f"--from {first} is after {to_option} {last}")
    span = (last - first).days + 1
    if max_days is not None and span > max_days:
        raise UsageError(f"range {first}..{last} is {span} days, over --max-backfill-days {max_days}")
    days = tuple(trading_days_between(first, last))
    if not days:
        raise UsageError(f"no trading day in {first}..{last}: nothing to do")
    return DayRange(first, last, days)


def backfill_range(first: date | None, last: date | None, now: datetime, max_days: int) -> DayRange:
    """``backfill``: ``--to`` defaults to the effective trading date, ``--from`` to ``max_days`` before it."""
    last = last or effective_trading_date(now)
    first = first or last - timedelta(days=max_days - 1)
    return day_range(first, last, now, max_days)


def symbol_batch_target(day: date | None, first: date | None, last: date | None, now: datetime) -> tuple[date, DayRange | None]:
    """``symbol-batch``: (target, range) from ``--date`` or ``--from``/``--to`` (not both)."""
    if day is not None and (first is not None or last is not None):
        raise UsageError("give either --date or --from/--to, not both")
    if (first is None) != (last is None):
        raise UsageError("--from and --to go together")
    if first is not None and last is not None:
        rng = day_range(first, last, now)
        return rng.target, rng
    return nightly_target(day, now), None
