"""The snapshot pass as set-based SQL: one chunk of portfolios per transaction.

The run's candidate days sit in ``_snap_days``, the chunk's portfolios with their
first active day and last snapshot in ``_snap_chunk``, and the (portfolio, day) pairs
to value in ``_snap_pairs`` (:mod:`.temp_tables`); one ``INSERT ... SELECT ... GROUP
BY ... ON CONFLICT`` then values every pair by the rules of
:mod:`snapshotter.core.valuation`. Every statement repeats the chunk's id bounds on
each table it reads, so the planner range-scans the chunk's rows once.

Snapshot columns (SPEC): total_value = holdings + cash; total_pnl = holdings - cost;
pnl_percent = pnl / cost x 100 (0 when cost is 0); a held lot without a close on D
is left out of holdings and cost, counted in position_count but not
priced_position_count, and makes the snapshot partial with its symbol in
missing_symbols (sorted, comma-separated, NULL when none).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa

from snapshotter.core.valuation import lot_held_on, money, portfolio_activity
from snapshotter.data.dialect import dadd, ddiv, dmul, dsign, dsub, dsum, sorted_csv
from snapshotter.data.schema import cash_transactions as cash
from snapshotter.data.schema import portfolio_snapshots as snaps
from snapshotter.data.schema import positions
from snapshotter.data.schema import symbol_prices_daily as prices
from snapshotter.data.temp_tables import chunk as chunk_t
from snapshotter.data.temp_tables import days as days_t
from snapshotter.data.temp_tables import pairs as pairs_t

FLOOR_DAY = date(1900, 1, 1)

SNAPSHOT_VALUE_COLUMNS = [
    "holdings_value", "cash_balance", "total_value", "total_cost", "total_pnl", "pnl_percent",
    "position_count", "priced_position_count", "is_partial", "missing_symbols",
]
SNAPSHOT_COLUMNS = ["portfolio_id", "snapshot_date", *SNAPSHOT_VALUE_COLUMNS, "created_at", "updated_at"]


@dataclass(frozen=True)
class Chunk:
    """A contiguous range of portfolio ids and the run's first, last and target day."""

    lo: object
    hi: object
    first_day: date
    last_day: date
    target: date

    def narrow(self, col):
        return sa.and_(col >= self.lo, col <= self.hi)


def fill_chunk(ch: Chunk, *, require_active: bool, ignore_existing: bool):
    """_snap_chunk <- the chunk's portfolios (active on the target when ``require_active``),
    their first activity day and their last snapshot (ignored for a forced run)."""
    act = portfolio_activity(ch.target, ch.narrow)
    if ignore_existing:
        after_day = sa.literal(FLOOR_DAY, sa.Date)
    else:
        # One index probe per portfolio: max() walks the unique (portfolio_id, snapshot_date) index backwards.
        last = sa.select(sa.func.max(snaps.c.snapshot_date)).where(snaps.c.portfolio_id == act.c.id).scalar_subquery()
        after_day = sa.func.coalesce(last, sa.literal(FLOOR_DAY, sa.Date))
    sel = sa.select(act.c.id, act.c.start_day, after_day)
    if require_active:
        sel = sel.where(act.c.active == sa.true())
    return chunk_t.insert().from_select(["portfolio_id", "start_day", "after_day"], sel)


def fill_pairs_after_last():
    """Days after each portfolio's last snapshot (all days when it has none)."""
    c, d = chunk_t, days_t
    sel = sa.select(c.c.portfolio_id, d.c.d, sa.false()).select_from(
        c.join(d, sa.and_(d.c.d > c.c.after_day, d.c.d >= c.c.start_day))
    )
    return pairs_t.insert().from_select(["portfolio_id", "d", "heal"], sel)


def fill_pairs_holes():
    """Hole days at or before the last snapshot that this portfolio still lacks."""
    c, d = chunk_t, days_t
    missing = ~sa.exists().where(snaps.c.portfolio_id == c.c.portfolio_id, snaps.c.snapshot_date == d.c.d)
    sel = (
        sa.select(c.c.portfolio_id, d.c.d, sa.false())
        .select_from(c.join(d, sa.and_(d.c.hole == sa.true(), d.c.d <= c.c.after_day, d.c.d >= c.c.start_day)))
        .where(missing)
    )
    return pairs_t.insert().from_select(["portfolio_id", "d", "heal"], sel)


def fill_pairs_heal(ch: Chunk):
    """Partial snapshots on the run's days: recomputed in case their closes arrived."""
    c, d = chunk_t, days_t
    sel = (
        sa.select(snaps.c.portfolio_id, snaps.c.snapshot_date, sa.true())
        .select_from(snaps.join(c, c.c.portfolio_id == snaps.c.portfolio_id).join(d, d.c.d == snaps.c.snapshot_date))
        .where(snaps.c.is_partial == sa.true(), ch.narrow(snaps.c.portfolio_id))
    )
    return pairs_t.insert().from_select(["portfolio_id", "d", "heal"], sel)


def pair_counts():
    """(portfolios getting new snapshots, new pairs, pairs to heal) in _snap_pairs."""
    pr = pairs_t
    new = pr.c.heal == sa.false()
    return sa.select(
        sa.func.count(sa.distinct(sa.case((new, pr.c.portfolio_id)))).label("portfolios"),
        sa.func.count(sa.case((new, 1))).label("new_pairs"),
        sa.func.count(sa.case((pr.c.heal == sa.true(), 1))).label("heal_pairs"),
    )


def backfilled_days(target: date):
    """Distinct days before ``target`` that get new snapshots."""
    pr = pairs_t
    return sa.select(pr.c.d).distinct().where(pr.c.heal == sa.false(), pr.c.d < target)


def existing_pairs():
    """How many pairs already have a snapshot (a forced run recomputes rather than creates them)."""
    pr = pairs_t
    return sa.select(sa.func.count()).select_from(pr).where(
        sa.exists().where(snaps.c.portfolio_id == pr.c.portfolio_id, snaps.c.snapshot_date == pr.c.d)
    )


def clear_chunk():
    """Empty the chunk's scratch tables (they live as long as the connection)."""
    return [pairs_t.delete(), chunk_t.delete()]


def valuation_select(ch: Chunk, heal: bool, now):
    """One row per pair in _snap_pairs (heal or not), valued by the SPEC rules.

    Two layers: the inner query computes every exact value once (total and P&L
    included), the outer one only rounds columns. PostgreSQL would otherwise inline each aggregate expression into
    every half-even CASE that reads it (four times per value); ``OFFSET 0`` keeps
    the inner query from being flattened (on SQLite it is harmless). A lot's cost
    (quantity x entry price) is computed once per lot, not once per lot and day.
    """
    pr = pairs_t
    pick = pr.c.heal == (sa.true() if heal else sa.false())
    held = (
        sa.select(
            positions.c.portfolio_id, positions.c.symbol, positions.c.quantity, positions.c.entry_date, positions.c.exit_date,
            positions.c.deleted_at, dmul(positions.c.quantity, positions.c.entry_price).label("lot_cost"),
        )
        .where(ch.narrow(positions.c.portfolio_id), positions.c.deleted_at.is_(None))
        .offset(0)  # a fence too: flattened, the lot cost would be computed per lot and day again
        .subquery("held")
    )
    priced = prices.c.close.is_not(None)
    lots = (
        sa.select(
            pr.c.portfolio_id,
            pr.c.d,
            dsum(dmul(held.c.quantity, prices.c.close)).label("holdings"),
            dsum(held.c.lot_cost).filter(priced).label("cost"),
            sa.func.count().label("n"),
            sa.func.count(prices.c.close).label("priced"),
            sorted_csv(held.c.symbol).filter(~priced).label("missing"),  # FILTER: only missing rows are sorted
        )
        .select_from(
            pr.join(held, sa.and_(held.c.portfolio_id == pr.c.portfolio_id, lot_held_on(held.c, pr.c.d))).outerjoin(
                prices,
                sa.and_(
                    prices.c.symbol == held.c.symbol,
                    prices.c.price_date == pr.c.d,
                    prices.c.price_date >= ch.first_day,
                    prices.c.price_date <= ch.last_day,
                ),
            )
        )
        .where(pick)
        .group_by(pr.c.portfolio_id, pr.c.d)
        .subquery("lots")
    )
    balances = (
        sa.select(pr.c.portfolio_id, pr.c.d, dsum(cash.c.amount).label("cash"))
        .select_from(
            pr.join(cash, sa.and_(cash.c.portfolio_id == pr.c.portfolio_id, ch.narrow(cash.c.portfolio_id), cash.c.txn_date <= pr.c.d))
        )
        .where(pick)
        .group_by(pr.c.portfolio_id, pr.c.d)
        .subquery("balances")
    )
    holdings = sa.func.coalesce(lots.c.holdings, 0)
    cost = sa.func.coalesce(lots.c.cost, 0)
    exact = (
        sa.select(
            pr.c.portfolio_id,
            pr.c.d,
            holdings.label("holdings"),
            sa.func.coalesce(balances.c.cash, 0).label("cash"),
            dadd(holdings, sa.func.coalesce(balances.c.cash, 0)).label("total"),
            cost.label("cost"),
            dsub(holdings, cost).label("pnl"),
            sa.case((dsign(cost) == 0, 0), else_=ddiv(dmul(dsub(holdings, cost), 100), cost)).label("pct"),
            sa.func.coalesce(lots.c.n, 0).label("n"),
            sa.func.coalesce(lots.c.priced, 0).label("priced"),
            lots.c.missing,
        )
        .select_from(
            pr.outerjoin(lots, sa.and_(lots.c.portfolio_id == pr.c.portfolio_id, lots.c.d == pr.c.d)).outerjoin(
                balances, sa.and_(balances.c.portfolio_id == pr.c.portfolio_id, balances.c.d == pr.c.d)
            )
        )
        .where(pick)
        .offset(0)  # the fence (see the docstring)
        .subquery("exact")
    )
    v = exact.c
    now_param = sa.literal(now, sa.DateTime(timezone=True))
    return sa.select(
        v.portfolio_id,
        v.d,
        money(v.holdings),
        money(v.cash),
        money(v.total),
        money(v.cost),
        money(v.pnl),
        money(v.pct),
        v.n,
        v.priced,
        v.n > v.priced,
        v.missing,
        now_param,
        now_param,
    ).where(sa.true())  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT (parser ambiguity)


def insert_snapshots(insert_fn, ch: Chunk, heal: bool, force: bool, now):
    """INSERT ... SELECT ... ON CONFLICT: new rows, healed partials, or forced recomputes."""
    stmt = insert_fn(snaps).from_select(SNAPSHOT_COLUMNS, valuation_select(ch, heal, now))
    if not heal and not force:
        return stmt.on_conflict_do_nothing(index_elements=["portfolio_id", "snapshot_date"])
    set_ = {c: stmt.excluded[c] for c in [*SNAPSHOT_VALUE_COLUMNS, "updated_at"]}
    where = None if force else stmt.excluded.priced_position_count > snaps.c.priced_position_count
    return stmt.on_conflict_do_update(index_elements=["portfolio_id", "snapshot_date"], set_=set_, where=where)
