"""Human-readable tables for the terminal (rich); machines use --json instead."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()


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
