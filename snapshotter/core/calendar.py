"""NYSE trading days and the "effective trading date" of a moment. Pure: no I/O, no clock.

Closures come from ``holidays.NYSE`` (public category, which includes the one-off
closures such as 2001-09-11 and 2012-10-29). Half days (``half_day`` category)
are trading days that close at 13:00 instead of 16:00 New York time.

The NYSE class is loaded from its own module (:func:`_nyse`): ``holidays.NYSE``
imports the package's every market, and the Colombian exchange every country,
0.12-0.18 s of each command's start-up (``check`` is polled every few minutes).
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import date, datetime, time, timedelta, timezone
from functools import cache, lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays

NEW_YORK = ZoneInfo("America/New_York")
REGULAR_CLOSE = time(16, 0)
EARLY_CLOSE = time(13, 0)


@cache
def _nyse() -> type:
    """``holidays.NYSE`` itself, read from ``holidays/financial/ny_stock_exchange.py`` alone
    (under a private module name) instead of through ``holidays.financial``, whose
    ``__init__`` imports every market and country. Any surprise in that layout (another
    release of ``holidays``) falls back to ``holidays.NYSE``: the same class, slower."""
    name = "snapshotter._holidays_nyse"
    try:
        path = Path(holidays.__file__).with_name("financial") / "ny_stock_exchange.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # the importlib recipe: the module exists while it runs
        spec.loader.exec_module(module)
        return module.NYSE
    except Exception:  # noqa: BLE001 - the slow, public way is always right
        sys.modules.pop(name, None)
        return holidays.NYSE


@lru_cache(maxsize=256)
def _closures(year: int) -> frozenset[date]:
    return frozenset(_nyse()(years=year, categories=("public",)).keys())


@lru_cache(maxsize=256)
def _half_days(year: int) -> frozenset[date]:
    return frozenset(_nyse()(years=year, categories=("half_day",)).keys())


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
