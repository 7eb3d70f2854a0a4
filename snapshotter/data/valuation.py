"""The SPEC valuation rules as set-based SQL, built without I/O.

Each statement works on a whole chunk of portfolios at once. The run's candidate
days sit in a temporary table (``_snap_days``), the chunk's portfolios with their
first active day and last snapshot in ``_snap_chunk``, and the (portfolio, day)
pairs to value in ``_snap_pairs``; one ``INSERT ... SELECT ... GROUP BY ... ON
CONFLICT`` then values every pair. The arithmetic goes through
:mod:`snapshotter.data.dialect`, so the same statements are exact on PostgreSQL
(NUMERIC) and SQLite (decimal text).

Rules (SPEC.md): a lot is held on D when entry_date <= D < exit_date (or no exit)
and it is not deleted; cash on D is the sum of amounts with txn_date <= D; a held
lot without a close on D is left out of holdings and cost, counted in
position_count but not priced_position_count, and makes the snapshot partial
with its symbol in missing_symbols (sorted, comma-separated, NULL when none);
total_value = holdings + cash; total_pnl = holdings - cost; pnl_percent =
pnl / cost x 100 (0 when cost is 0); every stored value rounded half-even to 6
decimals from the exact intermediate values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa

from snapshotter.data.dialect import Money, dadd, ddiv, dmul, dround, dsign, dsub, dsum, sorted_csv
from snapshotter.data.schema import MONEY_INT_DIGITS, MONEY_SCALE
from snapshotter.data.schema import cash_transactions as cash
from snapshotter.data.schema import portfolio_snapshots as snaps
from snapshotter.data.schema import portfolios, positions
from snapshotter.data.schema import symbol_prices_daily as prices

FLOOR_DAY = date(1900, 1, 1)

tmp = sa.MetaData()
days_t = sa.Table(
    "_snap_days", tmp,
    sa.Column("d", sa.Date, primary_key=True),
    sa.Column("hole", sa.Boolean, nullable=False),
    prefixes=["TEMPORARY"],
)
chunk_t = sa.Table(
    "_snap_chunk", tmp,
    sa.Column("portfolio_id", sa.Uuid, primary_key=True),
    sa.Column("start_day", sa.Date, nullable=True),
    sa.Column("after_day", sa.Date, nullable=False),
    prefixes=["TEMPORARY"],
)
pairs_t = sa.Table(
    "_snap_pairs", tmp,
    sa.Column("portfolio_id", sa.Uuid, primary_key=True),
    sa.Column("d", sa.Date, primary_key=True),
    sa.Column("heal", sa.Boolean, nullable=False),
    prefixes=["TEMPORARY"],
)
latest_t = sa.Table(
    "_latest_close", tmp,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("close", Money(20, 6), nullable=False),
    sa.Column("price_date", sa.Date, nullable=False),
    prefixes=["TEMPORARY"],
)


def money(expr):
    return dround(expr, MONEY_SCALE, MONEY_INT_DIGITS)


def held_on(day):
    return sa.and_(
        positions.c.deleted_at.is_(None),
        positions.c.entry_date <= day,
        sa.or_(positions.c.exit_date.is_(None), positions.c.exit_date > day),
    )


@dataclass(frozen=True)
class Chunk:
    """A contiguous range of portfolio ids and the run's first and last candidate day.

    Every statement repeats these bounds on each table it reads, so the planner
    range-scans the chunk's rows once instead of probing row by row or scanning
    whole tables.
    """

    lo: object
    hi: object
    first_day: date
    last_day: date
    target: date


def _in_chunk(col, ch: Chunk):
    return sa.and_(col >= ch.lo, col <= ch.hi)


def fill_chunk(ch: Chunk, *, require_active: bool, ignore_existing: bool):
    """_snap_chunk <- the chunk's portfolios, their first active day and last snapshot.

    Active (SPEC): not deleted, and holds a lot or has a non-zero cash balance on the
    target date. Lots and cash are aggregated per portfolio over the chunk's range.
    """
    p = portfolios
    t = ch.target
    lots = (
        sa.select(
            positions.c.portfolio_id,
            sa.func.min(positions.c.entry_date).label("first"),
            sa.func.max(sa.case((held_on(t), 1), else_=0)).label("holds"),
        )
        .where(_in_chunk(positions.c.portfolio_id, ch), positions.c.deleted_at.is_(None))
        .group_by(positions.c.portfolio_id)
        .subquery("chunk_lots")
    )
    money_ = (
        sa.select(
            cash.c.portfolio_id,
            sa.func.min(cash.c.txn_date).label("first"),
            dsign(dsum(sa.case((cash.c.txn_date <= t, cash.c.amount)))).label("sign"),
        )
        .where(_in_chunk(cash.c.portfolio_id, ch))
        .group_by(cash.c.portfolio_id)
        .subquery("chunk_cash")
    )
    start_day = sa.case(
        (lots.c.first.is_(None), money_.c.first),
        (sa.or_(money_.c.first.is_(None), lots.c.first <= money_.c.first), lots.c.first),
        else_=money_.c.first,
    )
    if ignore_existing:
        after_day = sa.literal(FLOOR_DAY, sa.Date)
    else:
        # One index probe per portfolio: max() walks the unique (portfolio_id, snapshot_date) index backwards.
        last = sa.select(sa.func.max(snaps.c.snapshot_date)).where(snaps.c.portfolio_id == p.c.id).scalar_subquery()
        after_day = sa.func.coalesce(last, sa.literal(FLOOR_DAY, sa.Date))
    cond = [_in_chunk(p.c.id, ch), p.c.deleted_at.is_(None), sa.or_(lots.c.first.is_not(None), money_.c.first.is_not(None))]
    if require_active:
        cond.append(sa.or_(lots.c.holds == 1, sa.func.coalesce(money_.c.sign, 0) != 0))
    sel = (
        sa.select(p.c.id, start_day, after_day)
        .select_from(p.outerjoin(lots, lots.c.portfolio_id == p.c.id).outerjoin(money_, money_.c.portfolio_id == p.c.id))
        .where(*cond)
    )
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
        .where(snaps.c.is_partial == sa.true(), _in_chunk(snaps.c.portfolio_id, ch))
    )
    return pairs_t.insert().from_select(["portfolio_id", "d", "heal"], sel)


def pair_counts(target: date):
    pr = pairs_t
    new = pr.c.heal == sa.false()
    return sa.select(
        sa.func.count(sa.distinct(sa.case((new, pr.c.portfolio_id)))).label("portfolios"),
        sa.func.count(sa.case((new, 1))).label("new_pairs"),
        sa.func.count(sa.case((pr.c.heal == sa.true(), 1))).label("heal_pairs"),
    )


def backfilled_days(target: date):
    pr = pairs_t
    return sa.select(pr.c.d).distinct().where(pr.c.heal == sa.false(), pr.c.d < target)


SNAPSHOT_VALUE_COLUMNS = [
    "holdings_value", "cash_balance", "total_value", "total_cost", "total_pnl", "pnl_percent",
    "position_count", "priced_position_count", "is_partial", "missing_symbols",
]
SNAPSHOT_COLUMNS = ["portfolio_id", "snapshot_date", *SNAPSHOT_VALUE_COLUMNS, "created_at", "updated_at"]


def valuation_select(ch: Chunk, heal: bool, now):
    """One row per pair in _snap_pairs (heal or not), valued by the SPEC rules.

    Two layers: the inner query computes every exact value once, the outer one
    rounds them. PostgreSQL would otherwise inline each aggregate expression into
    every half-even CASE that reads it (four times per value); ``OFFSET 0`` keeps
    the inner query from being flattened (on SQLite it is harmless). A lot's cost
    (quantity x entry price) is computed once per lot, not once per lot and day.
    """
    pr = pairs_t
    pick = pr.c.heal == (sa.true() if heal else sa.false())
    held = (
        sa.select(
            positions.c.portfolio_id, positions.c.symbol, positions.c.quantity, positions.c.entry_date, positions.c.exit_date,
            dmul(positions.c.quantity, positions.c.entry_price).label("lot_cost"),
        )
        .where(_in_chunk(positions.c.portfolio_id, ch), positions.c.deleted_at.is_(None))
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
            pr.join(
                held,
                sa.and_(
                    held.c.portfolio_id == pr.c.portfolio_id,
                    held.c.entry_date <= pr.c.d,
                    sa.or_(held.c.exit_date.is_(None), held.c.exit_date > pr.c.d),
                ),
            ).outerjoin(
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
            pr.join(
                cash,
                sa.and_(cash.c.portfolio_id == pr.c.portfolio_id, _in_chunk(cash.c.portfolio_id, ch), cash.c.txn_date <= pr.c.d),
            )
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
            cost.label("cost"),
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
        money(dadd(v.holdings, v.cash)),
        money(v.cost),
        money(dsub(v.holdings, v.cost)),
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


def fill_latest_closes():
    """_latest_close <- each symbol's most recent cached close."""
    newest = (
        sa.select(prices.c.symbol, sa.func.max(prices.c.price_date).label("m")).group_by(prices.c.symbol).subquery()
    )
    sel = sa.select(prices.c.symbol, prices.c.close, prices.c.price_date).select_from(
        prices.join(newest, sa.and_(newest.c.symbol == prices.c.symbol, newest.c.m == prices.c.price_date))
    )
    return latest_t.insert().from_select(["symbol", "close", "price_date"], sel)


def update_market_values(scope):
    """Open lots in ``scope`` get last_price / market_value / market_value_date from the latest close.

    Lots already right are not rewritten. ``scope`` is :func:`chunk_scope`,
    :func:`span_scope` or both.
    """
    lp = latest_t
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


def chunk_scope(ch: Chunk):
    return _in_chunk(positions.c.portfolio_id, ch)


@dataclass(frozen=True)
class Span:
    """A physical slice of ``positions``: heap blocks [lo, hi) on PostgreSQL, rowids [lo, hi) on SQLite.

    The nightly market-value update rewrites every open lot. Walked in portfolio-id
    order it visits each heap page once per lot on it (ids are random, rows are
    stored in insertion order); walked in physical slices each page is read and
    written once, and the update takes half the time. ``hi`` None: to the end,
    so rows added while the run goes are included.
    """

    lo: int
    hi: int | None


PG_SPAN_BLOCKS = 10_000  # 80 MB of heap, about 180,000 lots at fillfactor 50
SQLITE_SPAN_ROWS = 200_000


def span_scope(span: Span, dialect: str):
    if dialect == "postgresql":
        lo = sa.text("positions.ctid >= CAST(:span_lo AS tid)").bindparams(span_lo=f"({span.lo},0)")
        hi = None if span.hi is None else sa.text("positions.ctid < CAST(:span_hi AS tid)").bindparams(span_hi=f"({span.hi},0)")
    else:
        lo = sa.text("positions.rowid >= :span_lo").bindparams(span_lo=span.lo)
        hi = None if span.hi is None else sa.text("positions.rowid < :span_hi").bindparams(span_hi=span.hi)
    return lo if hi is None else sa.and_(lo, hi)


def positions_extent(dialect: str):
    """(first, last) physical address of ``positions``: blocks on PostgreSQL, rowids on SQLite."""
    if dialect == "postgresql":
        return sa.text("SELECT 0, pg_relation_size('positions') / current_setting('block_size')::int")
    return sa.text("SELECT coalesce(min(rowid), 0), coalesce(max(rowid), 0) FROM positions")


def spans(first: int, last: int, step: int) -> list[Span]:
    """Slices of ``step`` covering [first, last]; the last one open-ended. Pure."""
    starts = list(range(first, last + 1, step)) or [first]
    return [Span(lo, starts[i + 1] if i + 1 < len(starts) else None) for i, lo in enumerate(starts)]


def portfolios_in_span(span: Span, dialect: str):
    """The portfolios with open lots in a span (a failed span is retried portfolio by portfolio)."""
    pos = positions
    return (
        sa.select(pos.c.portfolio_id).distinct()
        .where(span_scope(span, dialect), pos.c.exit_date.is_(None), pos.c.deleted_at.is_(None))
        .order_by(pos.c.portfolio_id)
    )


def priced_days_between(start: date, end: date):
    return sa.select(prices.c.price_date).distinct().where(prices.c.price_date >= start, prices.c.price_date <= end)


def days_without_snapshots(start: date, end: date):
    """Priced days in [start, end] with no snapshot for any portfolio (index probes)."""
    d = prices.c.price_date
    return sa.select(d).distinct().where(d >= start, d <= end, ~sa.exists().where(snaps.c.snapshot_date == d))
