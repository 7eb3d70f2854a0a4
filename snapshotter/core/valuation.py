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
  D); the SQL that picks that close is :func:`snapshotter.data.snapshot_sql.day_close`;
* quantity as of the day (corporate actions): a lot entered on E holds its quantity x
  C(D) / C(E) shares on D and is priced by its symbol's closes, or by the new symbol's
  from a ticker change on; C and the pricing symbol are :func:`quantity_steps`, the
  value is :func:`lot_value`.

The arithmetic goes through :mod:`snapshotter.data.dialect`, so the same expressions
are exact on PostgreSQL (NUMERIC) and SQLite (decimal text).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Iterable

import sqlalchemy as sa

from snapshotter.core.bars import Split, SymbolChange
from snapshotter.core.calendar import trading_days_back, trading_days_between

from snapshotter.data.dialect import dmul, dquot, dround, dsign, dsum
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


# --- quantity as of the day (corporate actions) -------------------------------------------

FIRST_DAY, LAST_DAY = date(1, 1, 1), date(9999, 12, 31)  # the open ends of the first and the last step
FACTOR_DIGITS = 38  # the most digits of a step's numerator or denominator (NUMERIC(38, 0) in the run's tables)


@dataclass(frozen=True)
class Step:
    """On the days ``valid_from`` <= D < ``valid_to`` a lot held in ``symbol`` is priced by
    ``price_symbol``'s closes and C(D) = ``num`` / ``den`` (reduced): the product of the ratios
    of the splits on its path up to D."""

    symbol: str
    valid_from: date
    valid_to: date
    price_symbol: str
    num: int
    den: int


def quantity_steps(splits: Iterable[Split], changes: Iterable[SymbolChange]) -> list[Step]:
    """The rule "quantity as of the day", for every symbol with a corporate action on its path.

    A lot entered on E with quantity q holds q x C(D) / C(E) on D, where C(x) is the product
    of split_to / split_from over the splits on the lot's path with ex_date <= x. The path of a
    symbol S: S itself, until its first ticker change (ex_dates before the effective date F
    count); from F on the new symbol, its splits with ex_date >= F and then its own first
    change on or after F, and so on (chains A -> B -> C follow each link once, so a rename back
    to an old symbol ends the walk there). A lot follows the company it was entered in: a
    later change of the same old symbol (a ticker reused) is not followed. Symbols without a
    split or a change on their path get no step (C = 1, their own closes): the SQL leaves
    them out of every join. Exact: Fractions of the stored decimals, never logarithms.
    """
    splits_of: dict[str, list[Split]] = defaultdict(list)
    for s in splits:
        splits_of[s.symbol].append(s)
    changes_of: dict[str, list[SymbolChange]] = defaultdict(list)
    for c in changes:
        changes_of[c.old_symbol].append(c)
    for lst in splits_of.values():
        lst.sort(key=lambda s: s.ex_date)
    for lst in changes_of.values():
        lst.sort(key=lambda c: c.effective_date)
    out: list[Step] = []
    for held in sorted(set(splits_of) | set(changes_of)):
        out.extend(_walk(held, splits_of, changes_of))
    return out


def _walk(held: str, splits_of, changes_of) -> list[Step]:
    cur, start, factor, used = held, FIRST_DAY, Fraction(1), set()
    points = [(FIRST_DAY, held, factor)]  # (first day, pricing symbol, C) in day order
    while True:
        nxt = next((c for c in changes_of.get(cur, ()) if c.effective_date >= start and c not in used), None)
        end = nxt.effective_date if nxt else LAST_DAY
        for s in splits_of.get(cur, ()):
            if start <= s.ex_date < end:
                factor *= Fraction(s.split_to) / Fraction(s.split_from)
                points.append((s.ex_date, cur, factor))
        if nxt is None:
            break
        used.add(nxt)
        cur, start = nxt.new_symbol, nxt.effective_date
        points.append((start, cur, factor))
    merged: list[tuple] = []
    for p in points:  # several events on one day: the last one holds from that day
        if merged and merged[-1][0] == p[0]:
            merged[-1] = p
        elif not merged or merged[-1][1:] != p[1:]:
            merged.append(p)
    steps = []
    for i, (day, sym, f) in enumerate(merged):
        if len(str(f.numerator)) > FACTOR_DIGITS or len(str(f.denominator)) > FACTOR_DIGITS:
            raise ValueError(f"the splits of {held} multiply to {f}: more than {FACTOR_DIGITS} digits")
        until = merged[i + 1][0] if i + 1 < len(merged) else LAST_DAY
        steps.append(Step(held, day, until, sym, f.numerator, f.denominator))
    return steps


def price_symbols_between(steps: Iterable[Step], first: date, last: date) -> dict[str, set[str]]:
    """For each symbol with a ticker change on its path, the symbols whose closes price its lots
    on some day of [first, last] (what symbol-batch must fetch instead of it)."""
    out: dict[str, set[str]] = defaultdict(set)
    renamed = {s.symbol for s in steps if s.price_symbol != s.symbol}
    for s in steps:
        if s.symbol in renamed and s.valid_from <= last and s.valid_to > first:
            out[s.symbol].add(s.price_symbol)
    return dict(out)


def priced_by(steps: Iterable[Step]) -> list[tuple[str, str, date]]:
    """(pricing symbol, held symbol, first day) for every other symbol that prices a held symbol's
    lots: a change to the pricing symbol's closes or splits changes the held symbol's lots from
    the later of its date and that first day (the invalidation expansion)."""
    first: dict[tuple[str, str], date] = {}
    for s in steps:
        if s.price_symbol != s.symbol:
            key = (s.price_symbol, s.symbol)
            first[key] = min(first.get(key, s.valid_from), s.valid_from)
    return sorted((p, h, d) for (p, h), d in first.items())


def lot_value(quantity, close, day_num=None, day_den=None, entry_num=None, entry_den=None, same_step=None):
    """SQL: the value of a lot on D, its quantity as of D x the close, q x close x C(D) / C(E).

    C(D) = ``day_num`` / ``day_den``, C(E) = ``entry_num`` / ``entry_den`` (:func:`quantity_steps`;
    NULL, or None in Python, when the symbol has no corporate action: q x close). ``same_step``:
    true when E and D fall in the same step (no split between them, the usual case): q x close
    without reading C(E). Numerator and
    denominator are kept apart and divided last, once: the quotient is exact when it terminates
    within 30 decimals (every 2^a x 5^b ratio, e.g. 1-for-20) and otherwise correctly rounded to
    30 decimals, ties away from zero (a 1-for-3 reverse split), the same on both backends
    (:class:`dquot`); the portfolio's sum is then rounded by :func:`money`.
    """
    plain = dmul(quantity, close)
    if day_num is None:
        return plain
    scaled = dquot(dmul(dmul(plain, day_num), entry_den), dmul(day_den, entry_num))
    return sa.case((sa.or_(day_num.is_(None), same_step), plain), else_=scaled)
