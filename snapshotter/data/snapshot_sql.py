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

Which close values a lot on D is one rule, :func:`day_close`: the day's own close
(SPEC), or with ``--max-price-age N``, when there is none, the symbol's latest close
within the N trading days before D, read from ``_snap_stale_closes``
(:func:`fill_stale_closes`, once per run and connection). A lot valued at an older
close is priced (in holdings, cost and priced_position_count) and its symbol listed
in stale_symbols (same format as missing_symbols). Partial and stale snapshots on the run's days are recomputed and
rewritten when the result is better (:func:`improves`).

Corporate actions (when a split or ticker change is on file, ``Chunk.actions``): a lot is
valued at its quantity as of the day (:func:`snapshotter.core.valuation.lot_value`); its close,
C(D) and the day's step come from ``_snap_day_closes`` (:func:`day_close`, one equality join per
lot and day, as symbol_prices_daily's without them) and C(E) from ``_snap_steps`` only for a lot
with a split since its entry; missing and stale symbols name the lot's own symbol.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa

from snapshotter.core.valuation import lot_live, lot_open_on, lot_value, money, portfolio_activity
from snapshotter.data.steps_sql import entry_factor
from snapshotter.data.dialect import dadd, ddiv, dmul, dsign, dsub, dsum, sorted_csv
from snapshotter.data.schema import cash_transactions as cash
from snapshotter.data.schema import portfolio_snapshots as snaps
from snapshotter.data.schema import positions
from snapshotter.data.schema import symbol_prices_daily as prices
from snapshotter.data.temp_tables import chunk as chunk_t
from snapshotter.data.temp_tables import days as days_t
from snapshotter.data.temp_tables import pairs as pairs_t
from snapshotter.data.temp_tables import day_closes as day_closes_t
from snapshotter.data.temp_tables import stale_closes as stale_t

FLOOR_DAY = date(1900, 1, 1)

SNAPSHOT_VALUE_COLUMNS = [
    "holdings_value", "cash_balance", "total_value", "total_cost", "total_pnl", "pnl_percent",
    "position_count", "priced_position_count", "is_partial", "missing_symbols", "stale_symbols",
]
SNAPSHOT_COLUMNS = ["portfolio_id", "snapshot_date", *SNAPSHOT_VALUE_COLUMNS, "created_at", "updated_at"]


@dataclass(frozen=True)
class Chunk:
    """A contiguous range of portfolio ids, the run's first, last and target day and its
    --max-price-age (0: only the day's own close values a lot)."""

    lo: object
    hi: object
    first_day: date
    last_day: date
    target: date
    max_price_age: int = 0
    actions: bool = False  # a split or ticker change is on file: closes from _snap_day_closes (and C(E) from _snap_steps)

    def narrow(self, col):
        return sa.and_(col >= self.lo, col <= self.hi)


@dataclass(frozen=True)
class DayClose:
    """The close that values a lot on a day, as the valuation outer-joins it."""

    joins: tuple  # (table, on clause) pairs, outer-joined in order
    close: sa.ColumnElement  # NULL: no close, the lot is missing
    stale: sa.ColumnElement | None  # true when the close is older than the day; None: never (N = 0)
    step: object = None  # with corporate actions: the _snap_day_closes row (num, den, since, until of the day's step)

    def outerjoin(self, from_):
        for table, on in self.joins:
            from_ = from_.outerjoin(table, on)
        return from_


def day_close(ch: Chunk, symbol, day) -> DayClose:
    """The one rule for which close values a lot of ``symbol`` held on ``day``.

    SPEC (``--max-price-age 0``): the symbol's close on ``day``, from symbol_prices_daily
    (the run's day range repeated so the planner range-scans it). With N > 0, when there
    is no close on ``day``: the close with the greatest price_date in [``stale_from``,
    ``day``), where ``stale_from`` is :func:`snapshotter.core.valuation.price_window_start`
    (N trading days back), as ``_snap_stale_closes`` holds it (:func:`fill_stale_closes`);
    the lot is then stale. The day's own close always wins.

    Corporate actions (``ch.actions``): the day's close comes from ``_snap_day_closes`` by the
    lot's own symbol, which gives a stepped symbol's pricing symbol's close (the new symbol's
    after a ticker change) and its step on ``day``. A stale close is then the pricing symbol's,
    and one from before the step's first day is not comparable (a pre-split price, or the
    symbol before the change): it is not used and the lot is missing, as without --max-price-age.
    """
    if ch.actions:
        dc = day_closes_t
        own_t, own, own_close = dc, sa.and_(dc.c.symbol == symbol, dc.c.d == day), dc.c.close
        stale_symbol = sa.func.coalesce(dc.c.price_symbol, symbol)
    else:
        p = prices
        own_t, own_close, stale_symbol = p, p.c.close, symbol
        own = sa.and_(p.c.symbol == symbol, p.c.price_date == day, p.c.price_date >= ch.first_day, p.c.price_date <= ch.last_day)
    step = own_t if ch.actions else None
    if ch.max_price_age == 0:
        return DayClose(((own_t, own),), own_close, None, step)
    st = stale_t
    older = sa.and_(st.c.symbol == stale_symbol, st.c.d == day)
    if ch.actions:
        older = sa.and_(older, sa.or_(own_t.c.since.is_(None), st.c.price_date >= own_t.c.since))
    return DayClose(((own_t, own), (st, older)), sa.func.coalesce(own_close, st.c.close),
                    sa.and_(own_close.is_(None), st.c.close.is_not(None)), step)


def fill_stale_closes(first_from: date, last_day: date):
    """_snap_stale_closes <- for each candidate day d and each symbol without a close on d, its
    newest close in [d.stale_from, d) (:func:`day_close`; only with --max-price-age).

    Each close is paired with the candidate days strictly between it and the symbol's next
    close: empty for a symbol priced every day, so only the gaps produce rows. ``first_from``
    is the earliest ``stale_from``, ``last_day`` the last candidate day.
    """
    p, d = prices, days_t
    closes = (
        sa.select(
            p.c.symbol, p.c.price_date, p.c.close,
            sa.func.lead(p.c.price_date).over(partition_by=p.c.symbol, order_by=p.c.price_date).label("next_date"),
        )
        .where(p.c.price_date >= first_from, p.c.price_date <= last_day)
        .subquery("closes")
    )
    after_last = sa.literal(last_day + timedelta(days=1), sa.Date)
    sel = sa.select(closes.c.symbol, d.c.d, closes.c.close, closes.c.price_date).select_from(
        closes.join(d, sa.and_(
            d.c.d > closes.c.price_date,
            d.c.d < sa.func.coalesce(closes.c.next_date, after_last),
            d.c.stale_from <= closes.c.price_date,
        ))
    )
    return stale_t.insert().from_select(["symbol", "d", "close", "price_date"], sel)


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


def fill_pairs_heal_stale(ch: Chunk):
    """Complete snapshots valued at an older close on the run's days (with --max-price-age):
    recomputed in case the day's own close, or a newer one within the window, arrived. The
    partial index ``ix_portfolio_snapshots_stale`` finds them without reading the others."""
    c, d = chunk_t, days_t
    sel = (
        sa.select(snaps.c.portfolio_id, snaps.c.snapshot_date, sa.true())
        .select_from(snaps.join(c, c.c.portfolio_id == snaps.c.portfolio_id).join(d, d.c.d == snaps.c.snapshot_date))
        .where(snaps.c.stale_symbols.is_not(None), snaps.c.is_partial == sa.false(), ch.narrow(snaps.c.portfolio_id))
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


def _exact_values(ch: Chunk, heal: bool):
    """The inner layer of :func:`valuation_select`: one row per pair with every exact value
    (``portfolio_id, d, holdings, cash, total, cost, pnl, pct, n, priced, missing``, and
    ``stale`` with --max-price-age)."""
    pr = pairs_t
    pick = pr.c.heal == (sa.true() if heal else sa.false())
    held = (
        sa.select(
            positions.c.portfolio_id, positions.c.symbol, positions.c.quantity, positions.c.entry_date, positions.c.exit_date,
            dmul(positions.c.quantity, positions.c.entry_price).label("lot_cost"),
        )
        .where(ch.narrow(positions.c.portfolio_id), lot_live(positions.c))  # lot_held_on, its live half
        .offset(0)  # a fence too: flattened, the lot cost would be computed per lot and day again
        .subquery("held")
    )
    on_day = sa.and_(held.c.portfolio_id == pr.c.portfolio_id, lot_open_on(held.c, pr.c.d))  # and its day half
    from_ = pr.join(held, on_day)
    close = day_close(ch, held.c.symbol, pr.c.d)
    if ch.actions:  # C(D) and the day's step from the close's row; C(E) only for a lot with a split since its entry
        f = close.step
        same_step = sa.and_(f.c.since <= held.c.entry_date, held.c.entry_date < f.c.until)
        value = lot_value(held.c.quantity, close.close, f.c.num, f.c.den, *entry_factor(held.c.symbol, held.c.entry_date), same_step)
    else:
        value = lot_value(held.c.quantity, close.close)
    priced = close.close.is_not(None)
    per_lot = [
        dsum(value).label("holdings"),
        dsum(held.c.lot_cost).filter(priced).label("cost"),
        sa.func.count().label("n"),
        sa.func.count(close.close).label("priced"),
        sorted_csv(held.c.symbol).filter(~priced).label("missing"),  # FILTER: only missing rows are sorted
    ]
    if close.stale is not None:
        per_lot.append(sorted_csv(held.c.symbol).filter(close.stale).label("stale"))
    lots = (
        sa.select(pr.c.portfolio_id, pr.c.d, *per_lot)
        .select_from(close.outerjoin(from_))
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
    return (
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
            *([lots.c.stale] if close.stale is not None else []),
        )
        .select_from(
            pr.outerjoin(lots, sa.and_(lots.c.portfolio_id == pr.c.portfolio_id, lots.c.d == pr.c.d)).outerjoin(
                balances, sa.and_(balances.c.portfolio_id == pr.c.portfolio_id, balances.c.d == pr.c.d)
            )
        )
        .where(pick)
        .offset(0)  # the fence (see valuation_select)
        .subquery("exact")
    )


def valuation_select(ch: Chunk, heal: bool, now):
    """One row per pair in _snap_pairs (heal or not), valued by the SPEC rules (columns in
    the order of SNAPSHOT_COLUMNS).

    Two layers: the inner query (:func:`_exact_values`) computes every exact value once
    (total and P&L included), the outer one only rounds columns. PostgreSQL would otherwise inline each aggregate expression into
    every half-even CASE that reads it (four times per value); ``OFFSET 0`` keeps
    the inner query from being flattened (on SQLite it is harmless). A lot's cost
    (quantity x entry price) is computed once per lot, not once per lot and day.
    """
    v = _exact_values(ch, heal).c
    now_param = sa.literal(now, sa.DateTime(timezone=True))
    values = [
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
        v.stale if "stale" in v else sa.null(),
        now_param,
        now_param,
    ]
    return sa.select(*[c.label(name) for c, name in zip(values, SNAPSHOT_COLUMNS)]).where(
        sa.true()  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT (parser ambiguity)
    )


def _symbol_count(csv):
    """How many symbols a sorted_csv list names (0 for NULL); symbols never contain a comma."""
    return sa.case((csv.is_(None), 0), else_=sa.func.length(csv) - sa.func.length(sa.func.replace(csv, ",", "")) + 1)


def improves(new, old):
    """A recomputed snapshot replaces a stored one (healing) when more of its lots are priced;
    or, the stored one being stale, as many with fewer symbols valued at an older close (their
    own close arrived), or as many stale at a different value (a newer close within the window
    arrived). Never when fewer lots are priced. ``new`` and ``old`` have the snapshot columns
    priced_position_count, stale_symbols and holdings_value."""
    new_stale, old_stale = _symbol_count(new.stale_symbols), _symbol_count(old.stale_symbols)
    return sa.or_(
        new.priced_position_count > old.priced_position_count,
        sa.and_(
            new.priced_position_count == old.priced_position_count,
            old.stale_symbols.is_not(None),
            sa.or_(new_stale < old_stale, sa.and_(new_stale == old_stale, new.holdings_value != old.holdings_value)),
        ),
    )


def stale_valued(ch: Chunk):
    """How many of the new pairs would be valued with a stale close (a dry run; --max-price-age)."""
    v = _exact_values(ch, False)
    return sa.select(sa.func.count()).select_from(v).where(v.c.stale.is_not(None))


def stale_heals(ch: Chunk):
    """How many pairs to heal will be rewritten still valued with a stale close; asked before the
    heal statement (the same :func:`improves` decides), with --max-price-age."""
    e = _exact_values(ch, True)
    new = sa.select(
        e.c.portfolio_id, e.c.d, e.c.priced.label("priced_position_count"), e.c.stale.label("stale_symbols"),
        money(e.c.holdings).label("holdings_value"),
    ).subquery("recomputed")
    s = snaps
    return (
        sa.select(sa.func.count())
        .select_from(new.join(s, sa.and_(s.c.portfolio_id == new.c.portfolio_id, s.c.snapshot_date == new.c.d)))
        .where(new.c.stale_symbols.is_not(None), improves(new.c, s.c))
    )


def stale_written(new_only: bool = True):
    """How many of the new pairs (every pair: ``new_only=False``, the recompute) were written
    valued with a stale close; asked after the write."""
    pr = pairs_t
    return (
        sa.select(sa.func.count())
        .select_from(pr.join(snaps, sa.and_(snaps.c.portfolio_id == pr.c.portfolio_id, snaps.c.snapshot_date == pr.c.d)))
        .where(pr.c.heal == sa.false() if new_only else sa.true(), snaps.c.stale_symbols.is_not(None))
    )


def differs(new_values: list, old) -> sa.ColumnElement:
    """A recomputed snapshot is rewritten only when one of its values changed (``new_values`` in
    the order of SNAPSHOT_VALUE_COLUMNS, ``old`` the stored row's columns): an equal row stays as
    it was, updated_at included. On SQLite money compares as stored text (one spelling per value)."""
    return sa.tuple_(*[old[c] for c in SNAPSHOT_VALUE_COLUMNS]).is_distinct_from(sa.tuple_(*new_values))


def insert_snapshots(insert_fn, ch: Chunk, heal: bool, force: bool, now, only_differing: bool = False):
    """INSERT ... SELECT ... ON CONFLICT: new rows, healed partial and stale ones (when the
    recompute :func:`improves` them), or forced recomputes (every row; with ``only_differing``,
    the recompute of invalidated history on SQLite, only the rows that :func:`differs`)."""
    stmt = insert_fn(snaps).from_select(SNAPSHOT_COLUMNS, valuation_select(ch, heal, now))
    if not heal and not force:
        return stmt.on_conflict_do_nothing(index_elements=["portfolio_id", "snapshot_date"])
    set_ = {c: stmt.excluded[c] for c in [*SNAPSHOT_VALUE_COLUMNS, "updated_at"]}
    if force:
        where = differs([stmt.excluded[c] for c in SNAPSHOT_VALUE_COLUMNS], snaps.c) if only_differing else None
    else:
        where = improves(stmt.excluded, snaps.c)
    return stmt.on_conflict_do_update(index_elements=["portfolio_id", "snapshot_date"], set_=set_, where=where)


def rewrite_stored(ch: Chunk, now):
    """PostgreSQL, the recompute's rewrite of the chunk's stored rows (the pairs with ``heal``):
    one ``UPDATE ... FROM`` the valuation, a hash join over the chunk's range, writing only the
    rows that :func:`differs` (its row count). The pairs without a row are inserted by
    :func:`insert_snapshots` (``heal=False``) when there are any.

    Measured on a year of history: ``INSERT ... ON CONFLICT DO UPDATE`` paid a speculative
    insertion per row (an index probe, then the update) and wrote 1.6x the WAL of this UPDATE;
    ``MERGE`` (PostgreSQL 15) spent 1.4x this UPDATE's time writing the same rows; one statement
    doing both (the values in a CTE, the INSERT taking the pairs the UPDATE did not return) spent
    0.2-0.3 s a chunk of 100,000 pairs materialising and anti-joining what ``heal`` now says.
    """
    v = valuation_select(ch, True, now).subquery("recomputed")
    s = snaps
    return (
        s.update()
        .where(s.c.portfolio_id == v.c.portfolio_id, s.c.snapshot_date == v.c.snapshot_date, ch.narrow(s.c.portfolio_id),
               s.c.snapshot_date >= ch.first_day, s.c.snapshot_date <= ch.last_day,  # only the window's months are read
               differs([v.c[c] for c in SNAPSHOT_VALUE_COLUMNS], s.c))
        .values({c: v.c[c] for c in [*SNAPSHOT_VALUE_COLUMNS, "updated_at"]})
    )
