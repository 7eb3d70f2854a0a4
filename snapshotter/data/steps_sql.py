"""Corporate actions as the engine reads them: the splits and ticker changes on file become the
run's steps (:func:`snapshotter.core.valuation.quantity_steps`, computed once per run in
Python from the two small tables), and the per-run tables ``_snap_steps`` and
``_snap_day_closes`` that the valuation joins by equality (:mod:`.snapshot_sql`,
:mod:`.market_value_sql`)."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from snapshotter.core.bars import Split, SymbolChange
from snapshotter.core.valuation import Step, price_symbols_between, quantity_steps
from snapshotter.data.schema import symbol_changes, symbol_splits
from snapshotter.data.temp_tables import days as days_t
from snapshotter.data.schema import symbol_prices_daily as prices
from snapshotter.data.temp_tables import day_closes as day_closes_t
from snapshotter.data.temp_tables import steps as steps_t


def load_steps(conn: sa.Connection) -> list[Step]:
    """Every step of the splits and ticker changes on file (two reads of small tables)."""
    sp = [Split(r.symbol, r.ex_date, r.split_from, r.split_to) for r in conn.execute(
        sa.select(symbol_splits.c.symbol, symbol_splits.c.ex_date, symbol_splits.c.split_from, symbol_splits.c.split_to))]
    ch = [SymbolChange(r.old_symbol, r.new_symbol, r.effective_date) for r in conn.execute(
        sa.select(symbol_changes.c.old_symbol, symbol_changes.c.new_symbol, symbol_changes.c.effective_date))]
    return quantity_steps(sp, ch)


def fill_steps(conn: sa.Connection, steps: list[Step]) -> None:
    """_snap_steps <- the run's steps."""
    if steps:
        conn.execute(steps_t.insert(), [
            {"symbol": s.symbol, "valid_from": s.valid_from, "valid_to": s.valid_to, "price_symbol": s.price_symbol,
             "num": s.num, "den": s.den} for s in steps
        ])


def fill_day_closes() -> list:
    """_snap_day_closes <- per candidate day, every stepped symbol's step with its pricing
    symbol's close (a row even without a close), and the other symbols' cached closes."""
    st, d, p = steps_t, days_t, prices
    stepped = sa.select(st.c.symbol, d.c.d, p.c.close, st.c.price_symbol, st.c.num, st.c.den, st.c.valid_from, st.c.valid_to).select_from(
        st.join(d, sa.and_(st.c.valid_from <= d.c.d, d.c.d < st.c.valid_to))
        .outerjoin(p, sa.and_(p.c.symbol == st.c.price_symbol, p.c.price_date == d.c.d))
    )
    plain = (
        sa.select(p.c.symbol, p.c.price_date, p.c.close)
        .select_from(p.join(d, d.c.d == p.c.price_date))
        .where(~sa.exists().where(st.c.symbol == p.c.symbol))
    )
    return [
        day_closes_t.insert().from_select(["symbol", "d", "close", "price_symbol", "num", "den", "since", "until"], stepped),
        day_closes_t.insert().from_select(["symbol", "d", "close"], plain),
    ]


def entry_step(symbol, entry_date):
    """The on clause of a lot's step on its entry day (C(E))."""
    st = steps_t
    return sa.and_(st.c.symbol == symbol, st.c.valid_from <= entry_date, entry_date < st.c.valid_to)


def entry_factor(symbol, entry_date):
    """(num, den) of C(E) as scalar subqueries: evaluated only for the rare lot with a split
    between its entry and the day (:func:`snapshotter.core.valuation.lot_value` reads them in
    its last CASE branch), an index probe each."""
    st = steps_t
    return tuple(sa.select(col).where(entry_step(symbol, entry_date)).scalar_subquery() for col in (st.c.num, st.c.den))


def renamed(conn: sa.Connection, first: date, last: date | None = None) -> list[tuple[str, str]]:
    """(held symbol, pricing symbol) pairs of the days [first, last] for the symbols with a ticker
    change on their path (:func:`snapshotter.core.valuation.price_symbols_between`), for
    :func:`snapshotter.data.planning_sql.symbols_needed`."""
    return renamed_on(load_steps(conn), first, last)


def renamed_on(steps: list[Step], first: date, last: date | None = None) -> list[tuple[str, str]]:
    return sorted((h, p) for h, ps in price_symbols_between(steps, first, last or first).items() for p in ps)
