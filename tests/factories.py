"""Tiny builders for test data (every money value is a Decimal) and a fake clock.

A plain helper module: fixtures live in conftest.py.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from decimal import Decimal

import sqlalchemy as sa

from snapshotter.core.calendar import trading_days_between
from snapshotter.data import partitions, schema
from snapshotter.jobs import snapshots as job
from snapshotter.clock import utcnow

D = date.fromisoformat
# The instant the tests run "as of" (jobs take ``now``; nothing reads the clock): effective trading date 2026-12-04.
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
NOV = trading_days_between(D("2026-11-02"), D("2026-11-24"))  # 17 trading days


def closes(base: str, days=NOV) -> dict:
    """Distinct exact closes per day, as a provider fake serves them: base + day-of-month/100."""
    return {d: str(Decimal(base) + Decimal(d.day) / 100) for d in days}


class FakeClock:
    """A monotonic clock and a sleep that only advances it: rate limits and backoff cost no real time."""

    def __init__(self):
        self.t = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(round(s, 6))
        self.t += s


def add_portfolio(conn, name="p", pid=None, deleted=False) -> uuid.UUID:
    pid = pid or uuid.uuid4()
    conn.execute(schema.portfolios.insert().values(id=pid, name=name, deleted_at=utcnow() if deleted else None))
    return pid


def add_lot(conn, pid, symbol, qty, entry_price, entry_date, exit_date=None, deleted=False) -> uuid.UUID:
    lid = uuid.uuid4()
    conn.execute(
        schema.positions.insert().values(
            id=lid, portfolio_id=pid, symbol=symbol, quantity=Decimal(str(qty)), entry_price=Decimal(str(entry_price)),
            entry_date=D(entry_date) if isinstance(entry_date, str) else entry_date,
            exit_date=(D(exit_date) if isinstance(exit_date, str) else exit_date),
            deleted_at=utcnow() if deleted else None,
        )
    )
    return lid


def add_cash(conn, pid, txn_date, amount):
    conn.execute(
        schema.cash_transactions.insert().values(
            id=uuid.uuid4(), portfolio_id=pid, txn_date=D(txn_date) if isinstance(txn_date, str) else txn_date, amount=Decimal(str(amount))
        )
    )


def add_close(conn, symbol, day, close):
    conn.execute(
        schema.symbol_prices_daily.insert().values(
            symbol=symbol, price_date=D(day) if isinstance(day, str) else day, close=Decimal(str(close)), source="test",
            fetched_at=utcnow(),
        )
    )


def add_closes(conn, symbol, closes: dict):
    for day, close in closes.items():
        add_close(conn, symbol, day, close)


def complete_symbol_batch(conn, target):
    now = datetime.now(timezone.utc)
    conn.execute(
        schema.batch_run_tracking.insert().values(
            run_id=uuid.uuid4().hex, batch_type="symbol_batch", target_date=D(target) if isinstance(target, str) else target,
            status="completed", started_at=now, finished_at=now, heartbeat_at=now, stats={},
        )
    )


def snapshots(engine, pid=None) -> list[dict]:
    s = schema.portfolio_snapshots
    q = sa.select(s).order_by(s.c.portfolio_id, s.c.snapshot_date)
    if pid is not None:
        q = q.where(s.c.portfolio_id == pid)
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(q)]


def snapshot_dates(engine, pid) -> list[str]:
    return [r["snapshot_date"].isoformat() for r in snapshots(engine, pid)]


VALUE_KEYS = ("holdings_value", "cash_balance", "total_value", "total_cost", "total_pnl", "pnl_percent",
              "position_count", "priced_position_count", "is_partial", "missing_symbols")


def values(row: dict) -> tuple:
    return tuple(row[k] for k in VALUE_KEYS)


def crash_on_call(monkeypatch, name: str, nth: int, module=job) -> None:
    """Make the job's chunk function ``name`` (of ``module``, the snapshot engine by default) raise on
    its ``nth`` call, as if the process died there."""
    original, calls = getattr(module, name), {"n": 0}

    def crashing(*a, **kw):
        calls["n"] += 1
        if calls["n"] >= nth:
            raise KeyboardInterrupt("simulated crash")
        return original(*a, **kw)

    monkeypatch.setattr(module, name, crashing)


def add_snapshot(conn, pid, day, total, partial=False, missing=None):
    """A stored row as the engine writes it (money with 6 decimals), as another writer would:
    on PostgreSQL its month's partition made first, as every job does before writing."""
    now = datetime.now(timezone.utc)
    total = Decimal(str(total))
    m = lambda v: Decimal(v).quantize(Decimal("0.000001"))  # noqa: E731
    partitions.ensure_snapshot_partitions(conn, day, day)
    conn.execute(
        schema.portfolio_snapshots.insert().values(
            portfolio_id=pid, snapshot_date=day, holdings_value=m(total - 10), cash_balance=m(10), total_value=m(total),
            total_cost=m(50), total_pnl=m(total - 60), pnl_percent=m((total - 60) * 2), position_count=2,
            priced_position_count=1 if partial else 2, is_partial=partial, missing_symbols=missing, created_at=now, updated_at=now,
        )
    )


def add_split(conn, symbol, ex_date, split_from, split_to, source="test"):
    """A row of symbol_splits as another application writes it (10-for-1: from 1, to 10)."""
    conn.execute(
        schema.symbol_splits.insert().values(
            symbol=symbol, ex_date=D(ex_date) if isinstance(ex_date, str) else ex_date,
            split_from=Decimal(str(split_from)), split_to=Decimal(str(split_to)), source=source, fetched_at=utcnow(),
        )
    )


def add_symbol_change(conn, old_symbol, new_symbol, effective_date, source="test"):
    """A row of symbol_changes: from ``effective_date`` on, ``old_symbol`` trades as ``new_symbol``."""
    conn.execute(
        schema.symbol_changes.insert().values(
            old_symbol=old_symbol, new_symbol=new_symbol,
            effective_date=D(effective_date) if isinstance(effective_date, str) else effective_date,
            source=source, fetched_at=utcnow(),
        )
    )
