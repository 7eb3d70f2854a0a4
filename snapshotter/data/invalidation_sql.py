"""Snapshots stay true when the past changes: the recompute of invalidated history, set-based.

**Which history a write invalidates** (one rule; written down here and frozen as trigger
DDL in migration 0006, which records it in the writer's own transaction into
``snapshot_invalidations``): the earliest day whose value the write can change.

* a lot (``positions``): inserted or deleted (hard, or soft via ``deleted_at``): from its
  entry date; symbol, quantity, entry price, entry date or portfolio changed: from the
  earlier of the old and new entry dates; only the exit date changed: from the earlier
  of the old and new exit dates; moved between portfolios: both portfolios. A lot that
  is deleted before and after the write changes nothing.
* a cash transaction inserted, deleted or changed: from the earlier of its txn dates
  (both portfolios when it moves).
* a portfolio deleted or restored (``deleted_at`` changed): from the UTC date of the
  earlier timestamp.
* a close whose value changed (an identical upsert changes nothing), or a close that
  arrives for a day that already has snapshots: a *symbol* row from its date, which
  stands for every portfolio holding the symbol on or after that day (and, through ticker
  changes, every lot the symbol prices: :func:`_holders`).
* a split inserted (when snapshots exist from its ex_date), deleted or changed: a symbol
  row from its ex_date; a ticker change: a row for its old symbol from its effective date
  (migration 0007).
* nothing else: the engine's market-value update (last_price, market_value,
  market_value_date) and the snapshot writes record nothing.

**The recompute** (called by :mod:`snapshotter.jobs.snapshots` before every
portfolio-refresh and refresh, and by ``recompute``):

1. :func:`expand_symbols`: the symbol rows up to the run's high-water id become one
   portfolio row per holder, in one transaction (a crash after it loses nothing).
2. Per chunk of affected portfolio ids (keyset pagination, :func:`affected_ids`), one
   transaction: :func:`claim` deletes the chunk's rows up to the high-water id and puts
   each portfolio's earliest ``from_date`` into ``_inv_chunk``; :func:`describe` adds
   whether it is live, its first activity and its last snapshot; :func:`delete_stale`
   deletes its stored snapshots that are no longer :func:`due` (reading only those);
   :func:`fill_pairs` puts every due day of the window (``_snap_days``) into
   ``_snap_pairs``, marking the pairs that have a stored row (``heal``); the snapshot
   engine values the pairs once, rewrites the stored rows whose values differ
   (:func:`snapshotter.data.snapshot_sql.rewrite_stored` on PostgreSQL, an upsert on
   SQLite) and inserts the others. Rows written while the run works (a higher id) stay
   for the next run.
3. A deleted portfolio's history is kept as it was (its rows are consumed, nothing is
   written); restoring it recomputes from the deletion day, which backfills its gap.
   Days before the window (``--max-backfill-days``) are not recomputed: such rows are
   counted and reported (:func:`pending`).
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from snapshotter.core.valuation import portfolio_activity
from snapshotter.data.dialect import literal_rows
from snapshotter.data.schema import portfolio_snapshots as snaps
from snapshotter.data.schema import portfolios, positions
from snapshotter.data.schema import snapshot_invalidations as inv
from snapshotter.data.temp_tables import days as days_t
from snapshotter.data.temp_tables import pairs as pairs_t

metadata = sa.MetaData()
affected = sa.Table(
    "_inv_chunk", metadata,
    sa.Column("portfolio_id", sa.Uuid, primary_key=True),
    sa.Column("from_date", sa.Date, nullable=False),
    # filled by describe(): the portfolio is not deleted; its first activity (NULL: no lot or cash
    # left); its last snapshot (NULL: none)
    sa.Column("live", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("start_day", sa.Date),
    sa.Column("last_day", sa.Date),
    prefixes=["TEMPORARY"],
)


def high_water():
    """The newest invalidation id: a run consumes rows up to it, later ones stay for the next run."""
    return sa.select(sa.func.max(inv.c.id))


def pending(window_start: date | None = None, max_id=None):
    """(rows, oldest from_date, portfolio rows' distinct portfolios, symbol rows, rows from before ``window_start``)."""
    where = [] if max_id is None else [inv.c.id <= max_id]
    before = sa.func.count(sa.case((inv.c.from_date < window_start, 1))) if window_start else sa.literal(0)
    return sa.select(
        sa.func.count().label("rows"),
        sa.func.min(inv.c.from_date).label("oldest"),
        sa.func.count(sa.distinct(inv.c.portfolio_id)).label("portfolios"),
        sa.func.count(inv.c.symbol).label("symbols"),
        before.label("before_window"),
    ).where(*where)


def affected_portfolios(priced_by=()):
    """How many portfolios the pending rows affect (symbol rows expanded to their holders): ``status``."""
    sym = sa.select(inv.c.symbol, inv.c.from_date).where(inv.c.symbol.is_not(None)).subquery("symbol_rows")
    holders = _holders(sym, priced_by).with_only_columns(positions.c.portfolio_id.label("portfolio_id"))
    direct = sa.select(inv.c.portfolio_id.label("portfolio_id")).where(inv.c.portfolio_id.is_not(None))
    both = sa.union(direct, holders).subquery("affected")
    return sa.select(sa.func.count()).select_from(both)


def _holders(symbol_rows, priced_by=()):
    """Every portfolio holding a symbol of ``symbol_rows`` (symbol, from_date) on or after its date.

    Ticker changes: a symbol row also stands for the lots of every symbol it prices
    (``priced_by``: :func:`snapshotter.core.valuation.priced_by`, (pricing symbol, held symbol,
    first day) rows), from the later of its date and that first day: a close or split of the new
    symbol changes the lots still held under the old one (chains included).
    """
    r = symbol_rows
    if priced_by:
        al = literal_rows("priced_by", [("price_symbol", sa.Text()), ("held", sa.Text()), ("since", sa.Date())], list(priced_by))
        later = sa.case((al.c.since > r.c.from_date, al.c.since), else_=r.c.from_date)
        r = sa.union_all(
            sa.select(r.c.symbol.label("symbol"), r.c.from_date.label("from_date")),
            sa.select(al.c.held, later).select_from(r.join(al, al.c.price_symbol == r.c.symbol)),
        ).subquery("symbol_rows_held")
    return (
        sa.select(positions.c.portfolio_id, sa.func.min(r.c.from_date), sa.literal("close changed"))
        .select_from(r.join(positions, positions.c.symbol == r.c.symbol))
        .where(positions.c.deleted_at.is_(None), sa.or_(positions.c.exit_date.is_(None), positions.c.exit_date > r.c.from_date))
        .group_by(positions.c.portfolio_id)
    )


def expand_symbols(dialect_name: str, max_id, priced_by=()) -> list:
    """The symbol rows up to ``max_id`` become portfolio rows (one transaction); ``priced_by``:
    see :func:`_holders`.

    PostgreSQL: one statement (``DELETE ... RETURNING`` feeding the INSERT), so a row that
    commits between two statements can never be deleted unread. SQLite serialises
    writers: two statements in one transaction.
    """
    cols = ["portfolio_id", "from_date", "reason"]
    mine = sa.and_(inv.c.symbol.is_not(None), inv.c.id <= max_id)
    if dialect_name == "postgresql":
        gone = inv.delete().where(mine).returning(inv.c.symbol, inv.c.from_date).cte("gone")
        return [inv.insert().from_select(cols, _holders(gone, priced_by))]
    rows = sa.select(inv.c.symbol, inv.c.from_date).where(mine).subquery("symbol_rows")
    return [inv.insert().from_select(cols, _holders(rows, priced_by)), inv.delete().where(mine)]


def affected_ids(max_id, after, limit: int, portfolio_id=None):
    """The next page of portfolio ids with pending rows up to ``max_id`` (keyset pagination)."""
    q = (
        sa.select(inv.c.portfolio_id).distinct()
        .where(inv.c.portfolio_id.is_not(None), inv.c.id <= max_id)
        .order_by(inv.c.portfolio_id).limit(limit)
    )
    if portfolio_id is not None:
        q = q.where(inv.c.portfolio_id == portfolio_id)
    return q if after is None else q.where(inv.c.portfolio_id > after)


def claim(dialect_name: str, lo, hi, max_id) -> list:
    """_inv_chunk <- each portfolio lo..hi's earliest from_date; its rows up to ``max_id`` deleted
    (in the chunk's transaction: they go exactly when the recompute commits)."""
    mine = sa.and_(inv.c.portfolio_id >= lo, inv.c.portfolio_id <= hi, inv.c.id <= max_id)
    if dialect_name == "postgresql":
        gone = inv.delete().where(mine).returning(inv.c.portfolio_id, inv.c.from_date).cte("gone")
        sel = sa.select(gone.c.portfolio_id, sa.func.min(gone.c.from_date)).group_by(gone.c.portfolio_id)
        return [affected.insert().from_select(["portfolio_id", "from_date"], sel)]
    sel = sa.select(inv.c.portfolio_id, sa.func.min(inv.c.from_date)).where(mine).group_by(inv.c.portfolio_id)
    return [affected.insert().from_select(["portfolio_id", "from_date"], sel), inv.delete().where(mine)]


def describe(lo, hi, target: date) -> list:
    """_inv_chunk <- each claimed portfolio's ``live``, ``start_day`` and ``last_day``, which
    :func:`fill_pairs` and :func:`delete_stale` both read (:func:`due` is the rule)."""
    i = affected
    last = sa.select(sa.func.max(snaps.c.snapshot_date)).where(snaps.c.portfolio_id == i.c.portfolio_id).scalar_subquery()
    live = sa.exists().where(portfolios.c.id == i.c.portfolio_id, portfolios.c.deleted_at.is_(None))
    act = portfolio_activity(target, lambda col: sa.and_(col >= lo, col <= hi))
    return [  # one distributed table per statement (co-located on Citus: README "Running on Citus")
        i.update().values(live=live),
        i.update().values(last_day=last),
        i.update().where(i.c.portfolio_id == act.c.id).values(start_day=act.c.start_day),
    ]


def due(day):
    """The one rule for which days of a live affected portfolio (an _inv_chunk row) the recompute
    values: from its from_date and its first activity up to its last snapshot. Days after the last
    snapshot are the gaps pass's (portfolio-refresh, refresh), as before; a portfolio without
    snapshots or without any lot or cash has none. Its stored rows from from_date on other days
    are no longer due (:func:`delete_stale`)."""
    i = affected
    return sa.and_(i.c.live, day >= i.c.from_date, day >= i.c.start_day, day <= i.c.last_day)


def fill_pairs(lo, hi, first_day: date, last_day: date):
    """_snap_pairs <- every window day each affected portfolio is :func:`due`, with ``heal`` true
    when it has a stored row (rewritten where it differs) and false when it has none (created:
    its history extended back to a backdated first activity, or a hole).

    The stored rows are found by one hash join over the chunk's range of
    ``portfolio_snapshots`` (the caller prefers hash joins), not a probe per pair."""
    i, d, s = affected, days_t, snaps
    stored = (
        sa.select(s.c.portfolio_id, s.c.snapshot_date)
        .where(s.c.portfolio_id >= lo, s.c.portfolio_id <= hi, s.c.snapshot_date >= first_day, s.c.snapshot_date <= last_day)
        .subquery("stored")
    )
    sel = (
        sa.select(i.c.portfolio_id, d.c.d, stored.c.portfolio_id.is_not(None))
        .select_from(
            i.join(d, due(d.c.d)).outerjoin(stored, sa.and_(stored.c.portfolio_id == i.c.portfolio_id, stored.c.snapshot_date == d.c.d))
        )
        .order_by(i.c.portfolio_id, d.c.d)  # the recompute then reads and rewrites the chunk's rows in key order
    )
    return pairs_t.insert().from_select(["portfolio_id", "d", "heal"], sel)


def may_have_stale():
    """How many claimed portfolios can have stored rows :func:`delete_stale` deletes (live, and their
    first activity now after their from_date, or none left): most chunks have none, and skip it."""
    i = affected
    return sa.select(sa.func.count()).where(
        i.c.live, i.c.last_day.is_not(None), sa.or_(i.c.start_day.is_(None), i.c.start_day > i.c.from_date))


def delete_stale(lo, hi, window_start: date, target: date):
    """The chunk's stored snapshots from each live affected portfolio's from_date (in the window)
    that are no longer :func:`due`: before its new first activity, or all of them when it has no
    lot or cash left. Bounded by those days, it reads only the rows it deletes."""
    s, i = snaps, affected
    not_due = sa.exists().where(
        i.c.portfolio_id == s.c.portfolio_id, i.c.live, s.c.snapshot_date >= i.c.from_date,
        sa.or_(i.c.start_day.is_(None), s.c.snapshot_date < i.c.start_day),
    )
    return s.delete().where(
        s.c.portfolio_id >= lo, s.c.portfolio_id <= hi, s.c.snapshot_date >= window_start, s.c.snapshot_date <= target, not_due,
    )


def clear():
    return [affected.delete()]
