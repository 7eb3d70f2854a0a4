"""Human-readable tables for the terminal (rich); machines use --json instead."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

import sys

# Off a TTY (cron, make, CI logs) rich would wrap tables at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)


def print_status(report: dict) -> None:
    console.print(f"schema: {report['schema_revision'] or 'none'} (head {report['schema_head']})")
    if report.get("tables"):
        t = Table("table", "rows", title="tables")
        for name, n in report["tables"].items():
            t.add_row(name, f"{n:,}")
        console.print(t)
    for key in ("newest_price_date", "newest_snapshot_date"):
        if key in report:
            console.print(f"{key.replace('_', ' ')}: {report[key] or '-'}")
    if report.get("last_runs"):
        t = Table("type", "target", "status", "started", "duration s", "stats", title="last runs")
        for r in report["last_runs"]:
            stats = ", ".join(f"{k}={v}" for k, v in (r["stats"] or {}).items() if not isinstance(v, (list, dict)))
            t.add_row(r["batch_type"], r["target_date"] or "-", r["status"], r["started_at"] or "-", str(r["duration_s"] or "-"), stats)
        console.print(t)


def print_preview(result) -> None:
    """--dry-run: the snapshots that would be written (first rows) and the totals."""
    s = result.stats
    t = Table("portfolio", "date", "holdings", "cash", "total", "cost", "pnl", "pnl %", "lots", "priced", "partial", "missing",
              title=f"dry run: {s['snapshots_created']} snapshots would be created, {s['snapshots_recomputed']} partial ones recomputed")
    for r in result.preview:
        t.add_row(str(r["portfolio_id"])[:8], str(r["snapshot_date"]), *(str(r[k]) for k in (
            "holdings_value", "cash_balance", "total_value", "total_cost", "total_pnl", "pnl_percent",
            "position_count", "priced_position_count", "is_partial")), r["missing_symbols"] or "")
    console.print(t)


def latest_snapshots(engine, limit: int) -> list[dict]:
    """Each live portfolio's newest snapshot, newest-valued first (one grouped query)."""
    import sqlalchemy as sa

    from snapshotter.schema import portfolio_snapshots as s
    from snapshotter.schema import portfolios as p

    newest = sa.select(s.c.portfolio_id, sa.func.max(s.c.snapshot_date).label("d")).group_by(s.c.portfolio_id).subquery()
    q = (
        sa.select(p.c.name, s)
        .select_from(s.join(newest, sa.and_(newest.c.portfolio_id == s.c.portfolio_id, newest.c.d == s.c.snapshot_date)).join(p, p.c.id == s.c.portfolio_id))
        .where(p.c.deleted_at.is_(None))
        .order_by(p.c.name, s.c.portfolio_id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def print_latest(rows: list[dict]) -> None:
    t = Table("portfolio", "date", "total value", "holdings", "cash", "cost", "P&L", "P&L %", "lots", "partial", title="latest snapshots")
    for r in rows:
        t.add_row(
            r["name"], str(r["snapshot_date"]), f"{r['total_value']:,.2f}", f"{r['holdings_value']:,.2f}", f"{r['cash_balance']:,.2f}",
            f"{r['total_cost']:,.2f}", f"{r['total_pnl']:,.2f}", f"{r['pnl_percent']:.2f}",
            f"{r['priced_position_count']}/{r['position_count']}", (r["missing_symbols"] or "yes") if r["is_partial"] else "",
        )
    console.print(t)
