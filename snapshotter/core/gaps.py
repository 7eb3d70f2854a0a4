"""Planning which (portfolio, day) snapshots a run must create. Pure: no I/O, no clock.

The database answers set questions (which days have closes, which days have no
snapshot at all); this module turns the answers into a plan the engine executes.
A plan is a list of candidate days plus, per day, whether it is a *hole*: a day
before the snapshot frontier that still has no snapshot (its closes arrived
late), which is the only case where the engine must probe for missing rows
below a portfolio's last snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Sequence

from snapshotter.core.calendar import trading_days_between

DEFAULT_MAX_BACKFILL_DAYS = 365


@dataclass(frozen=True)
class Plan:
    """What one run will do.

    ``mode`` is ``gaps`` (nightly: days after each portfolio's last snapshot plus
    holes), ``dates`` (refresh --date / backfill: every listed day that lacks a
    snapshot) or ``force`` (recompute every listed day).
    """

    mode: str
    target: date
    days: tuple[date, ...]
    holes: frozenset[date] = field(default_factory=frozenset)
    unpriced: tuple[date, ...] = ()


def window(target: date, max_backfill_days: int) -> tuple[date, date]:
    """The calendar-day window a nightly run may backfill: (target - cap, target]."""
    return target - timedelta(days=max_backfill_days - 1), target


def plan_gaps(target: date, max_backfill_days: int, priced_days: set[date], unsnapshotted_days: set[date]) -> Plan:
    """Nightly plan: trading days in the window that have at least one close.

    ``unsnapshotted_days`` are the priced days in the window that no portfolio has
    a snapshot for; those below the newest snapshotted day are holes.
    """
    start, end = window(target, max_backfill_days)
    trading = trading_days_between(start, end)
    days = tuple(d for d in trading if d in priced_days)
    # Days before the cache's first close in the window are not "missing"; nothing was ever fetched there.
    first = min(days) if days else end
    unpriced = tuple(d for d in trading if d not in priced_days and d >= first)
    snapshotted = [d for d in days if d not in unsnapshotted_days]
    frontier = max(snapshotted) if snapshotted else None
    holes = frozenset(d for d in unsnapshotted_days if frontier is not None and d < frontier and d in days)
    return Plan("gaps", target, days, holes, unpriced)


def plan_dates(target: date, days: Sequence[date], priced_days: set[date], force: bool = False) -> Plan:
    """refresh --date / backfill: the given trading days (the target resolved by the caller), those without closes skipped."""
    listed = tuple(sorted(days))
    kept = tuple(d for d in listed if d in priced_days)
    unpriced = tuple(d for d in listed if d not in priced_days)
    return Plan("force" if force else "dates", target, kept, frozenset(kept), unpriced)


def bisect(ids: Sequence) -> list[Sequence]:
    """Split a failed chunk in two so one bad portfolio cannot sink its neighbours."""
    mid = len(ids) // 2
    return [ids[:mid], ids[mid:]]
