"""``symbol_splits`` and ``symbol_changes`` as the ingestion side writes them, and the questions it asks.

Writes change only what differs: a row that is new is inserted, a row whose values
changed is updated, an identical one is left alone (not even ``fetched_at``), so the
triggers of migration 0007 record an invalidation only for a real change and a rerun
is idempotent. When a split was last asked for is read from the symbol-batch runs'
``stats.splits_checked`` (written in the transaction that stores the splits, so a
crash cannot record a check whose splits were lost). The candidate pairs for the
suspected-split rule come from one window query (``LAG``) per chunk of symbols.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import sqlalchemy as sa

from snapshotter.core.corporate_actions import COARSE_FACTOR, SuspectedSplit, suspected_split
from snapshotter.core.validation import same_change, same_ratio
from snapshotter.data.dialect import bytewise
from snapshotter.data.planning_sql import chunks
from snapshotter.data.tracking import SYMBOL_BATCH
from snapshotter.data.schema import batch_run_tracking as brt
from snapshotter.data.schema import symbol_changes as sc
from snapshotter.data.schema import symbol_prices_daily as prices
from snapshotter.data.schema import symbol_splits as ss

CHECK_MEMORY_DAYS = 60  # split checks older than this are forgotten (the symbol is asked from the full lookback)
PREVIOUS_CLOSE_DAYS = 14  # calendar days before a window a pair's previous close is looked for


def store_splits(conn: sa.Connection, rows: list[dict], source: str, now: datetime) -> dict[str, int]:
    """Insert new splits, update those whose ratio changed (a provider's correction), leave the rest."""
    return _store_differing(conn, ss, ("symbol", "ex_date"), rows, source, now, same_ratio)


def store_symbol_changes(conn: sa.Connection, rows: list[dict], source: str, now: datetime) -> dict[str, int]:
    """Insert new ticker changes, update those whose new symbol changed, leave the rest."""
    return _store_differing(conn, sc, ("old_symbol", "effective_date"), rows, source, now, same_change)


def _store_differing(conn: sa.Connection, table: sa.Table, key: tuple[str, ...], rows: list[dict], source: str, now: datetime,
                     same) -> dict[str, int]:
    """``rows`` (validated, each with the key and value columns) into ``table``: a new key inserted, a
    stored row that is not ``same`` updated, the rest left alone (not even ``fetched_at``)."""
    values = [c for c in rows[0] if c not in key] if rows else []
    key_of = lambda r: tuple(r[c] for c in key)  # noqa: E731
    known: dict[tuple, dict] = {}
    for part in chunks(sorted({r[key[0]] for r in rows})):
        q = sa.select(*(table.c[c] for c in (*key, *values))).where(table.c[key[0]].in_(part))
        known.update({key_of(r._mapping): dict(r._mapping) for r in conn.execute(q)})
    new = [r for r in rows if key_of(r) not in known]
    changed = [r for r in rows if key_of(r) in known and not same(known[key_of(r)], r)]
    if new:
        conn.execute(table.insert(), [{**r, "source": source, "fetched_at": now} for r in new])
    for r in changed:
        conn.execute(
            table.update()
            .where(*(table.c[c] == r[c] for c in key))
            .values({**{c: r[c] for c in values}, "source": source, "fetched_at": now})
        )
    return {"inserted": len(new), "updated": len(changed), "unchanged": len(rows) - len(new) - len(changed)}


def splits_checked(conn: sa.Connection, provider: str, now: datetime) -> dict[str, date]:
    """Per symbol, the last day (New York) ``provider`` was asked about its splits, from the recent runs."""
    q = sa.select(brt.c.stats).where(brt.c.batch_type == SYMBOL_BATCH, brt.c.started_at >= now - timedelta(days=CHECK_MEMORY_DAYS))
    out: dict[str, date] = {}
    for (stats,) in conn.execute(q):
        check = stats.get("splits_checked") if isinstance(stats, dict) and stats.get("provider") == provider else None
        if not isinstance(check, dict) or not check.get("on"):
            continue
        on = date.fromisoformat(check["on"])
        for s in check.get("symbols") or []:
            out[s] = max(on, out.get(s, on))
    return out


def record_check(conn: sa.Connection, run_id: str, stats: dict) -> None:
    """The run's stats (holding ``splits_checked``), in the caller's transaction: with the splits, or not at all."""
    conn.execute(brt.update().where(brt.c.run_id == run_id).values(stats=stats))


def close_pairs(symbols, start: date, end: date):
    """Consecutive cached closes (prev_date, prev_close, price_date, close) of ``symbols`` (a list or a
    one-column select) with ``start <= price_date <= end`` that moved by a factor of 1.5 or more and
    have no split on file for ``price_date``: the candidates of :func:`core.corporate_actions.suspected_split`.

    One statement: ``LAG`` over the symbols' closes from ``PREVIOUS_CLOSE_DAYS`` before ``start``.
    """
    order = {"partition_by": bytewise(prices.c.symbol), "order_by": prices.c.price_date}
    w = (
        sa.select(
            prices.c.symbol,
            prices.c.price_date,
            prices.c.close,
            sa.func.lag(prices.c.price_date, type_=sa.Date).over(**order).label("prev_date"),
            sa.func.lag(prices.c.close, type_=prices.c.close.type).over(**order).label("prev_close"),
        )
        .where(prices.c.symbol.in_(symbols), prices.c.price_date.between(start - timedelta(days=PREVIOUS_CLOSE_DAYS), end))
        .subquery("w")
    )
    prev, close = sa.cast(w.c.prev_close, sa.Float), sa.cast(w.c.close, sa.Float)
    return (
        sa.select(w.c.symbol, w.c.prev_date, w.c.prev_close, w.c.price_date, w.c.close)
        .where(
            w.c.price_date >= start,
            w.c.prev_close.is_not(None),
            sa.or_(prev >= close * float(COARSE_FACTOR), close >= prev * float(COARSE_FACTOR)),
            ~sa.exists().where(ss.c.symbol == w.c.symbol, ss.c.ex_date == w.c.price_date),
        )
        .order_by(w.c.symbol, w.c.price_date)
    )


def suspected_splits(conn: sa.Connection, symbols, start: date, end: date) -> list[SuspectedSplit]:
    """The cached closes of ``symbols`` (a list, read in IN chunks, or a one-column select) with
    ``start <= price_date <= end`` that moved like a split with none on file: the rule
    :func:`snapshotter.core.corporate_actions.suspected_split` over :func:`close_pairs` (batch, ``status``)."""
    parts = chunks(symbols) if isinstance(symbols, list) else [symbols]
    found = (suspected_split(r.symbol, r.prev_date, r.prev_close, r.price_date, r.close)
             for part in parts for r in conn.execute(close_pairs(part, start, end)))
    return [x for x in found if x is not None]


def recent_splits(conn: sa.Connection, limit: int = 20) -> dict:
    """How many splits and ticker changes are on file, and the newest splits (status)."""
    n_splits = conn.execute(sa.select(sa.func.count()).select_from(ss)).scalar_one()
    n_changes = conn.execute(sa.select(sa.func.count()).select_from(sc)).scalar_one()
    rows = conn.execute(sa.select(ss).order_by(ss.c.ex_date.desc(), ss.c.symbol).limit(limit))
    return {"splits": n_splits, "symbol_changes": n_changes, "latest": [dict(r._mapping) for r in rows]}
