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
        t = Table("table", "rows", title="tables (~: the planner's estimate)" if report.get("tables_estimated") else "tables")
        for name, n in report["tables"].items():
            t.add_row(name, ("~" if name in report.get("tables_estimated", ()) else "") + f"{n:,}")
        console.print(t)
    console.print(f"effective trading date: {report['effective_trading_date']}")
    if "newest_price_date" in report:
        console.print(f"newest price date: {report['newest_price_date'] or '-'}")
    snaps = report.get("snapshots")
    if snaps is not None:
        lag = snaps["lag_trading_days"]
        console.print(
            f"newest snapshot date: {report['newest_snapshot_date'] or '-'}"
            + (f" ({lag} trading day{'s' if lag != 1 else ''} behind)" if lag is not None else "")
        )
        if report["newest_snapshot_date"]:
            console.print(
                f"active portfolios behind it: {snaps['portfolios_behind']:,} of {snaps['active_portfolios']:,}"
                + (f" (oldest {snaps['oldest_behind_date']})" if snaps["oldest_behind_date"] else "")
                + (f", {snaps['portfolios_without_snapshot']:,} without any snapshot" if snaps["portfolios_without_snapshot"] else "")
            )
    missing = report.get("missing_closes")
    if missing is not None:
        listed = ", ".join(missing["symbols"]) + (", ..." if missing["count"] > len(missing["symbols"]) else "")
        console.print(f"symbols without a close for {missing['date']}: {missing['count']}" + (f" ({listed})" if listed else ""))
    for u in report.get("unavailable_symbols") or []:
        console.print(
            f"unavailable: {u['symbol']} since {u['unavailable_since']} ({u['consecutive_failures']} nights failing, "
            f"next attempt {u['next_attempt_on']}): {u['last_error']}", markup=False, highlight=False,
        )
    inv = report.get("invalidations")
    if inv is not None:
        console.print(
            f"invalidated history pending: {inv['pending']:,} rows"
            + (f", {inv['portfolios']:,} portfolios affected, from {inv['oldest_from_date']}"
               + (f" ({inv['symbol_rows']:,} close corrections)" if inv["symbol_rows"] else "") if inv["pending"] else ""),
            markup=False,
        )
    for x in report.get("possible_unrecorded_splits") or []:
        console.print(f"possible unrecorded split: {x['symbol']} {x['day']} ({x['ratio']}: {x['prev_close']} on {x['prev_date']} -> "
                      f"{x['close']}); load it with `snapshotter load --splits FILE` if it is one", markup=False, highlight=False)
    rejected = report.get("rejected_bars")
    if rejected and rejected["count"]:
        console.print(f"rejected bars remembered: {rejected['count']}", markup=False)
        for r in rejected["latest"][:5]:
            console.print(f"  {r['symbol']} {r['price_date']} ({r['source']}, seen {r['times_seen']}x): {r['reason']}", markup=False, highlight=False)
    for kind, runs in (report.get("last_runs") or {}).items():
        t = Table("target", "status", "started", "duration s", "stats", "error", title=f"last runs: {kind}")
        for r in runs:
            status = f"{r['status']} (dead)" if r["dead"] else r["status"]
            stats = ", ".join(f"{k}={v}" for k, v in r["stats"].items())
            t.add_row(r["target_date"] or "-", status, r["started_at"] or "-", _or_dash(r["duration_s"]), stats, r["error"] or "")
        console.print(t)
    for r in report.get("dead_runs") or []:
        console.print(
            f"dead: {r['batch_type']} run {r['run_id']} (target {r['target_date']}, host {r['host']}, pid {r['pid']}) "
            f"still 'running', last heartbeat {r['heartbeat_at'] or 'never'}; its next run marks it interrupted"
        )


def _or_dash(v) -> str:
    return "-" if v is None else str(v)


def refresh_line(result) -> str:
    """The one summary line of portfolio-refresh, refresh and backfill."""
    s = result.stats
    what = {"gaps": "portfolio-refresh", "dates": "refresh", "force": "refresh --force"}.get(s["mode"], s["mode"])
    stale = f" ({s['snapshots_stale']} valued at an older close)" if s.get("max_price_age") else ""
    return (
        f"{what} {s['target_date']}: {s['snapshots_created']} snapshots created, "
        f"{s['snapshots_recomputed']} recomputed{stale}, {s['portfolios_failed']} portfolios failed, "
        f"{s['portfolios_skipped']} up to date"
        + (f"; invalidated history of {s['portfolios_invalidated']} portfolios: {s['snapshots_recomputed_by_invalidation']} "
           f"recomputed, {s['snapshots_created_by_invalidation']} created, {s['snapshots_deleted_by_invalidation']} deleted"
           if s.get("portfolios_invalidated") else "")
        + (f"; {s['invalidations_before_window']} invalidations from before the window (oldest {s['invalidations_oldest_from']}) "
           "not recomputed there" if s.get("invalidations_before_window") else "")
        + f", {s['duration_s']}s"
    )


def prune_line(result) -> str:
    """The one summary line of prune (a dry run says what would go)."""
    s = result.stats
    span = f" ({s['oldest_pruned_date']}..{s['newest_pruned_date']})" if s["snapshots_deleted"] else ""
    return (
        f"{'dry run: ' if s['dry_run'] else ''}prune {s['target_date']} --keep-daily {s['keep_daily']} --then {s['then']}: "
        f"cutoff {s['cutoff']}, {s['snapshots_deleted']} snapshots {'would be ' if s['dry_run'] else ''}deleted from "
        f"{s['portfolios_pruned']} portfolios{span}, {s['months_kept']} month-end snapshots kept before the cutoff, "
        + (f"{s['partitions_compacted']} month partitions rewritten compact ({s['compacted_mb_before']} MB -> "
           f"{s['compacted_mb_after']} MB), "
           if s.get("partitions_compacted") else "")
        + f"{s['duration_s']}s"
    )


def quality(r: dict, partial: str) -> str:
    """A snapshot's partial/stale note for a table: ``partial`` when partial, ``stale: X`` when
    symbols were valued at an older close (--max-price-age), both separated by "; "."""
    notes = [partial] if r["is_partial"] else []
    if r.get("stale_symbols"):
        notes.append(f"stale: {r['stale_symbols']}")
    return "; ".join(notes)


def batch_line(result) -> str:
    """The one summary line of symbol-batch."""
    s = result.stats
    silent = len(s.get("symbols_no_data") or [])
    skipped = len(s.get("symbols_skipped_unavailable") or [])
    unavailable = s.get("symbols_unavailable") or []
    return (
        f"{'prices refetch' if s.get('mode') == 'refetch' else 'symbol-batch'} {s['provider']} {s['target_date']}: {result.status}, "
        f"{s['symbols_fetched']}/{s['symbols_requested']} "
        f"symbols fetched" + (f" ({silent} without a close for {s['target_date']})" if silent else "")
        + f", {s['symbols_up_to_date']} up to date, {len(s['symbols_failed'])} failed, "
        f"{len(s['symbols_deferred'])} deferred"
        + (f", unavailable: {', '.join(unavailable[:10])}{' ...' if len(unavailable) > 10 else ''} ({skipped} skipped)" if unavailable else "")
        + f", {s['provider_calls']} calls, {s['rows_upserted']} rows, {s['rows_rejected']} rejected, {s['duration_s']}s"
        + (f", possible unrecorded splits: {len(s['possible_unrecorded_splits'])}" if s.get("possible_unrecorded_splits") else "")
    )


def print_explained(result) -> None:
    """--explain: each statement of the first chunk, formatted, with its plan when asked."""
    out = sys.stdout
    out.write(f"-- {result.stats['mode']} {result.stats['target_date']}: {len(result.explained)} statements of the first chunk "
              "(run in a transaction that was rolled back)\n")
    for i, step in enumerate(result.explained, start=1):
        out.write(f"\n-- {i}. {step['step']}\n{step['sql']};\n")
        if step.get("plan"):
            out.write("".join(f"--   {line}\n" for line in step["plan"].splitlines()))
    out.flush()


def print_preview(result) -> None:
    """--dry-run: the snapshots that would be written (first rows) and the totals."""
    s = result.stats
    t = Table("portfolio", "date", "holdings", "cash", "total", "cost", "pnl", "pnl %", "lots", "priced", "partial", "missing", "stale",
              title=f"dry run: {s['snapshots_created']} snapshots would be created, {s['snapshots_recomputed']} partial ones recomputed")
    for r in result.preview:
        t.add_row(str(r["portfolio_id"])[:8], str(r["snapshot_date"]), *(str(r[k]) for k in (
            "holdings_value", "cash_balance", "total_value", "total_cost", "total_pnl", "pnl_percent",
            "position_count", "priced_position_count", "is_partial")), r["missing_symbols"] or "", r["stale_symbols"] or "")
    console.print(t)


def latest_snapshots(engine, limit: int) -> list[dict]:
    """Each live portfolio's newest snapshot, newest-valued first (one grouped query)."""
    import sqlalchemy as sa

    from snapshotter.data.schema import portfolio_snapshots as s
    from snapshotter.data.schema import portfolios as p

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
            f"{r['priced_position_count']}/{r['position_count']}", quality(r, r["missing_symbols"] or "yes"),
        )
    console.print(t)


# --- history -------------------------------------------------------------------------

SPARK = "▁▂▃▄▅▆▇█"
HISTORY_DEFAULT_DAYS = 90
HISTORY_COLUMNS = ("snapshot_date", "total_value", "holdings_value", "cash_balance", "total_cost", "total_pnl", "pnl_percent",
                   "position_count", "priced_position_count", "is_partial", "missing_symbols", "stale_symbols")


def sparkline(values, width: int | None = None) -> str:
    """One block per value, scaled from the lowest (▁) to the highest (█); exact Decimal arithmetic.

    More values than ``width``: each character stands for a run of consecutive
    values and shows the last of them (the value at the end of that period).
    """
    from decimal import Decimal

    values = [v if isinstance(v, Decimal) else Decimal(str(v)) for v in values]
    if width is not None and len(values) > width > 0:
        n = len(values)
        values = [values[(i + 1) * n // width - 1] for i in range(width)]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi == lo:
        return SPARK[3] * len(values)
    top = len(SPARK) - 1
    return "".join(SPARK[int(((v - lo) * top / (hi - lo)).to_integral_value())] for v in values)


def partial_marks(flags, width: int | None = None) -> str:
    """A line under the sparkline: ``!`` under each character that covers a partial day."""
    flags = list(flags)
    if width is not None and len(flags) > width > 0:
        n = len(flags)
        flags = [any(flags[i * n // width : (i + 1) * n // width]) for i in range(width)]
    return "".join("!" if f else " " for f in flags).rstrip()


def portfolio_history(engine, portfolio_id: str, date_from=None, date_to=None) -> dict:
    """One portfolio's snapshots in [from, to] (default: the 90 days up to its newest snapshot)."""
    import uuid
    from datetime import timedelta

    import sqlalchemy as sa

    from snapshotter.errors import UsageError
    from snapshotter.data.schema import portfolio_snapshots as s
    from snapshotter.data.schema import portfolios as p

    try:
        pid = uuid.UUID(portfolio_id)
    except ValueError:
        raise UsageError(f"unknown portfolio {portfolio_id!r}: not a UUID") from None
    with engine.connect() as conn:
        row = conn.execute(sa.select(p.c.name, p.c.deleted_at).where(p.c.id == pid)).first()
        if row is None:
            raise UsageError(f"unknown portfolio {portfolio_id}")
        if date_to is None:
            date_to = conn.execute(sa.select(sa.func.max(s.c.snapshot_date)).where(s.c.portfolio_id == pid)).scalar()
        if date_from is None and date_to is not None:
            date_from = date_to - timedelta(days=HISTORY_DEFAULT_DAYS - 1)
        if date_from is not None and date_to is not None and date_from > date_to:
            raise UsageError(f"--from {date_from} is after --to {date_to}")
        q = sa.select(*(s.c[k] for k in HISTORY_COLUMNS)).where(s.c.portfolio_id == pid).order_by(s.c.snapshot_date)
        if date_from is not None:
            q = q.where(s.c.snapshot_date >= date_from)
        if date_to is not None:
            q = q.where(s.c.snapshot_date <= date_to)
        rows = [dict(r._mapping) for r in conn.execute(q)]
    return {
        "portfolio_id": str(pid),
        "name": row.name,
        "deleted": row.deleted_at is not None,
        "from": date_from.isoformat() if date_from else None,
        "to": date_to.isoformat() if date_to else None,
        "count": len(rows),
        "partial_days": sum(1 for r in rows if r["is_partial"]),
        "stale_days": sum(1 for r in rows if r["stale_symbols"]),
        "sparkline": sparkline(r["total_value"] for r in rows),
        "snapshots": rows,
    }


def print_history(h: dict) -> None:
    rows = h["snapshots"]
    title = f"{h['name']} ({h['portfolio_id']}){' [deleted]' if h['deleted'] else ''}: {h['from'] or '-'} .. {h['to'] or '-'}"
    if not rows:
        console.print(f"{title}: no snapshots")
        return
    width = max(20, (console.width or 140) - 2)
    values = [r["total_value"] for r in rows]
    console.print(title)
    console.print(f"total value {values[0]:,.2f} -> {values[-1]:,.2f} (low {min(values):,.2f}, high {max(values):,.2f})")
    console.print(sparkline(values, width), markup=False, highlight=False)
    marks = partial_marks([r["is_partial"] for r in rows], width)
    if marks:
        console.print(marks, markup=False, highlight=False)
        console.print(f"! = partial day ({h['partial_days']}): a lot without a close is left out of the value", markup=False, highlight=False)
    if h.get("stale_days"):
        console.print(f"{h['stale_days']} stale day(s): a lot without a close valued at its symbol's older close (--max-price-age)",
                      markup=False, highlight=False)
    t = Table("date", "total value", "holdings", "cash", "cost", "P&L", "P&L %", "lots", "partial", title="snapshots")
    for r in rows:
        t.add_row(
            str(r["snapshot_date"]), f"{r['total_value']:,.2f}", f"{r['holdings_value']:,.2f}", f"{r['cash_balance']:,.2f}",
            f"{r['total_cost']:,.2f}", f"{r['total_pnl']:,.2f}", f"{r['pnl_percent']:.2f}",
            f"{r['priced_position_count']}/{r['position_count']}", quality(r, f"partial: {r['missing_symbols']}"),
        )
    console.print(t)
