"""Benchmark the snapshot engine against the physical limit of its own design.

Run with `make bench` (PostgreSQL on 127.0.0.1:5432 or $BENCH_PG_URL). It builds
scratch databases (dropped afterwards), then reports side by side:

1. daily refresh of N portfolios x 10 lots over 2,000 symbols (PostgreSQL), once
   per --workers value: snapshots/s of `snapshotter portfolio-refresh`; its
   snapshot pass against one hand-written INSERT ... SELECT of the same snapshots,
   its market-value pass against one hand-written UPDATE of the same lots (rolled
   back), both run in the same database; plus a seed-style per-portfolio query
   loop on a sample, extrapolated; then `check` and `status --json` after the night
   (whole commands, medians of 3, next to `snapshotter --version`: what a monitoring
   system's poll costs at N portfolios);
2. backfill of B portfolios x 1 year (PostgreSQL): snapshots/s;
3. recompute of invalidated history (PostgreSQL): R portfolios with a year of
   snapshots built by a backfill run, then one lot per portfolio backdated 250
   trading days inserted through a plain connection (the triggers of migration 0006
   record it), recomputed by one portfolio-refresh: snapshots/s of the recompute
   next to the backfill's in the same database;
4. trigger overhead on a load (PostgreSQL): L lots in one INSERT ... SELECT and A
   lots row by row (executemany), with the triggers and without (DISABLE TRIGGER
   USER), twice each, alternating, in the same database;
5. peak RSS of each snapshotter process;
6. the same daily refresh on SQLite for S portfolios;
7. history (PostgreSQL): what a year of rows in portfolio_snapshots costs. Two databases with the
   same H portfolios x 10 lots, cash and closes: "empty", each portfolio's snapshot of the previous
   trading day only, and "year", the D trading days up to it (seed_history: set-based, minutes for
   50M rows); in each the nightly `portfolio-refresh --workers 2` of the target (exactly one new
   snapshot per portfolio, checked), then `status --json` and `check` (exit 0), each from a settled
   server: whole command, snapshot pass, WAL and checkpoints, portfolio_snapshots' heap + index
   size, status and check times, and the ratios year/empty.

With --splits K the daily refresh runs each --workers value twice, alternating: without
splits on file, then with K splits (half on symbols the lots hold, half on others, ratios
2-for-1, 3-for-2 and 1-for-10, ex-dates in the 1,500 days before the target; the invalidations
their insert records are cleared like the generated data's): the cost of "quantity as of the
day" on a normal night.

Sizes: --portfolios (default 1,000,000), --backfill-portfolios (10,000),
--recompute-portfolios (10,000), --load-lots (1,000,000), --load-app-lots (300,000),
--sqlite-portfolios (100,000), --history-portfolios (200,000), --history-days (250),
--history-repeats (1: empty and year alternate); --only daily|backfill|recompute|load|sqlite|history
(repeatable) runs a part. Progress on stderr; the figures as JSON on stdout and in --json-out if given.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg

from snapshotter.data import db
from snapshotter.core.calendar import close_time, previous_trading_day, trading_days_back, trading_days_between

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SYMBOLS = 2000
LOTS = 10
TARGET = date(2026, 11, 20)
YESTERDAY = previous_trading_day(TARGET)
YEAR = trading_days_between(date(2025, 11, 21), TARGET)

RUNNER = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: print('BENCH_MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
    "from snapshotter.cli import main\n"
    "sys.argv = ['snapshotter'] + sys.argv[1:]\n"
    "main()\n"
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_cli(url: str, *args: str, expect: int = 0) -> tuple[float, str, int]:
    """One snapshotter command as cron runs it (a new process): (seconds, stdout, peak RSS in KB).
    Its exit code must be ``expect``."""
    env = {**os.environ, "DATABASE_URL": url}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", RUNNER, "--log-format", "json", *args], env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    if p.returncode != expect:
        raise SystemExit(f"snapshotter {' '.join(args)} exited {p.returncode} (expected {expect}):\n{p.stderr[-3000:]}")
    rss = next(int(l.split()[1]) for l in p.stderr.splitlines() if l.startswith("BENCH_MAXRSS_KB"))
    return elapsed, p.stdout, rss


def run_snapshotter(url: str, *args: str) -> tuple[float, dict, int]:
    elapsed, out, rss = run_cli(url, *args, "--json")
    return elapsed, json.loads(out.strip().splitlines()[-1]), rss


class PgScratch:
    def __init__(self, tag: str):
        self.name = f"snapshotter_bench_{tag}_{uuid.uuid4().hex[:8]}"
        self.admin = psycopg.connect(ADMIN_URL, autocommit=True)
        self.admin.execute(f'CREATE DATABASE "{self.name}"')
        base = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
        base["dbname"] = self.name
        self.conninfo = psycopg.conninfo.make_conninfo(**base)
        user = base.get("user", "postgres")
        self.url = f"postgresql+psycopg://{user}@{base.get('host', '127.0.0.1')}:{base.get('port', 5432)}/{self.name}"
        engine = db.connect(self.url)
        db.upgrade(engine)
        engine.dispose()

    def connect(self):
        return psycopg.connect(self.conninfo, autocommit=True)

    def drop(self):
        self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.close()


PORTFOLIOS_SQL = "INSERT INTO portfolios (id, name, base_currency, created_at) SELECT md5('p' || i)::uuid, 'p' || i, 'USD', now() FROM generate_series(1, %s) i"
LOTS_SQL = (
    "INSERT INTO positions (id, portfolio_id, symbol, quantity, entry_price, entry_date) "
    "SELECT md5('l' || i || '.' || j)::uuid, md5('p' || i)::uuid, 'S' || lpad(((i * 7 + j * 197) %% %s)::text, 4, '0'), "
    "round((1 + random() * 100)::numeric, 4), round((10 + random() * 400)::numeric, 2), %s "
    "FROM generate_series(1, %s) i, generate_series(1, %s) j"
)


def pg_generate(conn, n: int, price_days: list[date], entry: date, snapshot_day: date | None) -> None:
    """Server-side generation: N portfolios x 10 lots, 2,000 symbols, closes for price_days."""
    t0 = time.perf_counter()
    conn.execute(
        "INSERT INTO symbol_prices_daily (symbol, price_date, open, high, low, close, volume, source, fetched_at) "
        "SELECT 'S' || lpad(s::text, 4, '0'), d, NULL, NULL, NULL, round((10 + (s %% 500) + random() * 5)::numeric, 2), 1000, 'bench', now() "
        "FROM generate_series(0, %s - 1) s, unnest(%s::date[]) d",
        (SYMBOLS, price_days),
    )
    conn.execute(PORTFOLIOS_SQL, (n,))
    conn.execute(LOTS_SQL, (SYMBOLS, entry, n, LOTS))
    conn.execute(
        "INSERT INTO cash_transactions (id, portfolio_id, txn_date, amount) "
        "SELECT md5('c' || i)::uuid, md5('p' || i)::uuid, %s, round((random() * 10000)::numeric, 2) FROM generate_series(1, %s) i",
        (entry, n),
    )
    if snapshot_day:
        # Steady state: everybody already has yesterday's snapshot (its month's partition first, as the jobs do).
        conn.execute("SELECT snapshotter_ensure_snapshot_partitions(%s, %s)", (snapshot_day, snapshot_day))
        conn.execute(
            "INSERT INTO portfolio_snapshots (portfolio_id, snapshot_date, holdings_value, cash_balance, total_value, total_cost, "
            "total_pnl, pnl_percent, position_count, priced_position_count, is_partial, created_at, updated_at) "
            "SELECT id, %s, 0, 0, 0, 0, 0, 0, 10, 10, false, now(), now() FROM portfolios",
            (snapshot_day,),
        )
        # ... and last night's market values on its lots. Without them the first
        # valuation widens every row (NULL -> values), a fifth of the new versions no
        # longer fit their page, and at 10M lots that one-off costs 8x the WAL of a night.
        conn.execute(YESTERDAYS_VALUES, {"d": snapshot_day})
    # The generated data stands for history already valued: what its load recorded as
    # invalidated (every lot inserted) is cleared, so a run measures a night with nothing pending.
    conn.execute("DELETE FROM snapshot_invalidations")
    settle(conn)
    log(f"generated {n:,} portfolios x {LOTS} lots, {SYMBOLS} symbols x {len(price_days)} days in {time.perf_counter() - t0:.1f}s")


RAW_TABLE = "CREATE TABLE raw_snapshots (LIKE portfolio_snapshots INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
RAW_SQL = """
INSERT INTO raw_snapshots (portfolio_id, snapshot_date, holdings_value, cash_balance, total_value, total_cost, total_pnl,
                           pnl_percent, position_count, priced_position_count, is_partial, missing_symbols, created_at, updated_at)
SELECT p.id, %(d)s,
       round(coalesce(l.h, 0), 6), round(coalesce(c.cash, 0), 6), round(coalesce(l.h, 0) + coalesce(c.cash, 0), 6),
       round(coalesce(l.cost, 0), 6), round(coalesce(l.h, 0) - coalesce(l.cost, 0), 6),
       CASE WHEN coalesce(l.cost, 0) = 0 THEN 0 ELSE round((l.h - l.cost) * 100 / l.cost, 6) END,
       coalesce(l.n, 0), coalesce(l.priced, 0), coalesce(l.n, 0) > coalesce(l.priced, 0), l.missing, now(), now()
FROM portfolios p
LEFT JOIN (
  SELECT pos.portfolio_id, sum(pos.quantity * sp.close) AS h, sum(pos.quantity * pos.entry_price) FILTER (WHERE sp.close IS NOT NULL) AS cost,
         count(*) AS n, count(sp.close) AS priced, string_agg(DISTINCT pos.symbol, ',') FILTER (WHERE sp.close IS NULL) AS missing
  FROM positions pos LEFT JOIN symbol_prices_daily sp ON sp.symbol = pos.symbol AND sp.price_date = %(d)s
  WHERE pos.deleted_at IS NULL AND pos.entry_date <= %(d)s AND (pos.exit_date IS NULL OR pos.exit_date > %(d)s)
  GROUP BY pos.portfolio_id) l ON l.portfolio_id = p.id
LEFT JOIN (SELECT portfolio_id, sum(amount) AS cash FROM cash_transactions WHERE txn_date <= %(d)s GROUP BY portfolio_id) c ON c.portfolio_id = p.id
WHERE p.deleted_at IS NULL
"""


def seed_style_loop(conn, sample: int, day: date) -> float:
    """The seed's shape: one query per portfolio, one per position, one insert per snapshot."""
    ids = [r[0] for r in conn.execute("SELECT id FROM portfolios ORDER BY id LIMIT %s", (sample,))]
    conn.execute("CREATE TEMP TABLE loop_snapshots (LIKE portfolio_snapshots INCLUDING DEFAULTS)")
    t0 = time.perf_counter()
    for pid in ids:
        lots = conn.execute(
            "SELECT symbol, quantity, entry_price FROM positions WHERE portfolio_id = %s AND exit_date IS NULL AND deleted_at IS NULL", (pid,)
        ).fetchall()
        value = cost = Decimal(0)
        for sym, q, ep in lots:
            row = conn.execute("SELECT close FROM symbol_prices_daily WHERE symbol = %s AND price_date = %s", (sym, day)).fetchone()
            if row:
                value += q * row[0]
                cost += q * ep
        conn.execute(
            "INSERT INTO loop_snapshots (portfolio_id, snapshot_date, holdings_value, cash_balance, total_value, total_cost, total_pnl, "
            "pnl_percent, position_count, priced_position_count, is_partial, created_at, updated_at) "
            "VALUES (%s, %s, %s, 0, %s, %s, %s, 0, %s, %s, false, now(), now())",
            (pid, day, value, value, cost, value - cost, len(lots), len(lots)),
        )
    return sample / (time.perf_counter() - t0)


RAW_UPDATE = """
UPDATE positions p SET last_price = lc.close, market_value = round(p.quantity * lc.close, 6), market_value_date = lc.price_date
FROM (SELECT DISTINCT ON (symbol) symbol, close, price_date FROM symbol_prices_daily ORDER BY symbol, price_date DESC) lc
WHERE lc.symbol = p.symbol AND p.exit_date IS NULL AND p.deleted_at IS NULL
"""
YESTERDAYS_VALUES = """
UPDATE positions p SET last_price = sp.close, market_value = round(p.quantity * sp.close, 6), market_value_date = sp.price_date
FROM symbol_prices_daily sp WHERE sp.symbol = p.symbol AND sp.price_date = %(d)s
"""


SPLITS_SQL = """
INSERT INTO symbol_splits (symbol, ex_date, split_from, split_to, source, fetched_at)
SELECT CASE WHEN k %% 2 = 0 THEN 'S' || lpad(((k * 7) %% %(symbols)s)::text, 4, '0') ELSE 'X' || lpad(k::text, 4, '0') END,
       %(target)s::date - 1 - (k * 37) %% 1500,
       (ARRAY[1, 2, 10])[k %% 3 + 1], (ARRAY[2, 3, 1])[k %% 3 + 1], 'bench', now()
FROM generate_series(0, %(n)s - 1) k
"""


def set_splits(conn, k: int) -> None:
    """K splits on file (none for 0); what their writes record as invalidated is cleared (history already valued)."""
    conn.execute("DELETE FROM symbol_splits")
    if k:
        conn.execute(SPLITS_SQL, {"symbols": SYMBOLS, "target": TARGET, "n": k})
    conn.execute("DELETE FROM snapshot_invalidations")


def reset(conn) -> None:
    """Back to the state before a run: yesterday's snapshots and market values only."""
    conn.execute("DELETE FROM portfolio_snapshots WHERE snapshot_date = %(d)s", {"d": TARGET})
    conn.execute(YESTERDAYS_VALUES, {"d": YESTERDAY})


def settle(conn) -> None:
    """Every timed statement and run starts from the same server state: vacuumed, and
    right after a checkpoint, so each pays the same full-page images in the WAL
    (otherwise whichever run a checkpoint happens to land in looks slower)."""
    conn.execute("VACUUM ANALYZE")
    conn.execute("CHECKPOINT")


def server_io(conn) -> tuple[str, int]:
    return conn.execute("SELECT pg_current_wal_lsn(), checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter").fetchone()


def io_since(conn, before: tuple[str, int]) -> dict:
    wal, checkpoints = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s), checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter", (before[0],)
    ).fetchone()
    return {"wal_gb": round(float(wal) / 2**30, 2), "checkpoints": checkpoints - before[1]}


def bench_pg_daily(n: int, workers: list[int], splits: int = 0) -> dict:
    s = PgScratch("daily")
    try:
        with s.connect() as conn:
            pg_generate(conn, n, [YESTERDAY, TARGET], YESTERDAY, YESTERDAY)
            conn.execute(RAW_TABLE)
            t0 = time.perf_counter()
            conn.execute(RAW_SQL, {"d": TARGET})
            raw_s = time.perf_counter() - t0
            raw_rows = conn.execute("SELECT count(*) FROM raw_snapshots").fetchone()[0]
            conn.execute("DROP TABLE raw_snapshots")
            settle(conn)
            before = server_io(conn)
            with conn.transaction(force_rollback=True):  # the physical limit of the market-value pass; undone
                t0 = time.perf_counter()
                conn.execute(RAW_UPDATE)
                raw_update_s = time.perf_counter() - t0
            raw_update_io = io_since(conn, before)
            log(f"raw INSERT ... SELECT: {raw_rows:,} snapshots in {raw_s:.1f}s; raw UPDATE of the lots: {raw_update_s:.1f}s {raw_update_io}")
            t0 = time.perf_counter()
            for _ in range(100):  # what a night with nothing pending adds: the recompute's high-water probe
                conn.execute("SELECT max(id) FROM snapshot_invalidations").fetchone()
            pending_check_ms = round((time.perf_counter() - t0) * 10, 3)
            loop_rate = seed_style_loop(conn, min(2000, n), TARGET)
            log(f"seed-style loop: {loop_rate:.0f} portfolios/s")
        out = {
            "portfolios": n, "lots": n * LOTS, "raw_insert_s": round(raw_s, 2), "raw_update_s": round(raw_update_s, 2),
            "raw_update_io": raw_update_io,
            "seed_loop_portfolios_per_s": round(loop_rate), "seed_loop_projected_s": round(n / loop_rate), "runs": {},
        }
        runs = [(w, k) for w in workers for k in ([0, splits] if splits else [0])]
        for i, (w, k) in enumerate(runs):
            with s.connect() as conn:
                if splits:
                    set_splits(conn, k)
                if i:
                    reset(conn)
                settle(conn)
                before = server_io(conn)
            elapsed, summary, rss = run_snapshotter(s.url, "portfolio-refresh", "--date", TARGET.isoformat(), "--no-wait", "--workers", str(w))
            with s.connect() as conn:
                run_io = io_since(conn, before)
            assert summary["snapshots_created"] == raw_rows, (summary, raw_rows)
            assert summary["positions_valued"] == n * LOTS, summary
            snap_s, mv_s = summary["snapshot_phase_s"], summary["market_value_phase_s"]
            log(f"snapshotter --workers {w}, {k} splits: {raw_rows:,} snapshots in {elapsed:.1f}s (snapshots {snap_s}s, "
                f"market values {mv_s}s), peak RSS {rss / 1024:.0f} MB {run_io}")
            out["runs"][f"run{i + 1}_workers_{w}" + (f"_splits_{k}" if splits else "")] = {
                "workers": w, "splits": k, **run_io,
                "total_s": round(elapsed, 2), "snapshot_phase_s": snap_s, "market_value_phase_s": mv_s,
                # nothing pending (the generated data's invalidations are cleared): the run's check is one max(id)
                # probe and returns before its timer is recorded, so the probe is timed here (pending_check_ms)
                "invalidations_pending": summary["invalidations_pending"], "pending_check_ms": pending_check_ms,
                "snapshots_per_s": round(raw_rows / elapsed),
                "snapshot_phase_vs_raw_insert": round(snap_s / raw_s, 2),
                "market_value_phase_vs_raw_update": round(mv_s / raw_update_s, 2),
                "total_vs_raw_insert_plus_update": round(elapsed / (raw_s + raw_update_s), 2),
                "peak_rss_mb": round(rss / 1024),
            }
        out["monitoring"] = monitoring_times(s, n)
        return out
    finally:
        s.drop()


MONITORING_REPEATS = 3


def monitoring_times(s: PgScratch, n: int) -> dict:
    """What a monitoring system's poll costs after the nightly: ``check`` and ``status --json``, whole
    commands (the interpreter and its imports included: ``snapshotter --version``), medians of
    MONITORING_REPEATS, each checked: fresh, every one of the N active portfolios has the day."""
    with s.connect() as conn:
        settle(conn)
    startup = [run_cli(s.url, "--version")[0] for _ in range(MONITORING_REPEATS)]
    checks, statuses = [], []
    for _ in range(MONITORING_REPEATS):
        elapsed, out, _ = run_cli(s.url, "--now", AS_OF, "check", expect=0)
        assert out.startswith("ok: ") and f"every one of the {n} active portfolios" in out, out
        checks.append(elapsed)
        elapsed, out, _ = run_cli(s.url, "--now", AS_OF, "status", "--json")
        fresh = json.loads(out.strip().splitlines()[-1])["snapshots"]
        assert (fresh["active_portfolios"], fresh["portfolios_behind"]) == (n, 0), fresh
        statuses.append(elapsed)
    got = {"cli_startup_s": round(statistics.median(startup), 2), "check_s": round(statistics.median(checks), 2),
           "status_json_s": round(statistics.median(statuses), 2), "check_runs_s": [round(x, 2) for x in checks],
           "status_runs_s": [round(x, 2) for x in statuses]}
    log(f"monitoring at {n:,} portfolios: check {got['check_s']}s, status --json {got['status_json_s']}s "
        f"(snapshotter --version alone {got['cli_startup_s']}s)")
    return got


def bench_pg_backfill(n: int) -> dict:
    s = PgScratch("backfill")
    try:
        with s.connect() as conn:
            pg_generate(conn, n, YEAR, YEAR[0], None)
        elapsed, summary, rss = run_snapshotter(s.url, "portfolio-refresh", "--date", TARGET.isoformat(), "--no-wait")
        log(f"backfill: {summary['snapshots_created']:,} snapshots in {elapsed:.1f}s, peak RSS {rss / 1024:.0f} MB")
        return {"portfolios": n, "days": len(YEAR), "snapshots": summary["snapshots_created"], "snapshotter_s": round(elapsed, 2),
                "snapshots_per_s": round(summary["snapshots_created"] / elapsed), "peak_rss_mb": round(rss / 1024)}
    finally:
        s.drop()


def bench_pg_recompute(n: int) -> dict:
    """A year of history built by a backfill run, then one lot per portfolio backdated 250 trading
    days, inserted by another application (a plain connection; the triggers record it), then one
    portfolio-refresh that recomputes the year: its recompute rate against the backfill's, same database."""
    s = PgScratch("recompute")
    try:
        with s.connect() as conn:
            pg_generate(conn, n, YEAR, YEAR[0], None)
            before = server_io(conn)
        elapsed, summary, rss = run_snapshotter(s.url, "portfolio-refresh", "--date", TARGET.isoformat(), "--no-wait")
        with s.connect() as conn:
            backfill_io = io_since(conn, before)
        built, backfill_s = summary["snapshots_created"], elapsed
        backfill = {"snapshots": built, "total_s": round(elapsed, 2), **backfill_io, "snapshot_phase_s": summary["snapshot_phase_s"],
                    "snapshots_per_s": round(built / elapsed), "snapshot_phase_snapshots_per_s": round(built / summary["snapshot_phase_s"]),
                    "peak_rss_mb": round(rss / 1024)}
        log(f"recompute: backfill {built:,} snapshots in {elapsed:.1f}s (snapshot pass {summary['snapshot_phase_s']}s)")
        backdated = YEAR[0]
        rng = random.Random(11)
        rows = [(uuid.UUID(int=rng.getrandbits(128)), uuid.UUID(hashlib.md5(f"p{i}".encode()).hexdigest()),
                 f"S{(i * 13) % SYMBOLS:04d}", Decimal(f"{1 + rng.random() * 100:.4f}"), Decimal(f"{10 + rng.random() * 400:.2f}"), backdated)
                for i in range(1, n + 1)]
        with psycopg.connect(s.conninfo) as app:  # another application: row by row, one transaction
            t0 = time.perf_counter()
            with app.cursor() as cur:
                cur.executemany("INSERT INTO positions (id, portfolio_id, symbol, quantity, entry_price, entry_date) "
                                "VALUES (%s, %s, %s, %s, %s, %s)", rows)
            app.commit()
            insert_s = time.perf_counter() - t0
        with s.connect() as conn:
            recorded, oldest = conn.execute("SELECT count(*), min(from_date) FROM snapshot_invalidations").fetchone()
            settle(conn)
            before = server_io(conn)
        log(f"recompute: {n:,} lots inserted (entry {backdated}) in {insert_s:.1f}s; {recorded:,} invalidations recorded from {oldest}")
        elapsed, summary, rss = run_snapshotter(s.url, "portfolio-refresh", "--date", TARGET.isoformat(), "--no-wait")
        with s.connect() as conn:
            run_io = io_since(conn, before)
            left = conn.execute("SELECT count(*) FROM snapshot_invalidations").fetchone()[0]
        redone = summary["snapshots_recomputed_by_invalidation"] + summary["snapshots_created_by_invalidation"]
        phase = summary["invalidation_phase_s"]
        assert summary["portfolios_invalidated"] == n and left == 0, (summary, left)
        log(f"recompute: {redone:,} snapshots recomputed for {summary['portfolios_invalidated']:,} portfolios in {phase}s "
            f"(whole command {elapsed:.1f}s) {run_io}")
        return {
            "portfolios": n, "lots_per_portfolio_before": LOTS, "days": len(YEAR), "backdated_entry_date": backdated.isoformat(),
            "backfill": backfill,
            "app_insert": {"lots": n, "s": round(insert_s, 2), "invalidations_recorded": recorded},
            "recompute": {
                **{k: summary[k] for k in ("invalidations_pending", "portfolios_invalidated", "snapshots_recomputed_by_invalidation",
                                          "snapshots_unchanged_by_invalidation", "snapshots_created_by_invalidation", "snapshots_deleted_by_invalidation", "invalidation_phase_s",
                                          "snapshots_created", "snapshot_phase_s", "market_value_phase_s", "positions_valued")},
                "total_s": round(elapsed, 2), **run_io, "peak_rss_mb": round(rss / 1024),
                "snapshots_per_s": round(redone / phase),
                "snapshots_per_s_whole_command": round(redone / elapsed),
            },
            "recompute_vs_backfill_rate": round((redone / phase) / (built / backfill_s), 2),
            "recompute_vs_backfill_snapshot_pass_rate": round((redone / phase) / (built / backfill["snapshot_phase_s"]), 2),
        }
    finally:
        s.drop()


def bench_pg_load(n_lots: int, app_lots: int, repeats: int = 2) -> dict:
    """Trigger overhead on a load: n_lots lots in one INSERT ... SELECT (as pg_generate loads them) and
    app_lots lots row by row (executemany, a transaction per 1,000 rows, as an application writes them),
    with the triggers of migration 0006 and without (DISABLE TRIGGER USER), alternating, same database."""
    s = PgScratch("load")
    portfolios = max(1, n_lots // LOTS)
    try:
        with s.connect() as conn:
            conn.execute(PORTFOLIOS_SQL, (portfolios,))
            settle(conn)
        rng = random.Random(13)
        app_rows = [(uuid.UUID(int=rng.getrandbits(128)), uuid.UUID(hashlib.md5(f"p{1 + (i // LOTS) % portfolios}".encode()).hexdigest()),
                     f"S{(i * 197) % SYMBOLS:04d}", Decimal(f"{1 + rng.random() * 100:.4f}"), Decimal(f"{10 + rng.random() * 400:.2f}"), YESTERDAY)
                    for i in range(app_lots)]
        with s.connect() as conn:  # warm-up, untimed: the first load into the fresh database wrote ~50% more WAL (4 checkpoints) whichever mode ran first
            conn.execute(LOTS_SQL, (SYMBOLS, YESTERDAY, portfolios, LOTS))
        runs = []
        for rep in range(repeats):
            for triggers in (True, False):
                with s.connect() as conn:
                    conn.execute("TRUNCATE positions, snapshot_invalidations")
                    conn.execute(f"ALTER TABLE positions {'ENABLE' if triggers else 'DISABLE'} TRIGGER USER")
                    settle(conn)
                    before = server_io(conn)
                    t0 = time.perf_counter()
                    conn.execute(LOTS_SQL, (SYMBOLS, YESTERDAY, portfolios, LOTS))
                    bulk_s = time.perf_counter() - t0
                    bulk_io = io_since(conn, before)
                    bulk_inv = conn.execute("SELECT count(*) FROM snapshot_invalidations").fetchone()[0]
                    conn.execute("TRUNCATE positions, snapshot_invalidations")
                    settle(conn)
                app_s = None
                if app_rows:
                    with psycopg.connect(s.conninfo) as app:
                        t0 = time.perf_counter()
                        for i in range(0, len(app_rows), 1000):
                            with app.cursor() as cur:
                                cur.executemany("INSERT INTO positions (id, portfolio_id, symbol, quantity, entry_price, entry_date) "
                                                "VALUES (%s, %s, %s, %s, %s, %s)", app_rows[i:i + 1000])
                            app.commit()
                        app_s = time.perf_counter() - t0
                with s.connect() as conn:
                    app_inv = conn.execute("SELECT count(*) FROM snapshot_invalidations").fetchone()[0]
                    conn.execute("ALTER TABLE positions ENABLE TRIGGER USER")
                label = "with" if triggers else "without"
                log(f"load {rep + 1} {label} triggers: {n_lots:,} lots INSERT ... SELECT {bulk_s:.1f}s {bulk_io} ({bulk_inv:,} invalidations); "
                    f"{app_lots:,} lots row by row {app_s or 0:.1f}s ({app_inv:,} invalidations)")
                runs.append({"run": f"{rep + 1}_{label}_triggers", "triggers": triggers, "bulk_s": round(bulk_s, 2), **{f"bulk_{k}": v for k, v in bulk_io.items()},
                             "bulk_invalidations": bulk_inv, "app_s": round(app_s, 2) if app_s is not None else None, "app_invalidations": app_inv})

        def ratio(key: str):
            w = [r[key] for r in runs if r["triggers"] and r[key]]
            wo = [r[key] for r in runs if not r["triggers"] and r[key]]
            return {"with_triggers_s": w, "without_triggers_s": wo, "ratio_of_means": round(sum(w) / len(w) / (sum(wo) / len(wo)), 2),
                    "ratio_min_to_min": round(min(w) / min(wo), 2)} if w and wo else None
        return {"portfolios": portfolios, "bulk_lots": portfolios * LOTS, "app_lots": app_lots, "app_rows_per_transaction": 1000,
                "runs": runs, "bulk_insert_select": ratio("bulk_s"), "app_row_by_row": ratio("app_s")}
    finally:
        s.drop()


# --- history: the nightly, status and check on an empty history and on a year of it ---------------

HISTORY_WORKERS = 2  # the nightly's --workers (the default)
# `status` and `check` run as of one hour after the target's close, so their effective trading day is TARGET.
AS_OF = (close_time(TARGET) + timedelta(hours=1)).isoformat()
HISTORY_BUCKETS = 16  # portfolios follow one of this many walks (by a hash of their id)

# Per portfolio, from its lots and cash as they are: the value at the last day's closes, the cost,
# the cash, the lot count, and which walk it follows.
HISTORY_BASE = """
CREATE TEMP TABLE history_base AS
SELECT p.id, coalesce(l.h, 0) AS h, coalesce(l.cost, 0) AS cost, CASE WHEN coalesce(l.cost, 0) = 0 THEN 0 ELSE l.h / l.cost END AS r,
       coalesce(c.cash, 0) AS cash, coalesce(l.n, 0) AS n, abs(hashtext(p.id::text)) %% %(buckets)s AS bucket
FROM portfolios p
LEFT JOIN (SELECT pos.portfolio_id, sum(pos.quantity * sp.close) AS h, sum(pos.quantity * pos.entry_price) AS cost, count(*) AS n
           FROM positions pos JOIN symbol_prices_daily sp ON sp.symbol = pos.symbol AND sp.price_date = %(last)s
           WHERE pos.deleted_at IS NULL GROUP BY pos.portfolio_id) l ON l.portfolio_id = p.id
LEFT JOIN (SELECT portfolio_id, sum(amount) AS cash FROM cash_transactions GROUP BY portfolio_id) c ON c.portfolio_id = p.id
WHERE p.deleted_at IS NULL
ORDER BY p.id
"""
# Per walk and day (k trading days before the last day): a smooth factor, exactly 1 on the last day.
HISTORY_WALK = """
CREATE TEMP TABLE history_walk AS
SELECT g AS bucket, t.d, (t.d + time '22:30') AT TIME ZONE 'UTC' AS at,
       (exp(-0.0004 * t.k) * (1 + 0.05 * (sin(0.11 * t.k + g * 0.39) - sin(g * 0.39))))::numeric(12, 10) AS f
FROM generate_series(0, %(buckets)s - 1) g, unnest(%(days)s::date[], %(ks)s::int[]) AS t(d, k)
"""
# One day's snapshots of every portfolio, through the parent table (tuple routing once it is
# partitioned), in portfolio order (the day's walks are one row, so history_base is scanned in its
# order and never hashed): the heap fills day after day as the nights fill it. Complete
# rows (priced = position_count, not partial, not stale): the nightly neither heals nor recomputes them.
HISTORY_SQL = """
INSERT INTO portfolio_snapshots (portfolio_id, snapshot_date, holdings_value, cash_balance, total_value, total_cost, total_pnl,
                                 pnl_percent, position_count, priced_position_count, is_partial, missing_symbols, stale_symbols,
                                 created_at, updated_at)
SELECT x.id, %(d)s, x.h, x.cash, x.h + x.cash, x.cost, x.h - x.cost, round((x.r * x.f - 1) * 100, 6), x.n, x.n, false, NULL, NULL, x.at, x.at
FROM (SELECT b.id, b.cash, b.cost, b.n, b.r, w.fs[b.bucket + 1] AS f, w.at, round(b.h * w.fs[b.bucket + 1], 6) AS h
      FROM (SELECT array_agg(f ORDER BY bucket) AS fs, min(at) AS at FROM history_walk WHERE d = %(d)s) w, history_base b
      OFFSET 0) x
"""
SNAPSHOT_INDEXES = """
SELECT c.conname, pg_get_constraintdef(c.oid), i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
WHERE i.indrelid = 'portfolio_snapshots'::regclass ORDER BY 3
"""


def drop_snapshot_indexes(conn) -> list[str]:
    """Drop portfolio_snapshots' indexes (and the primary key and unique constraints behind them);
    return the statements that re-create them as they were. A bulk load then builds each index once,
    sorted, instead of inserting into it row by row (1M rows on this machine, loaded: 17 s with the
    indexes in place, 6 s without + 3 s to build them)."""
    restore = []
    for con, condef, idx, idxdef in conn.execute(SNAPSHOT_INDEXES).fetchall():
        if con:
            conn.execute(f'ALTER TABLE portfolio_snapshots DROP CONSTRAINT "{con}"')
            restore.append(f'ALTER TABLE portfolio_snapshots ADD CONSTRAINT "{con}" {condef}')
        else:
            conn.execute(f"DROP INDEX {idx}")
            restore.append(idxdef.replace(" ON ONLY ", " ON ", 1))  # a partitioned parent's index: built on every partition
    return restore


def history_days(days: int) -> list[date]:
    """The ``days`` trading days up to YESTERDAY (the day before the target), oldest first."""
    return trading_days_between(trading_days_back(YESTERDAY, days - 1), YESTERDAY)


def seed_history(conn, days: int) -> dict:
    """Snapshots of every portfolio for the ``days`` trading days up to YESTERDAY, set-based (one
    INSERT ... SELECT per day, the indexes dropped and built after), not the application's backfill.

    The values are plausible, not exact valuations: on the last day each portfolio's value at that
    day's closes (lots and cash as they are), on earlier days that value on a smooth walk. The
    nightly only creates the target day and reads none of these values, only each portfolio's last
    snapshot date (and heals partial or stale rows, of which there are none)."""
    t0 = time.perf_counter()
    dates = history_days(days)
    for t in ("history_base", "history_walk"):
        conn.execute(f"DROP TABLE IF EXISTS {t}")
    conn.execute(HISTORY_BASE, {"last": dates[-1], "buckets": HISTORY_BUCKETS})
    conn.execute(HISTORY_WALK, {"days": dates, "ks": list(range(len(dates) - 1, -1, -1)), "buckets": HISTORY_BUCKETS})
    conn.execute("ANALYZE history_base")
    conn.execute("ANALYZE history_walk")
    n = conn.execute("SELECT count(*) FROM history_base").fetchone()[0]
    conn.execute("SELECT snapshotter_ensure_snapshot_partitions(%s, %s)", (dates[0], dates[-1]))  # the months' partitions (0008)
    before = server_io(conn)
    indexes = [r[2] for r in conn.execute(SNAPSHOT_INDEXES)]
    restore = drop_snapshot_indexes(conn)
    # The foreign key to portfolios is not checked row by row (the ids come from portfolios): 'replica'
    # skips its triggers (portfolio_snapshots has none of its own). It needs a superuser, or the grant.
    replica = conn.execute("SELECT current_setting('is_superuser') = 'on' OR has_parameter_privilege('session_replication_role', 'SET')").fetchone()[0]
    rows, logged = 0, time.perf_counter()
    try:
        if replica:
            conn.execute("SET session_replication_role = replica")
        for d in dates:
            rows += conn.execute(HISTORY_SQL, {"d": d}).rowcount
            if time.perf_counter() - logged > 30:
                logged = time.perf_counter()
                log(f"history: {rows:,} of {n * len(dates):,} snapshots, {logged - t0:.0f}s")
    finally:
        conn.execute("RESET session_replication_role")
    insert_s = time.perf_counter() - t0
    conn.execute("SET maintenance_work_mem = '1GB'")
    for stmt in restore:
        conn.execute(stmt)
    conn.execute("RESET maintenance_work_mem")
    assert [r[2] for r in conn.execute(SNAPSHOT_INDEXES)] == indexes, "portfolio_snapshots' indexes were not rebuilt as they were"
    index_s = time.perf_counter() - t0 - insert_s
    io = io_since(conn, before)
    for t in ("history_base", "history_walk"):
        conn.execute(f"DROP TABLE {t}")
    total = insert_s + index_s
    log(f"history: {rows:,} snapshots ({n:,} portfolios x {len(dates)} trading days, {dates[0]} .. {dates[-1]}) in {total:.1f}s "
        f"(insert {insert_s:.1f}s, {len(restore)} indexes {index_s:.1f}s; {total / max(rows, 1) * 1e6:.1f}s per million rows) {io}")
    return {"rows": rows, "first_day": dates[0].isoformat(), "last_day": dates[-1].isoformat(), "insert_s": round(insert_s, 2),
            "index_build_s": round(index_s, 2), "s_per_million_rows": round(total / max(rows, 1) * 1e6, 2),
            "fk_checked_per_row": not replica, **{f"generation_{k}": v for k, v in io.items()}}


def snapshots_size(conn) -> dict:
    """portfolio_snapshots' heap (with TOAST, FSM, VM) and indexes, summed over its partitions if it has any
    (pg_partition_tree lists none for a plain table; a partitioned parent has no storage of its own)."""
    table, indexes = conn.execute(
        "SELECT sum(pg_table_size(r)), sum(pg_indexes_size(r)) FROM "
        "(SELECT relid FROM pg_partition_tree('portfolio_snapshots') UNION SELECT 'portfolio_snapshots'::regclass) t(r)"
    ).fetchone()
    rows = conn.execute("SELECT count(*) FROM portfolio_snapshots").fetchone()[0]
    return {"rows": rows, "table_mb": round(int(table) / 2**20, 1), "indexes_mb": round(int(indexes) / 2**20, 1),
            "total_mb": round(int(table + indexes) / 2**20, 1)}


FINGERPRINT = """
SELECT (SELECT sum(quantity * entry_price) FROM positions), (SELECT sum(close) FROM symbol_prices_daily),
       (SELECT sum(amount) FROM cash_transactions)
"""


def history_db(label: str, n: int, days: int, price_days: list[date]) -> tuple[PgScratch, dict]:
    """A scratch database of N portfolios x 10 lots, closes for ``price_days``, and snapshots of the
    ``days`` trading days up to YESTERDAY, vacuumed, analyzed, checkpointed.

    The lots and cash are dated YESTERDAY in both databases: the empty one has closes for the
    history's days too (the same closes), and with lots held then, those days would be holes its
    nightly backfills. The nightly reads no lot's date beyond that."""
    s = PgScratch(f"history_{label}")
    try:
        with s.connect() as conn:
            conn.execute("SELECT setseed(0.17)")  # the same closes, lots and cash in both databases
            pg_generate(conn, n, price_days, YESTERDAY, None)
            fingerprint = [str(x) for x in conn.execute(FINGERPRINT).fetchone()]
            seeded = seed_history(conn, days)
            conn.execute(YESTERDAYS_VALUES, {"d": YESTERDAY})  # last night's market values on the lots
            conn.execute("DELETE FROM snapshot_invalidations")  # history already valued: nothing pending
            t0 = time.perf_counter()
            settle(conn)
            seeded["vacuum_analyze_checkpoint_s"] = round(time.perf_counter() - t0, 2)
            size = snapshots_size(conn)
        log(f"history {label}: portfolio_snapshots {size['rows']:,} rows, {size['total_mb']:,} MB "
            f"(heap {size['table_mb']:,}, indexes {size['indexes_mb']:,}); VACUUM ANALYZE + CHECKPOINT {seeded['vacuum_analyze_checkpoint_s']}s")
        return s, {"history_days": days, "generation": seeded, "portfolio_snapshots_before": size, "fingerprint": fingerprint}
    except BaseException:
        s.drop()
        raise


def history_nightly(s: PgScratch, label: str, n: int, days: int, rep: int) -> dict:
    """One nightly portfolio-refresh of TARGET, then status --json and check, each from a settled server."""
    with s.connect() as conn:
        if rep:
            reset(conn)
        settle(conn)
        before = server_io(conn)
    elapsed, summary, rss = run_snapshotter(s.url, "portfolio-refresh", "--date", TARGET.isoformat(), "--no-wait",
                                            "--workers", str(HISTORY_WORKERS))
    with s.connect() as conn:
        run_io = io_since(conn, before)
        run_io["wal_mb"] = round(float(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (before[0],)).fetchone()[0]) / 2**20, 1)
        made, total = conn.execute("SELECT count(*) FILTER (WHERE snapshot_date = %s), count(*) FROM portfolio_snapshots", (TARGET,)).fetchone()
        settle(conn)
    # Exactly one new day for every portfolio, in both databases; nothing healed or recomputed.
    assert summary["snapshots_created"] == n == made and summary["snapshots_recomputed"] == 0, (label, summary, made)
    assert summary["positions_valued"] == n * LOTS and total == n * (days + 1), (label, summary, total)
    log(f"history {label} run {rep + 1}: nightly {summary['snapshots_created']:,} snapshots in {elapsed:.1f}s "
        f"(snapshot pass {summary['snapshot_phase_s']}s, market values {summary['market_value_phase_s']}s) {run_io}")
    status_s, out, _ = run_cli(s.url, "--now", AS_OF, "status", "--json")
    report = json.loads(out.strip().splitlines()[-1])
    fresh = report["snapshots"]
    assert report["newest_snapshot_date"] == TARGET.isoformat() and fresh["lag_trading_days"] == 0, (label, report)
    assert fresh["active_portfolios"] == n and fresh["portfolios_behind"] == 0, (label, fresh)
    # exact below 100,000 rows, else the planner's estimate (README "Operator commands"): within a tenth here
    assert abs(report["tables"]["portfolio_snapshots"] - total) <= total / 10, (label, report["tables"])
    with s.connect() as conn:
        settle(conn)
    check_s, out, _ = run_cli(s.url, "--now", AS_OF, "check", expect=0)
    assert out.startswith("ok: ") and f"every one of the {n} active portfolios" in out, (label, out)
    log(f"history {label} run {rep + 1}: status --json {status_s:.1f}s, check {check_s:.1f}s ({out.strip()})")
    return {"db": label, "repeat": rep + 1, "total_s": round(elapsed, 2), "snapshot_phase_s": summary["snapshot_phase_s"],
            "market_value_phase_s": summary["market_value_phase_s"], **run_io, "snapshots_created": summary["snapshots_created"],
            "peak_rss_mb": round(rss / 1024), "status_s": round(status_s, 2), "check_s": round(check_s, 2), "check_exit": 0}


def bench_pg_history(n: int, days: int, repeats: int = 1) -> dict:
    """The nightly portfolio-refresh (--workers 2), status --json and check on two databases with the
    same portfolios, lots and closes: one whose portfolios have a snapshot on YESTERDAY only ("empty"),
    one with the ``days`` trading days up to YESTERDAY ("year"). The runs alternate empty, year."""
    price_days = history_days(days) + [TARGET]
    dbs: dict[str, PgScratch] = {}
    try:
        out: dict = {"portfolios": n, "lots": n * LOTS, "history_days": days, "workers": HISTORY_WORKERS, "repeats": repeats,
                     "status_check_as_of": AS_OF, "closes_days": len(price_days), "databases": {}, "runs": []}
        for label, d in (("empty", 1), ("year", days)):
            dbs[label], out["databases"][label] = history_db(label, n, d, price_days)
        prints = {label: out["databases"][label].pop("fingerprint") for label in dbs}
        assert prints["empty"] == prints["year"], prints  # the same lots, cash and closes
        # What every command's time includes before it touches the database: the interpreter and the imports.
        out["cli_startup_s"] = round(min(run_cli(dbs["empty"].url, "--version")[0] for _ in range(3)), 2)
        log(f"history: snapshotter --version (start-up) {out['cli_startup_s']}s")
        for rep in range(repeats):
            for label, d in (("empty", 1), ("year", days)):
                out["runs"].append(history_nightly(dbs[label], label, n, d, rep))

        def median(label: str, key: str):
            return round(statistics.median(r[key] for r in out["runs"] if r["db"] == label), 3)

        keys = ("total_s", "snapshot_phase_s", "market_value_phase_s", "wal_gb", "wal_mb", "checkpoints", "status_s", "check_s")
        out["median"] = {label: {k: median(label, k) for k in keys} for label in dbs}
        for label in dbs:
            out["median"][label]["snapshots_total_mb"] = out["databases"][label]["portfolio_snapshots_before"]["total_mb"]
        e, y = out["median"]["empty"], out["median"]["year"]
        out["year_vs_empty"] = {k: round(y[k] / e[k], 2) if e[k] else None for k in e}
        log(f"history: year/empty {out['year_vs_empty']}")
        return out
    finally:
        for s in dbs.values():
            s.drop()


def bench_sqlite_daily(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        url = f"sqlite:///{path}"
        engine = db.connect(url)
        db.upgrade(engine)
        engine.dispose()
        t0 = time.perf_counter()
        rng = random.Random(7)
        con = sqlite3.connect(path)
        now = "2026-11-20 00:00:00.000000"
        con.executemany(
            "INSERT INTO symbol_prices_daily VALUES (?, ?, NULL, NULL, NULL, ?, 1000, 'bench', ?)",
            ((f"S{s:04d}", d.isoformat(), f"{10 + s % 500 + rng.random() * 5:.2f}", now) for s in range(SYMBOLS) for d in (YESTERDAY, TARGET)),
        )
        pids = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(n)]
        con.executemany("INSERT INTO portfolios (id, name, base_currency, created_at) VALUES (?, ?, 'USD', ?)", ((p, p[:8], now) for p in pids))
        con.executemany(
            "INSERT INTO positions (id, portfolio_id, symbol, quantity, entry_price, entry_date) VALUES (?, ?, ?, ?, ?, ?)",
            ((uuid.UUID(int=rng.getrandbits(128)).hex, p, f"S{(i * 7 + j * 197) % SYMBOLS:04d}", f"{1 + rng.random() * 100:.4f}",
              f"{10 + rng.random() * 400:.2f}", YESTERDAY.isoformat()) for i, p in enumerate(pids) for j in range(LOTS)),
        )
        con.executemany("INSERT INTO cash_transactions VALUES (?, ?, ?, ?)",
                        ((uuid.UUID(int=rng.getrandbits(128)).hex, p, YESTERDAY.isoformat(), f"{rng.random() * 10000:.2f}") for p in pids))
        con.executemany(
            "INSERT INTO portfolio_snapshots (portfolio_id, snapshot_date, holdings_value, cash_balance, total_value, total_cost, total_pnl, "
            "pnl_percent, position_count, priced_position_count, is_partial, created_at, updated_at) VALUES (?, ?, '0', '0', '0', '0', '0', '0', 10, 10, 0, ?, ?)",
            ((p, YESTERDAY.isoformat(), now, now) for p in pids),
        )
        con.execute("DELETE FROM snapshot_invalidations")  # history already valued: nothing pending (see pg_generate)
        con.commit()
        con.execute("ANALYZE")
        con.close()
        log(f"sqlite: generated {n:,} portfolios in {time.perf_counter() - t0:.1f}s")
        elapsed, summary, rss = run_snapshotter(url, "portfolio-refresh", "--date", TARGET.isoformat(), "--no-wait")
        log(f"sqlite: {summary['snapshots_created']:,} snapshots in {elapsed:.1f}s, peak RSS {rss / 1024:.0f} MB")
        return {"portfolios": n, "snapshots": summary["snapshots_created"], "snapshotter_s": round(elapsed, 2),
                "snapshot_phase_s": summary.get("snapshot_phase_s"), "market_value_phase_s": summary.get("market_value_phase_s"),
                "snapshots_per_s": round(summary["snapshots_created"] / elapsed), "peak_rss_mb": round(rss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portfolios", type=int, default=1_000_000)
    ap.add_argument("--backfill-portfolios", type=int, default=10_000)
    ap.add_argument("--sqlite-portfolios", type=int, default=100_000)
    ap.add_argument("--recompute-portfolios", type=int, default=10_000)
    ap.add_argument("--load-lots", type=int, default=1_000_000, help="lots loaded in one INSERT ... SELECT (10 per portfolio)")
    ap.add_argument("--load-app-lots", type=int, default=300_000, help="lots inserted row by row (executemany) in the load benchmark")
    ap.add_argument("--history-portfolios", type=int, default=200_000, help="portfolios of the history part (10 lots each)")
    ap.add_argument("--history-days", type=int, default=250, help="trading days of snapshots in the history part's year database")
    ap.add_argument("--history-repeats", type=int, default=1, help="nightly + status + check per database, alternating empty, year")
    ap.add_argument("--only", choices=["daily", "backfill", "recompute", "load", "sqlite", "history"], action="append")
    ap.add_argument("--workers", default="2,1", help="comma-separated --workers values for the daily run (default 2,1)")
    ap.add_argument("--splits", type=int, default=0,
                    help="the daily run also with this many splits on file, alternating with none (e.g. 1000)")
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args()
    # Start-up as an installed package has it: pip compiles the bytecode of what it installs
    # (the image), an editable checkout under PYTHONDONTWRITEBYTECODE=1 would compile every
    # module of the package on every command (0.05-0.1 s of each `check`).
    compileall.compile_dir(ROOT / "snapshotter", quiet=1)
    only = set(a.only or ["daily", "backfill", "recompute", "load", "sqlite", "history"])
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"}
    with psycopg.connect(ADMIN_URL) as c:
        results["postgresql"] = c.execute("SHOW server_version").fetchone()[0]
    results["sqlite"] = sqlite3.sqlite_version
    if "daily" in only:
        results["pg_daily"] = bench_pg_daily(a.portfolios, [int(w) for w in a.workers.split(",")], a.splits)
    if "backfill" in only:
        results["pg_backfill"] = bench_pg_backfill(a.backfill_portfolios)
    if "recompute" in only:
        results["pg_recompute"] = bench_pg_recompute(a.recompute_portfolios)
    if "load" in only:
        results["pg_load"] = bench_pg_load(a.load_lots, a.load_app_lots)
    if "history" in only:
        results["pg_history"] = bench_pg_history(a.history_portfolios, a.history_days, a.history_repeats)
    if "sqlite" in only:
        results["sqlite_daily"] = bench_sqlite_daily(a.sqlite_portfolios)
    print(json.dumps(results, indent=2))
    if a.json_out:
        a.json_out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
