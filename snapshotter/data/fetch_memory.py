"""What the symbol batch remembers between runs: the bars it rejected and the symbols that keep failing.

Rejected bars (``price_rejections``) make a rerun with the same provider answers end
the same way: a rejected day is "known", not missing, so it is not asked for again
(except inside the correction overlap), and rejecting it again is not a new failure.
Failing symbols (``symbol_fetch_failures``) carry the state of
:mod:`snapshotter.core.symbol_health`.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa

from snapshotter.core.symbol_health import SymbolHealth
from snapshotter.data.dialect import dialect_insert
from snapshotter.data.planning_sql import chunks
from snapshotter.data.schema import price_rejections as rej
from snapshotter.data.schema import symbol_fetch_failures as sff

RECENT_REJECTIONS = 20


def rejected_days(conn: sa.Connection, symbols: list[str], date_from: date, date_to: date) -> dict[str, set[date]]:
    out: dict[str, set[date]] = {}
    for part in chunks(symbols):
        q = sa.select(rej.c.symbol, rej.c.price_date).where(rej.c.symbol.in_(part), rej.c.price_date.between(date_from, date_to))
        for s, d in conn.execute(q):
            out.setdefault(s, set()).add(d)
    return out


def last_rejected(conn: sa.Connection, symbols: list[str], target: date) -> dict[str, date]:
    out: dict[str, date] = {}
    for part in chunks(symbols):
        q = (
            sa.select(rej.c.symbol, sa.func.max(rej.c.price_date))
            .where(rej.c.symbol.in_(part), rej.c.price_date <= target)
            .group_by(rej.c.symbol)
        )
        out.update({s: d for s, d in conn.execute(q)})
    return out


def remember_rejections(conn: sa.Connection, rejected, source: str, now: datetime) -> int:
    """Upsert the dated rejections; returns how many of them were not known before (new failures)."""
    dated = {(r.symbol, r.price_date): r.reason for r in rejected if r.price_date is not None}
    if not dated:
        return 0
    by_symbol: dict[str, list[date]] = {}
    for symbol, day in dated:
        by_symbol.setdefault(symbol, []).append(day)
    known = {
        (symbol, day)
        for symbol, days in by_symbol.items()
        for day in conn.execute(sa.select(rej.c.price_date).where(rej.c.symbol == symbol, rej.c.price_date.in_(days))).scalars()
    }
    stmt = dialect_insert(conn, rej)
    stmt = stmt.on_conflict_do_update(
        index_elements=["symbol", "price_date"],
        set_={"reason": stmt.excluded.reason, "source": stmt.excluded.source, "last_seen_at": stmt.excluded.last_seen_at,
              "times_seen": rej.c.times_seen + 1},
    )
    conn.execute(stmt, [
        {"symbol": s, "price_date": d, "reason": reason[:500], "source": source, "first_seen_at": now, "last_seen_at": now, "times_seen": 1}
        for (s, d), reason in sorted(dated.items())
    ])
    return len(set(dated) - known)


def forget_rejections(conn: sa.Connection, rows: list[dict]) -> None:
    """A day that now has a stored close is not a rejection any more (the provider corrected it)."""
    by_symbol: dict[str, list[date]] = {}
    for r in rows:
        by_symbol.setdefault(r["symbol"], []).append(r["price_date"])
    for symbol, days in by_symbol.items():
        conn.execute(rej.delete().where(rej.c.symbol == symbol, rej.c.price_date.in_(days)))


def load_health(conn: sa.Connection, symbols: list[str]) -> dict[str, SymbolHealth]:
    out: dict[str, SymbolHealth] = {}
    for part in chunks(symbols):
        for r in conn.execute(sa.select(sff).where(sff.c.symbol.in_(part))):
            out[r.symbol] = SymbolHealth(**dict(r._mapping))
    return out


def save_health(conn: sa.Connection, health: SymbolHealth) -> None:
    values = {k: getattr(health, k) for k in sff.c.keys()}
    stmt = dialect_insert(conn, sff)
    conn.execute(stmt.on_conflict_do_update(index_elements=["symbol"], set_={k: stmt.excluded[k] for k in values if k != "symbol"}), values)


def clear_health(conn: sa.Connection, symbols: list[str]) -> None:
    for part in chunks(symbols):
        conn.execute(sff.delete().where(sff.c.symbol.in_(part)))


def unavailable_held(conn: sa.Connection, needed: list[str]) -> list[dict]:
    """Symbols marked unavailable that the portfolios still need (``needed``: status's
    :func:`snapshotter.data.planning_sql.symbols_needed` on the day)."""
    q = sa.select(sff).where(sff.c.unavailable_since.is_not(None)).order_by(sff.c.symbol)
    wanted = set(needed)
    return [dict(r._mapping) for r in conn.execute(q) if r.symbol in wanted]


def recent_rejections(conn: sa.Connection, limit: int = RECENT_REJECTIONS) -> dict:
    """How many bars are remembered as rejected, and the latest seen (status)."""
    count = conn.execute(sa.select(sa.func.count()).select_from(rej)).scalar_one()
    rows = conn.execute(sa.select(rej).order_by(rej.c.last_seen_at.desc(), rej.c.symbol, rej.c.price_date).limit(limit))
    return {"count": count, "latest": [dict(r._mapping) for r in rows]}
