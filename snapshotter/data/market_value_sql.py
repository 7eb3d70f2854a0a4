"""The market-value pass: every open lot's last_price, market_value and market_value_date
from its symbol's newest cached close (SPEC), one set-based UPDATE per slice or chunk."""

from __future__ import annotations

import sqlalchemy as sa

from snapshotter.core.valuation import money
from snapshotter.data.dialect import dmul
from snapshotter.data.schema import positions
from snapshotter.data.schema import symbol_prices_daily as prices
from snapshotter.data.temp_tables import latest_close


def fill_latest_closes():
    """_latest_close <- each symbol's most recent cached close."""
    newest = sa.select(prices.c.symbol, sa.func.max(prices.c.price_date).label("m")).group_by(prices.c.symbol).subquery()
    sel = sa.select(prices.c.symbol, prices.c.close, prices.c.price_date).select_from(
        prices.join(newest, sa.and_(newest.c.symbol == prices.c.symbol, newest.c.m == prices.c.price_date))
    )
    return latest_close.insert().from_select(["symbol", "close", "price_date"], sel)


def portfolio_range(lo, hi):
    """The lots of portfolios lo..hi (a chunk, or one portfolio)."""
    return sa.and_(positions.c.portfolio_id >= lo, positions.c.portfolio_id <= hi)


def update_market_values(scope):
    """Open lots in ``scope`` (:func:`portfolio_range`, :func:`snapshotter.data.spans.in_span`, or
    both) get their latest close; lots already right are not rewritten."""
    lp = latest_close
    pos = positions
    return (
        pos.update()
        .values(last_price=lp.c.close, market_value=money(dmul(pos.c.quantity, lp.c.close)), market_value_date=lp.c.price_date)
        .where(
            pos.c.symbol == lp.c.symbol,
            scope,
            pos.c.exit_date.is_(None),
            pos.c.deleted_at.is_(None),
            sa.or_(
                pos.c.market_value_date.is_(None),
                pos.c.market_value_date != lp.c.price_date,
                pos.c.last_price.is_(None),
                pos.c.last_price != lp.c.close,
            ),
        )
    )
