"""The questions a run asks before it works: which days have closes, which portfolios are
live, which symbols are needed and what the cache already holds. Each is one set-based query."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

import sqlalchemy as sa

from snapshotter.data.dialect import literal_rows
from snapshotter.data.schema import portfolio_snapshots as snaps
from snapshotter.data.schema import portfolios, positions, watchlist
from snapshotter.data.schema import symbol_prices_daily as prices

RECENTLY_CLOSED_DAYS = 30  # lots closed this many days before a day still need its prices
IN_CHUNK = 500  # symbols per IN (...) list


def priced_days_between(start: date, end: date):
    return sa.select(prices.c.price_date).distinct().where(prices.c.price_date >= start, prices.c.price_date <= end)


def days_without_snapshots(start: date, end: date):
    """Priced days in [start, end] with no snapshot for any portfolio: one index probe per day
    (``LIMIT 1`` in a scalar subquery, which the planner cannot turn into an anti-join: with a year
    of history, ``NOT EXISTS`` became a hash anti-join over the whole table)."""
    d = sa.select(prices.c.price_date.label("d")).distinct().where(prices.c.price_date >= start, prices.c.price_date <= end).subquery("priced")
    any_snapshot = sa.select(snaps.c.snapshot_date).where(snaps.c.snapshot_date == d.c.d).limit(1).scalar_subquery()
    return sa.select(d.c.d).where(any_snapshot.is_(None))


def live_portfolio_ids(after, limit: int):
    """The next page of live (not deleted) portfolio ids after ``after``: keyset pagination."""
    q = sa.select(portfolios.c.id).where(portfolios.c.deleted_at.is_(None)).order_by(portfolios.c.id).limit(limit)
    return q if after is None else q.where(portfolios.c.id > after)


def live_portfolio_count():
    return sa.select(sa.func.count()).where(portfolios.c.deleted_at.is_(None))


def portfolio_state(portfolio_id):
    """(deleted_at,) of one portfolio, or no row when it does not exist."""
    return sa.select(portfolios.c.deleted_at).where(portfolios.c.id == portfolio_id)


def symbols_needed(day: date, renamed=()):
    """The one rule for "symbols the portfolios need" on ``day`` (SPEC): lots of live
    portfolios that are open or closed within the ``RECENTLY_CLOSED_DAYS`` before ``day``,
    and the whole watchlist. A subquery with one column, ``symbol``.

    Ticker changes: ``renamed`` (held symbol, pricing symbol) pairs
    (:func:`snapshotter.data.steps_sql.renamed` of the days asked for) replace a held
    symbol by the symbol(s) whose closes price it then: the new symbol from the change's
    effective date on, and no longer the old one, which stops trading."""
    since = day - timedelta(days=RECENTLY_CLOSED_DAYS)

    def needing(lot):  # a lot that needs its symbol's closes
        return sa.and_(
            lot.c.deleted_at.is_(None),
            sa.or_(lot.c.exit_date.is_(None), lot.c.exit_date >= since),
            sa.exists().where(portfolios.c.id == lot.c.portfolio_id, portfolios.c.deleted_at.is_(None)),
        )

    seen = lot_symbols(needing)
    lots = sa.select(seen.c.symbol.label("symbol")).where(seen.c.symbol.is_not(None))
    held = sa.union(lots, sa.select(watchlist.c.symbol.label("symbol")))
    if not renamed:
        return held.subquery("needed")
    held = held.subquery("held_symbols")
    rn = literal_rows("renamed", [("held", sa.Text()), ("price_symbol", sa.Text())], list(renamed))
    return (
        sa.select(sa.func.coalesce(rn.c.price_symbol, held.c.symbol).label("symbol")).distinct()
        .select_from(held.outerjoin(rn, rn.c.held == held.c.symbol))
        .subquery("needed")
    )


def read_symbols_needed(conn: sa.Connection, day: date, renamed=()) -> list[str]:
    """:func:`symbols_needed` read: sorted, each once (the symbol batch and ``status``)."""
    need = symbols_needed(day, renamed)
    return sorted({s for s in conn.execute(sa.select(need.c.symbol)).scalars() if s})


def lot_symbols(where):
    """The distinct symbols of the lots ``where(lot)`` accepts, by a loose index scan of the symbol
    index: a recursive CTE (one ``symbol`` column, NULL once past the last) whose every step asks
    for the smallest accepted symbol after the previous one, an index walk that stops at the first
    accepted lot. Thousands of symbols cost thousands of short walks however many lots hold them;
    ``SELECT DISTINCT`` over a join read all ten million lots at a million portfolios (2.3 s)."""
    first, nxt = positions.alias("first_lot"), positions.alias("next_lot")

    def smallest(lot, *where_more):  # ORDER BY ... LIMIT 1, not min(): the planner then walks the index in order
        return sa.select(lot.c.symbol).where(where(lot), *where_more).order_by(lot.c.symbol).limit(1).scalar_subquery()

    seen = sa.select(smallest(first).label("symbol")).cte("lot_symbols", recursive=True)
    step = sa.select(smallest(nxt, nxt.c.symbol > seen.c.symbol).label("symbol")).where(seen.c.symbol.is_not(None))
    return seen.union_all(step)


def chunks(items: list[str]):
    for i in range(0, len(items), IN_CHUNK):
        yield items[i : i + IN_CHUNK]


def last_cached(symbols: list[str], target: date):
    """Per symbol, its newest cached close on or before ``target`` (one statement per IN chunk)."""
    for part in chunks(symbols):
        yield (
            sa.select(prices.c.symbol, sa.func.max(prices.c.price_date))
            .where(prices.c.symbol.in_(part), prices.c.price_date <= target)
            .group_by(prices.c.symbol)
        )


def cached_days(symbols: list[str], date_from: date, date_to: date):
    for part in chunks(symbols):
        yield sa.select(prices.c.symbol, prices.c.price_date).where(
            prices.c.symbol.in_(part), prices.c.price_date.between(date_from, date_to)
        )


def read_cached_days(conn: sa.Connection, symbols: list[str], date_from: date, date_to: date) -> dict[str, set[date]]:
    """:func:`cached_days` read: the days each symbol has a close (the symbol batch and ``status``)."""
    out: dict[str, set[date]] = defaultdict(set)
    for q in cached_days(symbols, date_from, date_to):
        for s, d in conn.execute(q):
            out[s].add(d)
    return out
