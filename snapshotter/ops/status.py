"""What an operator asks first, read-only: schema, table sizes, the last runs of each
job, dead runs, how fresh the snapshots are, and which closes are missing.

Every question is one set-based query (no per-portfolio or per-symbol loop in
Python), so ``status`` and ``check`` stay fast at any number of portfolios.
Nothing here writes: a dead ``running`` row is flagged, not changed (the next
run of that job marks it ``interrupted``, see :func:`tracking.mark_dead_runs`).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa

from snapshotter.core import corporate_actions as actions
from snapshotter.core.calendar import effective_trading_date, trading_days_back, trading_days_between
from snapshotter.core.valuation import portfolio_activity, priced_by
from snapshotter.data import (
    corporate_actions, db, fetch_memory, frontier_sql, invalidation_sql, planning_sql, row_counts, schema, steps_sql, tracking,
)
from snapshotter.data.schema import batch_run_tracking as brt

COUNTED = tuple(t.name for t in schema.metadata.sorted_tables)  # every table of the schema
RUNS_PER_JOB = 5
MISSING_LISTED = 50  # symbols listed by name; the count is always exact
SUSPECT_WINDOW = 20  # trading days up to the effective date searched for possible unrecorded splits

# The stats shown per run (lists are shown as their length).
KEY_STATS = {
    tracking.SYMBOL_BATCH: ("provider", "mode", "symbols_requested", "symbols_fetched", "symbols_failed", "symbols_deferred",
                            "provider_calls", "rows_upserted"),
    "portfolio": ("mode", "portfolios_active", "snapshots_created", "snapshots_recomputed", "portfolios_failed", "days_backfilled"),
    tracking.PRUNE: ("keep_daily", "then", "cutoff", "snapshots_deleted", "portfolios_pruned", "months_kept"),
}


def status_report(engine: sa.Engine, now: datetime, runs_per_job: int = RUNS_PER_JOB) -> dict:
    day = effective_trading_date(now)
    report: dict = {"schema_revision": db.current_revision(engine), "schema_head": db.head_revision(),
                    "effective_trading_date": day.isoformat()}
    if report["schema_revision"] is None:
        report.update(tables={}, tables_estimated=[], last_runs={}, dead_runs=[])
        return report
    with one_snapshot(engine) as conn:
        counted = {name: row_counts.count_rows(conn, schema.metadata.tables[name]) for name in COUNTED}
        report["tables"] = {name: n for name, (n, _) in counted.items()}
        report["tables_estimated"] = sorted(name for name, (_, estimated) in counted.items() if estimated)
        report["last_runs"] = last_runs_per_job(conn, runs_per_job, now)
        report["dead_runs"] = dead_runs(conn, now)
        report["newest_price_date"] = _iso(conn.execute(sa.select(sa.func.max(schema.symbol_prices_daily.c.price_date))).scalar())
        fresh = snapshot_freshness(conn, day)
        report["newest_snapshot_date"] = fresh.pop("newest_snapshot_date")
        report["snapshots"] = fresh
        steps = steps_sql.load_steps(conn)  # the corporate actions on file, read once for every question below
        renamed = steps_sql.renamed_on(steps, day)
        # the symbols the portfolios need (the batch's rule), read once for the three questions about them
        needed = planning_sql.read_symbols_needed(conn, day, renamed)
        report["missing_closes"] = missing_closes(conn, day, needed)
        report["unavailable_symbols"] = [_jsonable(r) for r in fetch_memory.unavailable_held(conn, needed)]
        pend = conn.execute(invalidation_sql.pending()).one()
        report["invalidations"] = {  # history other writers changed, recomputed by the next run
            "pending": pend.rows, "oldest_from_date": _iso(pend.oldest), "symbol_rows": pend.symbols,
            "portfolios": conn.execute(invalidation_sql.affected_portfolios(priced_by(steps))).scalar_one() if pend.rows else 0,
        }
        report["possible_unrecorded_splits"] = [x.as_dict() for x in possible_unrecorded_splits(conn, day, needed)]
        rej = fetch_memory.recent_rejections(conn)
        report["rejected_bars"] = {
            "count": rej["count"],
            "latest": [_jsonable({k: r[k] for k in ("symbol", "price_date", "reason", "source", "times_seen", "last_seen_at")})
                       for r in rej["latest"]],
        }
    return report


def one_snapshot(engine: sa.Engine) -> sa.Connection:
    """A connection whose reads all see one moment: the frontier, the pending invalidations and the
    snapshots read by several statements must agree while a run commits chunks. PostgreSQL:
    REPEATABLE READ (read committed takes a new snapshot per statement); SQLite: an explicit
    BEGIN (the driver starts no transaction for a SELECT, so each would see the newest commit);
    the connection's close rolls either back."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")
    else:
        conn.exec_driver_sql("BEGIN")
    return conn


# --- runs ----------------------------------------------------------------------------


def last_runs_per_job(conn: sa.Connection, n: int, now: datetime) -> dict[str, list[dict]]:
    """The newest ``n`` runs of every batch_type, newest first (one window query)."""
    rank = sa.func.row_number().over(partition_by=brt.c.batch_type, order_by=(brt.c.started_at.desc(), brt.c.id.desc()))
    ranked = sa.select(brt, rank.label("rank")).subquery()
    q = sa.select(ranked).where(ranked.c.rank <= n).order_by(ranked.c.batch_type, ranked.c.rank)
    out: dict[str, list[dict]] = {}
    for r in conn.execute(q):
        out.setdefault(r.batch_type, []).append(_run_view(dict(r._mapping), now))
    return out


def dead_runs(conn: sa.Connection, now: datetime) -> list[dict]:
    """``running`` rows that :func:`tracking.is_dead` calls dead."""
    rows = conn.execute(sa.select(brt).where(brt.c.status == "running").order_by(brt.c.started_at, brt.c.id))
    return [v for v in (_run_view(dict(r._mapping), now) for r in rows) if v["dead"]]


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _run_view(r: dict, now: datetime) -> dict:
    duration = None
    if r.get("finished_at") and r.get("started_at"):
        duration = round((_aware(r["finished_at"]) - _aware(r["started_at"])).total_seconds(), 3)
    kind = tracking.SYMBOL_BATCH if r["batch_type"] in tracking.FETCHES else r["batch_type"] if r["batch_type"] in KEY_STATS else "portfolio"
    stats = r.get("stats") if isinstance(r.get("stats"), dict) else {}
    key = {k: (len(stats[k]) if isinstance(stats[k], (list, dict)) else stats[k]) for k in KEY_STATS[kind] if k in stats}
    return {
        "run_id": r["run_id"],
        "batch_type": r["batch_type"],
        "target_date": _iso(r["target_date"]),
        "status": r["status"],
        "dead": tracking.is_dead(r, now),
        "started_at": _ts(r.get("started_at")),
        "finished_at": _ts(r.get("finished_at")),
        "heartbeat_at": _ts(r.get("heartbeat_at")),
        "duration_s": duration,
        "host": r.get("host"),
        "pid": r.get("pid"),
        "stats": key,
        "error": r.get("error"),
    }


# --- snapshots and closes --------------------------------------------------------------


UNKNOWN_PAGE = 5_000  # unknown portfolios computed exactly per query (a run that stopped between chunks leaves many)


def snapshot_freshness(conn: sa.Connection, effective: date) -> dict:
    """The newest snapshot date, its lag in trading days, and the active portfolios behind it.

    Active is the SPEC rule (:func:`snapshotter.core.valuation.portfolio_activity`) on the
    newest snapshot date N; a portfolio is behind when it is active and has no snapshot on N.
    The portfolios the last run left known for N (:mod:`snapshotter.data.frontier_sql`) are
    counted from their frontier rows alone (one narrow row each, never behind); only the
    unknown ones (a run that stopped between chunks, a change not yet recomputed) are computed
    exactly, a page of ids at a time, with index probes. Nothing reads the history or every
    lot, so the cost does not grow with the years of history (README "Monitoring").
    """
    s = schema.portfolio_snapshots
    newest = conn.execute(sa.select(sa.func.max(s.c.snapshot_date))).scalar()
    out = {"newest_snapshot_date": _iso(newest), "lag_trading_days": lag_trading_days(newest, effective),
           "active_portfolios": 0, "portfolios_behind": 0, "portfolios_without_snapshot": 0, "oldest_behind_date": None}
    if newest is None:
        return out
    active, stale = conn.execute(frontier_sql.counts(newest)).one()
    n_behind, never, oldest, after = 0, 0, None, None
    pending = conn.execute(frontier_sql.any_pending()).scalar_one()
    while (stale or pending) and (page := list(conn.execute(frontier_sql.unknown_ids(newest, after, UNKNOWN_PAGE)).scalars())):
        a, b, n, o = conn.execute(_exact_freshness(newest, page)).one()
        active, n_behind, never = active + a, n_behind + b, never + n
        oldest = o if oldest is None or (o is not None and o < oldest) else oldest
        after = page[-1]
    out.update(active_portfolios=active, portfolios_behind=n_behind, portfolios_without_snapshot=never, oldest_behind_date=_iso(oldest))
    return out


def _exact_freshness(newest: date, ids: list):
    """(active, behind, behind without any snapshot, oldest last snapshot of those behind) among
    ``ids``, from their lots, cash and snapshots: an index probe per portfolio."""
    s = schema.portfolio_snapshots
    act = portfolio_activity(newest, lambda col: col.in_(ids))
    behind = ~sa.exists().where(s.c.portfolio_id == act.c.id, s.c.snapshot_date == newest)
    last = sa.select(sa.func.max(s.c.snapshot_date)).where(s.c.portfolio_id == act.c.id).scalar_subquery()
    return (
        sa.select(
            sa.func.count(),
            sa.func.count(sa.case((behind, 1))),
            sa.func.count(sa.case((sa.and_(behind, last.is_(None)), 1))),
            sa.func.min(sa.case((behind, last))),
        )
        .select_from(act)
        .where(act.c.active == sa.true())
    )


def lag_trading_days(newest: date | None, effective: date) -> int | None:
    """Trading days after ``newest`` up to ``effective``: 0 when the snapshots are current."""
    if newest is None:
        return None
    return len(trading_days_between(newest + timedelta(days=1), effective))


def missing_closes(conn: sa.Connection, day: date, needed: list[str]) -> dict:
    """Which of the ``needed`` symbols (:func:`planning_sql.symbols_needed` on ``day``) have no close that day."""
    have = planning_sql.read_cached_days(conn, needed, day, day)
    missing = [s for s in needed if s not in have]
    return {"date": day.isoformat(), "count": len(missing), "symbols": missing[:MISSING_LISTED]}


def possible_unrecorded_splits(conn: sa.Connection, day: date, needed: list[str]) -> list[actions.SuspectedSplit]:
    """Closes of the ``needed`` symbols in the last ``SUSPECT_WINDOW`` trading days that moved like a split
    with none on file (the batch's rule; one window query). Gone once the split is loaded."""
    return corporate_actions.suspected_splits(conn, needed, trading_days_back(day, SUSPECT_WINDOW - 1), day)


# --- check ----------------------------------------------------------------------------------


def check_freshness(engine: sa.Engine, max_lag: int, now: datetime) -> tuple[bool, str]:
    """(ok, one-line reason): stale when the newest snapshot is more than ``max_lag`` trading days behind."""
    day = effective_trading_date(now)
    if db.current_revision(engine) is None:
        return False, f"stale: the database has no snapshotter schema (effective trading date {day})"
    with one_snapshot(engine) as conn:
        fresh = snapshot_freshness(conn, day)
    newest, lag = fresh["newest_snapshot_date"], fresh["lag_trading_days"]
    if newest is None:
        return False, f"stale: no snapshots at all (effective trading date {day})"
    n, of = fresh["portfolios_behind"], fresh["active_portfolios"]
    behind = f"; {n} of {of} active portfolios behind it" if n else f"; every one of the {of} active portfolios has it"
    what = f"newest snapshot {newest} is {lag} trading day{'s' if lag != 1 else ''} behind {day} (max {max_lag}){behind}"
    return (lag <= max_lag), ("ok: " if lag <= max_lag else "stale: ") + what


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


def _ts(t: datetime | None) -> str | None:
    return _aware(t).isoformat() if t else None


def _jsonable(row: dict) -> dict:
    """A row for the JSON report: dates as ISO days, timestamps as aware ISO instants."""
    return {k: _ts(v) if isinstance(v, datetime) else _iso(v) if isinstance(v, date) else v for k, v in row.items()}
