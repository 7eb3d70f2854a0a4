"""NYSE trading days and the "effective trading date" of a moment. Pure: no I/O, no clock.

Closures come from ``holidays.NYSE`` (public category, which includes the one-off
closures such as 2001-09-11 and 2012-10-29). Half days (``half_day`` category)
are trading days that close at 13:00 instead of 16:00 New York time.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

NEW_YORK = ZoneInfo("America/New_York")
REGULAR_CLOSE = time(16, 0)
EARLY_CLOSE = time(13, 0)


@lru_cache(maxsize=256)
def _closures(year: int) -> frozenset[date]:
    return frozenset(holidays.NYSE(years=year, categories=("public",)).keys())


@lru_cache(maxsize=256)
def _half_days(year: int) -> frozenset[date]:
    return frozenset(holidays.NYSE(years=year, categories=("half_day",)).keys())


def is_trading_day(d: date) -> bool:
    return d.weekday() < 5 and d not in _closures(d.year)


def is_half_day(d: date) -> bool:
    return is_trading_day(d) and d in _half_days(d.year)


def close_time(d: date) -> datetime:
    """The market close of trading day ``d`` as an aware New York datetime."""
    return datetime.combine(d, EARLY_CLOSE if is_half_day(d) else REGULAR_CLOSE, tzinfo=NEW_YORK)


def trading_days_between(a: date, b: date) -> list[date]:
    """Trading days in the closed interval [a, b]; empty when a > b."""
    out = []
    d = a
    while d <= b:
        if is_trading_day(d):
            out.append(d)
        d += timedelta(days=1)
    return out


def previous_trading_day(d: date) -> date:
    """The last trading day strictly before ``d``."""
    d -= timedelta(days=1)
    while not is_trading_day(d):
        d -= timedelta(days=1)
    return d


def latest_trading_day_on_or_before(d: date) -> date:
    return d if is_trading_day(d) else previous_trading_day(d)


def trading_days_back(d: date, n: int) -> date:
    """The trading day ``n`` trading days before trading day ``d`` (n >= 0)."""
    for _ in range(n):
        d = previous_trading_day(d)
    return d


def effective_trading_date(now: datetime) -> date:
    """The latest trading day whose close has passed at ``now`` (the shell reads the clock once).

    A naive ``now`` is taken as UTC; the machine's timezone never matters.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    ny = now.astimezone(NEW_YORK)
    d = ny.date()
    if is_trading_day(d) and ny >= close_time(d):
        return d
    return previous_trading_day(d)


def new_york_date(now: datetime) -> date:
    """The calendar date in New York at ``now``: anything later is "in the future"."""
    return (now if now.tzinfo else now.replace(tzinfo=timezone.utc)).astimezone(NEW_YORK).date()
