"""Retention (``snapshotter prune``): how long daily history is kept and what is kept after. Pure.

``--keep-daily`` is a calendar horizon (``2y``, ``18m``, ``400d``) counted back from the
effective trading date; snapshots strictly before the resulting cutoff are candidates.
``--then`` names what each candidate period keeps: ``monthly`` keeps a portfolio's last
snapshot of each calendar month (its month-end snapshot). The rule is written here once,
as SQL expressions the data layer's DELETE uses (like :mod:`snapshotter.core.valuation`).

Safety: the nightly run refills *holes* (priced days in its ``--max-backfill-days``
window that no portfolio has a snapshot for), so a prune may only thin days before that
window (:func:`check_outside_window`); every later nightly, heal and recompute works
inside the window and so never recreates a pruned day.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta
from enum import Enum

import sqlalchemy as sa

from snapshotter.core.gaps import window
from snapshotter.errors import UsageError

UNITS = {"y": "years", "m": "months", "d": "days"}
MAX_YEARS = 100  # a longer horizon is a typo (and would leave the calendar)


class Policy(str, Enum):
    """What a period before the cutoff keeps; only ``monthly`` for now (``weekly`` would be a new member)."""

    monthly = "monthly"


@dataclass(frozen=True)
class Horizon:
    """A calendar horizon: ``n`` years, months or days."""

    n: int
    unit: str  # "y", "m" or "d"

    def __str__(self) -> str:
        return f"{self.n}{self.unit}"


def parse_horizon(value: str) -> Horizon:
    """``Ny``, ``Nm`` or ``Nd`` (N a whole number from 1; ``m`` is months here, not minutes);
    ValueError with the accepted forms otherwise."""
    text = value.strip().lower()
    m = re.fullmatch(r"(\d+)([ymd]?)", text)
    if not m:
        raise ValueError(f"{value!r} is not a horizon: a whole number of years, months or days (e.g. 2y, 18m, 400d)")
    n, unit = int(m.group(1)), m.group(2)
    if n < 1:
        raise ValueError(f"{value!r} keeps nothing: the horizon must be at least 1d")
    if not unit:
        raise ValueError(f"{value!r} has no unit: y (years), m (months) or d (days), e.g. 2y")
    if n > {"y": MAX_YEARS, "m": 12 * MAX_YEARS, "d": 366 * MAX_YEARS}[unit]:
        raise ValueError(f"{value!r} is longer than {MAX_YEARS} years")
    return Horizon(n, unit)


def cutoff(today: date, keep: Horizon) -> date:
    """The first day kept daily: ``today`` minus the horizon in calendar arithmetic (a day of the
    month that the earlier month lacks becomes its last day: 2024-02-29 - 1y = 2023-02-28)."""
    if keep.unit == "d":
        return today - timedelta(days=keep.n)
    months = keep.n * (12 if keep.unit == "y" else 1)
    index = today.year * 12 + (today.month - 1) - months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(today.day, calendar.monthrange(year, month + 1)[1]))


def check_outside_window(first_kept: date, target: date, max_backfill_days: int, keep: Horizon) -> date:
    """Refuse (UsageError, exit 64) a cutoff inside the nightly backfill window: the nightly would
    refill the pruned days as holes. Returns the window's first day."""
    start, _ = window(target, max_backfill_days)
    if first_kept > start:
        raise UsageError(
            f"--keep-daily {keep} reaches into the nightly backfill window: its cutoff {first_kept} is after the "
            f"window's first day {start} (--max-backfill-days {max_backfill_days}), whose pruned days the nightly "
            f"run would refill; keep at least {max_backfill_days - 1}d, or pass the --max-backfill-days the nightly uses"
        )
    return start


# --- what a period keeps, as SQL ------------------------------------------------------


def period_key(policy: Policy, day):
    """The period a snapshot date belongs to, as a SQL expression comparable within one portfolio."""
    if policy is Policy.monthly:
        return sa.extract("year", day) * 12 + sa.extract("month", day)
    raise ValueError(f"unknown policy {policy!r}")


def scan_end(policy: Policy, first_kept: date) -> date:
    """The first day after the period holding the last candidate (the day before the cutoff):
    the rows a prune must read, because a later row of that period supersedes a candidate."""
    last = first_kept - timedelta(days=1)
    if policy is Policy.monthly:
        return date(last.year + last.month // 12, last.month % 12 + 1, 1)
    raise ValueError(f"unknown policy {policy!r}")


def thinned(day, last_in_period, first_kept: date):
    """The rule: a snapshot before the cutoff goes unless it is its portfolio's last in its period
    (``last_in_period``: the newest snapshot date of the same portfolio and period)."""
    return sa.and_(day < first_kept, day < last_in_period)
