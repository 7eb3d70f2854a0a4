"""status, check and history on SQLite and PostgreSQL: exact JSON, exit codes and lines.

The data is laid out relative to the real effective trading date (the CLI runs
with the real clock), so these tests hold on any day they run.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from snapshotter.data import db, frontier_sql, schema
from snapshotter.ops.report import partial_marks, sparkline
from snapshotter.core.calendar import effective_trading_date, previous_trading_day, trading_days_back, trading_days_between
from tests.conftest import invoke, table_rows
from tests.factories import NOW, add_cash, add_close, add_lot, add_portfolio, add_snapshot

E = effective_trading_date(NOW)  # the CLI runs as of NOW too (--now): never the clock, whose close moves E
E1 = previous_trading_day(E)
E3 = trading_days_back(E, 3)


def add_run(conn, batch_type, target, status, started, seconds=None, heartbeat=None, stats=None, error=None, host="other-host", pid=4242):
    run_id = uuid.uuid4().hex
    conn.execute(
        schema.batch_run_tracking.insert().values(
            run_id=run_id, batch_type=batch_type, target_date=target, status=status, started_at=started,
            finished_at=started + timedelta(seconds=seconds) if seconds is not None else None,
            heartbeat_at=heartbeat if heartbeat is not None else (started + timedelta(seconds=seconds or 0)),
            host=host, pid=pid, stats=stats or {}, error=error,
        )
    )
    return run_id


@pytest.fixture
def fleet(engine):
    """Live portfolios in every state the status report distinguishes."""
    with engine.begin() as c:
        fresh = add_portfolio(c, "fresh")  # snapshot on E
        add_lot(c, fresh, "AAA", 1, 10, E3)
        behind = add_portfolio(c, "behind")  # last snapshot E1
        add_lot(c, behind, "BBB", 1, 10, E3)
        cash_only = add_portfolio(c, "cash only")  # active by its cash, never snapshotted
        add_cash(c, cash_only, E3, "250.5")
        gone = add_portfolio(c, "deleted", deleted=True)
        add_lot(c, gone, "DDD", 1, 10, E3)
        sold = add_portfolio(c, "sold out")  # its only lot closed on E3: not active on E
        add_lot(c, sold, "CCC", 1, 10, trading_days_back(E, 10), exit_date=E3)
        flat = add_portfolio(c, "flat cash")  # deposits and withdrawals net to 0: not active
        add_cash(c, flat, E3, "100")
        add_cash(c, flat, E1, "-100")
        c.execute(schema.watchlist.insert().values(symbol="WWW"))
        add_close(c, "AAA", E, "11")
        add_close(c, "BBB", E1, "12")
        for d in (E3, trading_days_back(E, 2), E1, E):
            add_snapshot(c, fresh, d, 100)
        add_snapshot(c, behind, E3, 100)
        add_snapshot(c, behind, E1, 101)
    return dict(fresh=fresh, behind=behind, cash_only=cash_only)


# --- status -------------------------------------------------------------------------------


def test_status_json_runs_dead_rows_lag_and_missing_closes(db_url, engine, fleet):
    now = NOW
    with engine.begin() as c:
        sb = [add_run(c, "symbol_batch", E1, "completed", now - timedelta(hours=30 - i), seconds=90.5,
                      stats={"provider": "csv", "symbols_requested": 3, "symbols_fetched": 3, "symbols_failed": [],
                             "symbols_deferred": [], "provider_calls": 3, "rows_upserted": 9, "failures": {}})
              for i in range(5)]
        dead = add_run(c, "symbol_batch", E, "running", now - timedelta(minutes=40), heartbeat=now - timedelta(minutes=11),
                       stats={"symbols_fetched": 1, "symbols_failed": ["X", "Y"]})
        alive = add_run(c, "symbol_batch", E, "running", now - timedelta(minutes=5), heartbeat=now - timedelta(minutes=1))
        pr = add_run(c, "portfolio_refresh", E1, "failed", now - timedelta(hours=20), seconds=12.25, error="1 of 3 portfolios failed",
                     stats={"mode": "gaps", "portfolios_active": 3, "snapshots_created": 2, "snapshots_recomputed": 0,
                            "portfolios_failed": 1, "failed_portfolios": [{"portfolio_id": "x", "error": "y"}], "days_backfilled": 0})
    before = table_rows(engine, schema.batch_run_tracking)
    r = invoke("--now", NOW.isoformat(), "status", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert table_rows(engine, schema.batch_run_tracking) == before  # status flags, never changes

    assert report["effective_trading_date"] == E.isoformat()
    assert report["newest_snapshot_date"] == E.isoformat() and report["newest_price_date"] == E.isoformat()
    assert report["snapshots"] == {"lag_trading_days": 0, "active_portfolios": 3, "portfolios_behind": 2,
                                   "portfolios_without_snapshot": 1, "oldest_behind_date": E1.isoformat()}
    # the one "symbols needed" rule: open lots, lots closed within 30 days (CCC, sold on E3), the watchlist
    assert report["missing_closes"] == {"date": E.isoformat(), "count": 3, "symbols": ["BBB", "CCC", "WWW"]}
    runs = report["last_runs"]
    assert sorted(runs) == ["portfolio_refresh", "symbol_batch"]
    assert [x["run_id"] for x in runs["symbol_batch"]] == [alive, dead, sb[4], sb[3], sb[2]]  # newest 5, newest first
    assert [(x["status"], x["dead"]) for x in runs["symbol_batch"]] == [("running", False), ("running", True)] + [("completed", False)] * 3
    assert runs["symbol_batch"][2]["stats"] == {"provider": "csv", "symbols_requested": 3, "symbols_fetched": 3, "symbols_failed": 0,
                                                "symbols_deferred": 0, "provider_calls": 3, "rows_upserted": 9}
    assert runs["symbol_batch"][2]["duration_s"] == 90.5 and runs["symbol_batch"][0]["duration_s"] is None
    (p,) = runs["portfolio_refresh"]
    assert {k: p[k] for k in ("run_id", "target_date", "status", "dead", "duration_s", "error", "stats")} == {
        "run_id": pr, "target_date": E1.isoformat(), "status": "failed", "dead": False, "duration_s": 12.25,
        "error": "1 of 3 portfolios failed",
        "stats": {"mode": "gaps", "portfolios_active": 3, "snapshots_created": 2, "snapshots_recomputed": 0, "portfolios_failed": 1,
                  "days_backfilled": 0},
    }
    assert [(x["run_id"], x["target_date"], x["host"], x["pid"], x["stats"]) for x in report["dead_runs"]] == [
        (dead, E.isoformat(), "other-host", 4242, {"symbols_fetched": 1, "symbols_failed": 2})
    ]

    r = invoke("--now", NOW.isoformat(), "status", db_url=db_url)  # the table view says the same
    assert r.returncode == 0, r.stderr
    assert f"newest snapshot date: {E} (0 trading days behind)" in r.stdout
    assert f"active portfolios behind it: 2 of 3 (oldest {E1}), 1 without any snapshot" in r.stdout
    assert f"symbols without a close for {E}: 3 (BBB, CCC, WWW)" in r.stdout
    assert f"dead: symbol_batch run {dead} (target {E}, host other-host, pid 4242) still 'running'" in r.stdout
    assert "running (dead)" in r.stdout


def test_status_on_a_database_without_schema(tmp_path):
    r = invoke("--now", NOW.isoformat(), "status", "--json", db_url=f"sqlite:///{tmp_path / 'empty.db'}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"schema_revision": None, "schema_head": db.head_revision(), "effective_trading_date": E.isoformat(),
                                    "tables": {}, "tables_estimated": [], "last_runs": {}, "dead_runs": []}


# --- check ------------------------------------------------------------------------------------


def test_check_is_0_when_fresh_and_1_when_stale_beyond_max_lag(db_url, engine, fleet):
    r = invoke("--now", NOW.isoformat(), "check", db_url=db_url)
    assert (r.returncode, r.stdout) == (0, f"ok: newest snapshot {E} is 0 trading days behind {E} (max 1); 2 of 3 active portfolios behind it\n")
    with engine.begin() as c:
        c.execute(schema.portfolio_snapshots.delete().where(schema.portfolio_snapshots.c.snapshot_date > E3))
    # active on E3 also counts "flat cash" (its withdrawal came on E1); neither it nor "cash only" has a snapshot
    r = invoke("--now", NOW.isoformat(), "check", db_url=db_url)
    assert (r.returncode, r.stdout) == (1, f"stale: newest snapshot {E3} is 3 trading days behind {E} (max 1); 2 of 4 active portfolios behind it\n")
    r = invoke("--now", NOW.isoformat(), "check", "--max-lag", "3", db_url=db_url)
    assert (r.returncode, r.stdout.split(";")[0]) == (0, f"ok: newest snapshot {E3} is 3 trading days behind {E} (max 3)")
    r = invoke("--now", NOW.isoformat(), "check", "--max-lag", "2", db_url=db_url)
    assert r.returncode == 1


def test_check_without_snapshots_or_schema_is_stale_and_bad_max_lag_is_64(db_url, engine, tmp_path):
    r = invoke("--now", NOW.isoformat(), "check", db_url=db_url)
    assert (r.returncode, r.stdout) == (1, f"stale: no snapshots at all (effective trading date {E})\n")
    r = invoke("--now", NOW.isoformat(), "check", db_url=f"sqlite:///{tmp_path / 'empty.db'}")
    assert (r.returncode, r.stdout) == (1, f"stale: the database has no snapshotter schema (effective trading date {E})\n")
    r = invoke("--now", NOW.isoformat(), "check", "--max-lag", "-1", db_url=db_url)
    assert r.returncode == 64 and "'--max-lag'" in r.stderr and "greater than or equal to 0" in r.stderr


# --- history ----------------------------------------------------------------------------------


def test_sparkline_scales_exactly_and_downsamples():
    assert sparkline([Decimal("100"), Decimal("108"), Decimal("104"), Decimal("116"), Decimal("100.000001")]) == "▁▅▃█▁"
    assert sparkline([0, 7, 1, 2, 3, 4, 5, 6]) == "▁█▂▃▄▅▆▇"
    assert sparkline([5, 5, 5]) == "▄▄▄" and sparkline([]) == ""
    # 8 values on 4 columns: each column shows the last value of its pair
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], width=4) == "▁▃▆█"  # 1, 3, 5, 7, scaled among themselves
    assert partial_marks([False, True, False, False, False, False, True, False], width=4) == "!  !"
    assert partial_marks([False, False]) == ""


def test_history_json_table_and_sparkline(db_url, engine):
    days = [date(2026, 9, 14), date(2026, 9, 15), date(2026, 9, 16), date(2026, 9, 17), date(2026, 9, 18)]
    with engine.begin() as c:
        pid = add_portfolio(c, "hist")
        other = add_portfolio(c, "other")
        for d, v in zip(days, ("100", "108", "104", "116", "100")):
            add_snapshot(c, pid, d, v, partial=(d == days[2]), missing="ZZZ" if d == days[2] else None)
        add_snapshot(c, other, days[0], 5)
    r = invoke("history", "--portfolio", str(pid), "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    h = json.loads(r.stdout)
    assert {k: v for k, v in h.items() if k != "snapshots"} == {
        "portfolio_id": str(pid), "name": "hist", "deleted": False, "from": "2026-06-21", "to": "2026-09-18",
        "count": 5, "partial_days": 1, "stale_days": 0, "sparkline": "▁▅▃█▁",
    }
    assert h["snapshots"][2] == {
        "snapshot_date": "2026-09-16", "total_value": "104.000000", "holdings_value": "94.000000", "cash_balance": "10.000000",
        "total_cost": "50.000000", "total_pnl": "44.000000", "pnl_percent": "88.000000", "position_count": 2,
        "priced_position_count": 1, "is_partial": True, "missing_symbols": "ZZZ", "stale_symbols": None,
    }
    assert [s["snapshot_date"] for s in h["snapshots"]] == [d.isoformat() for d in days]

    r = invoke("history", "--portfolio", str(pid), "--from", "2026-09-15", "--to", "2026-09-17", db_url=db_url)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"hist ({pid}): 2026-09-15 .. 2026-09-17"
    assert lines[1] == "total value 108.00 -> 116.00 (low 104.00, high 116.00)"
    assert lines[2:5] == ["▃▁█", " !", "! = partial day (1): a lot without a close is left out of the value"]
    rows = [l for l in lines if l.startswith("│ 2026-")]
    assert [l.split("│")[1].strip() for l in rows] == ["2026-09-15", "2026-09-16", "2026-09-17"]
    assert "partial: ZZZ" in rows[1] and "1/2" in rows[1] and "partial" not in rows[0] + rows[2]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--portfolio", "00000000-0000-0000-0000-000000000000"], "unknown portfolio 00000000-0000-0000-0000-000000000000"),
        (["--portfolio", "nope"], "unknown portfolio 'nope': not a UUID"),
        (["--portfolio", "{pid}", "--from", "2026-09-18", "--to", "2026-09-14"], "--from 2026-09-18 is after --to 2026-09-14"),
        (["--portfolio", "{pid}", "--to", "2026-02-30"], "'2026-02-30' is not a date (YYYY-MM-DD)"),
    ],
)
def test_history_bad_arguments_exit_64(db_url, engine, args, message):
    with engine.begin() as c:
        pid = add_portfolio(c, "p")
    r = invoke("history", *[a.format(pid=pid) for a in args], db_url=db_url)
    assert r.returncode == 64, r.stderr
    assert [l for l in r.stderr.splitlines() if l.startswith("snapshotter: error:")] == [f"snapshotter: error: {message}"]
    assert r.stdout == ""


def test_a_long_wait_keeps_heartbeating_so_a_live_run_never_looks_dead(engine):
    """A capped Retry-After or a long --poll-interval is slept in slices with a heartbeat between."""
    from snapshotter.data import tracking

    run = tracking.Run(engine, "symbol_batch", date(2026, 11, 20)).start()
    beats: list = []

    def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        with engine.connect() as c:
            beats.append(c.execute(_heartbeat_query(run.run_id)).scalar_one())

    slept: list[float] = []
    run.keep_alive(fake_sleep)(150)
    assert slept == [60.0, 60.0, 30.0]
    with engine.connect() as c:
        final = c.execute(_heartbeat_query(run.run_id)).scalar_one()
    assert beats[0] < beats[1] < beats[2] == final  # one heartbeat after each full minute
    slept.clear()
    run.keep_alive(fake_sleep)(12)
    assert slept == [12]


def _heartbeat_query(run_id: str):
    import sqlalchemy as sa

    t = schema.batch_run_tracking
    return sa.select(t.c.heartbeat_at).where(t.c.run_id == run_id)


def _freshness_from_scratch(engine) -> dict:
    """status's snapshot freshness computed in Python from every row (the SPEC's "active" on the
    newest snapshot day, each portfolio's last snapshot), to hold the SQL's probes to."""
    with engine.connect() as c:
        snaps = c.execute(sa.select(schema.portfolio_snapshots.c.portfolio_id, schema.portfolio_snapshots.c.snapshot_date)).all()
        ports = c.execute(sa.select(schema.portfolios.c.id, schema.portfolios.c.deleted_at)).all()
        lots = c.execute(sa.select(schema.positions)).mappings().all()
        cash = c.execute(sa.select(schema.cash_transactions)).mappings().all()
    newest = max((d for _, d in snaps), default=None)
    out = {"newest_snapshot_date": newest.isoformat() if newest else None}
    if newest is None:
        return out
    last: dict = {}
    for p, d in snaps:
        last[p] = max(last.get(p, d), d)

    def active(p):
        holds = any(x["portfolio_id"] == p and x["deleted_at"] is None and x["entry_date"] <= newest
                    and (x["exit_date"] is None or x["exit_date"] > newest) for x in lots)
        balance = sum((Decimal(x["amount"]) for x in cash if x["portfolio_id"] == p and x["txn_date"] <= newest), Decimal(0))
        return holds or balance != 0

    act = [p for p, deleted in ports if deleted is None and active(p)]
    behind = [p for p in act if last.get(p) != newest]
    olds = [last[p] for p in behind if p in last]
    out.update(active_portfolios=len(act), portfolios_behind=len(behind), portfolios_without_snapshot=sum(p not in last for p in behind),
               oldest_behind_date=min(olds).isoformat() if olds else None)
    return out


def _frontier_is_true(engine) -> None:
    """Every frontier row status trusts (``as_of`` set, no change pending) is the SPEC's activity
    on its day, computed from every row in Python, and an active portfolio has that day's snapshot."""
    with engine.connect() as c:
        rows = c.execute(sa.select(schema.portfolio_frontier)).all()
        pending = set(c.execute(sa.select(schema.snapshot_invalidations.c.portfolio_id)).scalars())
        snaps = set(c.execute(sa.select(schema.portfolio_snapshots.c.portfolio_id, schema.portfolio_snapshots.c.snapshot_date)).all())
        ports = dict(c.execute(sa.select(schema.portfolios.c.id, schema.portfolios.c.deleted_at)).all())
        lots = c.execute(sa.select(schema.positions)).mappings().all()
        cash = c.execute(sa.select(schema.cash_transactions)).mappings().all()
    for pid, as_of, active in rows:
        if as_of is None or pid in pending:
            continue
        holds = any(x["portfolio_id"] == pid and x["deleted_at"] is None and x["entry_date"] <= as_of
                    and (x["exit_date"] is None or x["exit_date"] > as_of) for x in lots)
        balance = sum((Decimal(x["amount"]) for x in cash if x["portfolio_id"] == pid and x["txn_date"] <= as_of), Decimal(0))
        truth = ports[pid] is None and (holds or balance != 0)
        assert active == truth, (pid, as_of, active)
        assert not active or (pid, as_of) in snaps, (pid, as_of)


def test_status_freshness_equals_a_from_scratch_computation_after_every_kind_of_run(engine, monkeypatch):
    """The probes of status/check (the newest day's partition, the last snapshot only of those behind)
    against every row, after a backfill, a nightly that crashed between chunks, its rerun, a forced
    refresh, a new portfolio never snapshotted, a sold-out one and a deleted one."""
    from snapshotter.jobs import snapshots as job
    from snapshotter.ops import status as ops_status
    from tests.factories import NOW, add_closes, crash_on_call

    days = trading_days_between(date(2026, 8, 24), date(2026, 9, 18))
    with engine.begin() as c:
        pids = [add_portfolio(c, f"p{i}") for i in range(4)]
        for i, pid in enumerate(pids):
            add_lot(c, pid, "AAA", "10", "100", "2026-08-24", exit_date="2026-09-10" if i == 3 else None)
        add_cash(c, pids[0], "2026-08-24", "50")
        add_closes(c, "AAA", {d: Decimal(100 + i) for i, d in enumerate(days)})
    opts = dict(progress=False, wait_for_batch=False, chunk_size=1)

    def same():
        with engine.connect() as c:
            got = ops_status.snapshot_freshness(c, date(2026, 12, 4))
        got.pop("lag_trading_days")
        assert got == _freshness_from_scratch(engine)
        _frontier_is_true(engine)
        return got

    def partial_on_15th():
        ps = schema.portfolio_snapshots
        with engine.connect() as c:
            return list(c.execute(sa.select(ps.c.is_partial).where(ps.c.portfolio_id == pids[0], ps.c.snapshot_date == date(2026, 9, 15))).scalars())

    def unknown():
        with engine.connect() as c:
            newest = c.execute(sa.select(sa.func.max(schema.portfolio_snapshots.c.snapshot_date))).scalar()
            return len(c.execute(frontier_sql.unknown_ids(newest, None, 10**6)).all())

    job.backfill(engine, str(pids[1]), date(2026, 8, 24), date(2026, 9, 4), opts=job.Options(**opts), now=NOW)
    assert same()["portfolios_without_snapshot"] == 3
    crash_on_call(monkeypatch, "_snapshot_chunk", 3)
    with pytest.raises(KeyboardInterrupt):
        job.portfolio_refresh(engine, date(2026, 9, 11), job.Options(**opts), now=NOW)
    monkeypatch.undo()
    assert same()["portfolios_behind"] > 0
    job.portfolio_refresh(engine, date(2026, 9, 11), job.Options(**opts), now=NOW)
    assert same()["portfolios_behind"] == 0
    job.refresh_date(engine, date(2026, 9, 11), force=True, opts=job.Options(**opts), now=NOW)
    same()
    with engine.begin() as c:
        add_lot(c, add_portfolio(c, "new"), "AAA", "1", "100", "2026-09-01")
        c.execute(schema.portfolios.update().where(schema.portfolios.c.id == pids[2]).values(deleted_at=NOW))
    got = same()
    assert (got["active_portfolios"], got["portfolios_behind"], got["portfolios_without_snapshot"]) == (3, 1, 1)
    assert unknown() == 2  # the new portfolio and the deleted one: their changes are pending
    job.recompute(engine, opts=job.Options(**opts), now=NOW)  # history rewritten, the newest days not made
    same()
    assert unknown() == 1  # the new portfolio (the gaps pass makes its days); the deleted one is inactive for good
    job.portfolio_refresh(engine, date(2026, 9, 14), job.Options(**opts), now=NOW)
    assert same()["portfolios_behind"] == 0 and unknown() == 0  # every portfolio known again: nothing computed
    with engine.begin() as c:  # cash into a portfolio without lots, a lot closed in the past, a close missing then
        add_cash(c, add_portfolio(c, "cash only"), "2026-09-02", "75")
        c.execute(schema.positions.update().where(schema.positions.c.portfolio_id == pids[1]).values(exit_date=date(2026, 9, 8)))
        c.execute(schema.portfolios.update().where(schema.portfolios.c.id == pids[2]).values(deleted_at=None))
        add_lot(c, pids[0], "BBB", "2", "50", "2026-09-01")
        add_closes(c, "BBB", {d: Decimal(50) for d in days if d < date(2026, 9, 15)})  # none on the 15th yet
    got = same()
    assert (got["active_portfolios"], got["portfolios_behind"]) == (4, 2)
    job.portfolio_refresh(engine, date(2026, 9, 15), job.Options(**opts), now=NOW)  # pids[0] partial on the 15th
    assert same()["portfolios_behind"] == 0 and unknown() == 0 and partial_on_15th() == [True]
    with engine.begin() as c:
        add_close(c, "BBB", date(2026, 9, 15), Decimal(51))
    job.portfolio_refresh(engine, date(2026, 9, 15), job.Options(**opts), now=NOW)  # healed
    assert same()["active_portfolios"] == 4 and unknown() == 0 and partial_on_15th() == [False]


def test_the_frontier_moves_only_forward_and_a_dry_run_leaves_it(engine):
    """A refresh of a past day leaves the newest day's rows; a dry run and --explain keep nothing; a
    backfill of one portfolio computes its activity itself (it values inactive portfolios too)."""
    from snapshotter.jobs import snapshots as job
    from tests.factories import NOW, add_closes

    days = trading_days_between(date(2026, 9, 1), date(2026, 9, 4))
    with engine.begin() as c:
        held, sold, empty = add_portfolio(c, "held"), add_portfolio(c, "sold"), add_portfolio(c, "empty")
        add_lot(c, held, "AAA", "1", "10", "2026-09-01")
        add_lot(c, sold, "AAA", "1", "10", "2026-09-01", exit_date="2026-09-03")
        add_closes(c, "AAA", {d: Decimal(10) for d in days})
    opts = job.Options(progress=False, wait_for_batch=False)

    def frontier():
        with engine.connect() as c:
            return {r.portfolio_id: (r.as_of, r.active) for r in c.execute(sa.select(schema.portfolio_frontier))}

    job.portfolio_refresh(engine, date(2026, 9, 3), opts, now=NOW)
    assert frontier() == {held: (date(2026, 9, 3), True), sold: (date(2026, 9, 3), False), empty: (date(2026, 9, 3), False)}
    job.refresh_date(engine, date(2026, 9, 2), force=True, opts=opts, now=NOW)
    assert frontier()[held] == (date(2026, 9, 3), True)  # not moved back to the 2nd
    before = frontier()
    job.portfolio_refresh(engine, date(2026, 9, 4), job.Options(progress=False, wait_for_batch=False, dry_run=True), now=NOW)
    job.portfolio_refresh(engine, date(2026, 9, 4), job.Options(progress=False, wait_for_batch=False, explain="analyze"), now=NOW)
    assert frontier() == before
    job.backfill(engine, str(sold), date(2026, 9, 1), date(2026, 9, 4), opts=opts, now=NOW)
    assert frontier()[sold] == (date(2026, 9, 4), False)  # sold on the 3rd: inactive on the 4th, computed, not taken from the chunk
    job.backfill(engine, str(held), date(2026, 9, 1), date(2026, 9, 4), opts=opts, now=NOW)
    assert frontier()[held] == (date(2026, 9, 4), True)


def test_status_reads_one_moment_while_a_run_commits(engine):
    """status's several reads (frontier, invalidations, snapshots) see one snapshot of the database:
    a chunk committed between two of them is not half seen."""
    from snapshotter.ops import status as ops_status

    with engine.begin() as c:
        add_portfolio(c, "first")
    count = sa.select(sa.func.count()).select_from(schema.portfolios)
    with ops_status.one_snapshot(engine) as conn:
        before = conn.execute(count).scalar_one()
        with engine.begin() as other:
            add_portfolio(other, "committed meanwhile")
        assert conn.execute(count).scalar_one() == before == 1
    with engine.connect() as c:
        assert c.execute(count).scalar_one() == 2
