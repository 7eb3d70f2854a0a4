"""What an operator asks first: schema version, table sizes, the last runs, lag."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from snapshotter import db, schema, tracking

COUNTED = ("portfolios", "positions", "cash_transactions", "watchlist", "symbol_prices_daily", "portfolio_snapshots", "batch_run_tracking")


def status_report(engine: sa.Engine, runs: int = 10) -> dict:
    report: dict = {"schema_revision": db.current_revision(engine), "schema_head": db.head_revision()}
    if report["schema_revision"] is None:
        report["tables"] = {}
        report["last_runs"] = []
        return report
    with engine.connect() as conn:
        report["tables"] = {
            name: conn.execute(sa.select(sa.func.count()).select_from(schema.metadata.tables[name])).scalar_one()
            for name in COUNTED
        }
        report["last_runs"] = [_run_view(r) for r in tracking.last_runs(conn, runs)]
        report["newest_snapshot_date"] = _iso(
            conn.execute(sa.select(sa.func.max(schema.portfolio_snapshots.c.snapshot_date))).scalar()
        )
        report["newest_price_date"] = _iso(conn.execute(sa.select(sa.func.max(schema.symbol_prices_daily.c.price_date))).scalar())
    return report


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


def _run_view(r: dict) -> dict:
    duration = None
    if r.get("finished_at") and r.get("started_at"):
        duration = round((r["finished_at"] - r["started_at"]).total_seconds(), 1)
    return {
        "run_id": r["run_id"],
        "batch_type": r["batch_type"],
        "target_date": _iso(r["target_date"]),
        "status": r["status"],
        "started_at": r["started_at"].isoformat() if r["started_at"] else None,
        "duration_s": duration,
        "stats": r.get("stats") or {},
        "error": r.get("error"),
    }
