"""The market-value pass: every open lot's last_price, market_value and market_value_date
from its symbol's newest cached close (SPEC), one set-based UPDATE per slice or chunk.

Quantity as of the day (:func:`snapshotter.core.valuation.lot_value`): a lot whose symbol has a
split or ticker change on its path is valued at its pricing symbol's newest close (the new
symbol after a change) times its quantity as of that close's date; the stored ``quantity``
stays as entered, ``last_price`` is the close as quoted."""

from __future__ import annotations

import sqlalchemy as sa

from snapshotter.core.valuation import LAST_DAY, lot_value, money
from snapshotter.data.schema import positions
from snapshotter.data.schema import symbol_prices_daily as prices
from snapshotter.data.temp_tables import latest_close
from snapshotter.data.temp_tables import steps as steps_t


def _newest(where=None):
    q = sa.select(prices.c.symbol, sa.func.max(prices.c.price_date).label("m")).group_by(prices.c.symbol)
    return (q if where is None else q.where(where)).subquery("newest")


def fill_latest_closes(actions: bool = False) -> list:
    """_latest_close <- each symbol's most recent cached close; with corporate actions, a symbol
    with steps gets its current pricing symbol's newest close and C on that close's date (no row
    when that date falls before the symbol priced it: the lot keeps its last value)."""
    newest = _newest()
    sel = sa.select(prices.c.symbol, prices.c.close, prices.c.price_date).select_from(
        prices.join(newest, sa.and_(newest.c.symbol == prices.c.symbol, newest.c.m == prices.c.price_date))
    )
    if not actions:
        return [latest_close.insert().from_select(["symbol", "close", "price_date"], sel)]
    st = steps_t
    plain = sel.where(~sa.exists().where(st.c.symbol == prices.c.symbol))
    current = sa.select(st.c.symbol, st.c.price_symbol).where(st.c.valid_to == LAST_DAY).subquery("current")
    newest = _newest(prices.c.symbol.in_(sa.select(current.c.price_symbol)))
    at = st.alias("at_close")
    stepped = sa.select(current.c.symbol, prices.c.close, prices.c.price_date, at.c.num, at.c.den, at.c.valid_from, at.c.valid_to).select_from(
        current.join(newest, newest.c.symbol == current.c.price_symbol)
        .join(prices, sa.and_(prices.c.symbol == newest.c.symbol, prices.c.price_date == newest.c.m))
        .join(at, sa.and_(at.c.symbol == current.c.symbol, at.c.valid_from <= prices.c.price_date,
                          prices.c.price_date < at.c.valid_to, at.c.price_symbol == current.c.price_symbol))
    )
    return [
        latest_close.insert().from_select(["symbol", "close", "price_date"], plain),
        latest_close.insert().from_select(["symbol", "close", "price_date", "num", "den", "since", "until"], stepped),
    ]


def portfolio_range(lo, hi):
    """The lots of portfolios lo..hi (a chunk, or one portfolio)."""
    return sa.and_(positions.c.portfolio_id >= lo, positions.c.portfolio_id <= hi)


def update_market_values(scope, actions: bool = False):
    """Open lots in ``scope`` (:func:`portfolio_range`, :func:`snapshotter.data.spans.in_span`, or
    both) get their latest close; lots already right are not rewritten (a lot with corporate
    actions is compared on its value too: a split learned late changes it, not the close).

    With corporate actions the latest closes are outer-joined to the steps (one row per step of
    a stepped symbol, one row with NULL steps otherwise) and a lot keeps the row of its entry
    step: C(E) by a join, not a subquery per lot."""
    pos = positions
    if actions:
        e = steps_t
        lp = (
            sa.select(latest_close, e.c.valid_from.label("e_from"), e.c.valid_to.label("e_to"),
                      e.c.num.label("e_num"), e.c.den.label("e_den"))
            .select_from(latest_close.outerjoin(e, e.c.symbol == latest_close.c.symbol))
            .subquery("latest")
        )
        same_step = sa.and_(lp.c.since <= pos.c.entry_date, pos.c.entry_date < lp.c.until)
        value = money(lot_value(pos.c.quantity, lp.c.close, lp.c.num, lp.c.den, lp.c.e_num, lp.c.e_den, same_step))
        entry = [sa.or_(lp.c.e_from.is_(None), sa.and_(lp.c.e_from <= pos.c.entry_date, pos.c.entry_date < lp.c.e_to))]
    else:
        lp = latest_close
        value = money(lot_value(pos.c.quantity, lp.c.close))
        entry = []
    changed = [
        pos.c.market_value_date.is_(None),
        pos.c.market_value_date != lp.c.price_date,
        pos.c.last_price.is_(None),
        pos.c.last_price != lp.c.close,
    ]
    if actions:
        changed.append(sa.and_(lp.c.num.is_not(None), pos.c.market_value.is_distinct_from(value)))
    return (
        pos.update()
        .values(last_price=lp.c.close, market_value=value, market_value_date=lp.c.price_date)
        .where(pos.c.symbol == lp.c.symbol, *entry, scope, pos.c.exit_date.is_(None), pos.c.deleted_at.is_(None), sa.or_(*changed))
    )
