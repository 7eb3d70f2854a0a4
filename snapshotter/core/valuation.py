"""The SPEC valuation rules, each one named function, written as SQL expressions. No I/O.

Every path that values a lot (nightly, refresh, backfill, heal, market values) and
every report that asks the same question (``status``, ``check``) builds its SQL from
these functions, so a rule changes in one place:

* a lot is held on D when it is not deleted, entry_date <= D and (no exit_date or
  exit_date > D): :func:`lot_held_on`;
* cash on D is the sum of amounts with txn_date <= D;
* a portfolio is active on D when it is not deleted and holds a lot or has a
  non-zero cash balance on D: :func:`portfolio_activity`;
* a stored value is rounded half-even to 6 decimals from the exact value: :func:`money`;
* with ``--max-price-age N`` (N > 0), a lot without a close on D may be valued at its
  symbol's latest close on or after :func:`price_window_start` (N trading days before
  D); the SQL that picks that close is :func:`snapshotter.data.snapshot_sql.day_close`.

The arithmetic goes through :mod:`snapshotter.data.dialect`, so the same expressions
are exact on PostgreSQL (NUMERIC) and SQLite (decimal text).
"""

from __future__ import annotations

from bisect import bisect_left
from datetime import date
from typing import Iterable

import sqlalchemy as sa

from snapshotter.core.calendar import trading_days_back, trading_days_between

from snapshotter.data.dialect import dround, dsign, dsum
from snapshotter.data.schema import MONEY_INT_DIGITS, MONEY_SCALE
from snapshotter.data.schema import cash_transactions as cash
from snapshotter.data.schema import portfolios, positions


def money(expr):
    """A stored money value: half-even to 6 decimals; more than 22 integer digits is an error."""
    return dround(expr, MONEY_SCALE, MONEY_INT_DIGITS)


# --max-price-age: at most this many trading days (about 40 years); more would walk the
# calendar back past year 1.
MAX_PRICE_AGE = 10_000


def price_window_start(day: date, max_price_age: int) -> date:
    """The first day whose close may value a lot on trading day ``day``: ``day`` itself when
    ``max_price_age`` is 0 (SPEC: the day's own close), else the trading day ``max_price_age``
    trading days before it."""
    return trading_days_back(day, max_price_age)


def price_window_starts(days: Iterable[date], max_price_age: int) -> dict[date, date]:
    """:func:`price_window_start` of every trading day in ``days``, walking the calendar once."""
    days = sorted(set(days))
    if not days or max_price_age == 0:
        return {d: d for d in days}
    calendar = trading_days_between(trading_days_back(days[0], max_price_age), days[-1])
    return {d: calendar[bisect_left(calendar, d) - max_price_age] for d in days}


def lot_held_on(lot, day):
    """SPEC: the lot ``lot`` (columns entry_date, exit_date, deleted_at) is held on ``day``."""
    return sa.and_(lot_live(lot), lot_open_on(lot, day))


def lot_live(lot):
    """The half of :func:`lot_held_on` that does not depend on the day: not deleted."""
    return lot.deleted_at.is_(None)


def lot_open_on(lot, day):
    """The half of :func:`lot_held_on` that does: entered on or before ``day``, not exited by it.
    The engine filters live lots once per chunk and joins days on this half alone."""
    return sa.and_(lot.entry_date <= day, sa.or_(lot.exit_date.is_(None), lot.exit_date > day))


def portfolio_activity(day, where_portfolio=None):
    """One row per live portfolio with any lot or cash: ``id``, ``start_day`` (its first lot or
    cash day) and ``active`` (SPEC: holds a lot or has a non-zero cash balance on ``day``).

    ``where_portfolio(column)`` narrows every table read to a range of portfolio ids
    (the engine's chunks), so the planner range-scans each table once.
    """
    narrow = where_portfolio or (lambda col: sa.true())
    lots = (
        sa.select(
            positions.c.portfolio_id,
            sa.func.min(positions.c.entry_date).label("first"),
            sa.func.max(sa.case((lot_held_on(positions.c, day), 1), else_=0)).label("holds"),
        )
        .where(narrow(positions.c.portfolio_id), positions.c.deleted_at.is_(None))
        .group_by(positions.c.portfolio_id)
        .subquery("portfolio_lots")
    )
    money_ = (
        sa.select(
            cash.c.portfolio_id,
            sa.func.min(cash.c.txn_date).label("first"),
            dsign(dsum(sa.case((cash.c.txn_date <= day, cash.c.amount)))).label("sign"),
        )
        .where(narrow(cash.c.portfolio_id))
        .group_by(cash.c.portfolio_id)
        .subquery("portfolio_cash")
    )
    p = portfolios
    start_day = sa.case(
        (lots.c.first.is_(None), money_.c.first),
        (sa.or_(money_.c.first.is_(None), lots.c.first <= money_.c.first), lots.c.first),
        else_=money_.c.first,
    )
    active = sa.or_(lots.c.holds == 1, sa.func.coalesce(money_.c.sign, 0) != 0)
    return (
        sa.select(p.c.id, start_day.label("start_day"), sa.case((active, True), else_=False).label("active"))
        .select_from(p.outerjoin(lots, lots.c.portfolio_id == p.c.id).outerjoin(money_, money_.c.portfolio_id == p.c.id))
        .where(narrow(p.c.id), p.c.deleted_at.is_(None), sa.or_(lots.c.first.is_not(None), money_.c.first.is_not(None)))
        .subquery("activity")
    )
