"""snapshotter prune on both backends: exact rows kept, exit codes, dry run, idempotence, crash and
rerun, bad input, the lock, and the safety rule (a nightly after a prune recreates nothing)."""

from __future__ import annotations

import json
import uuid
from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from snapshotter.core import retention
from snapshotter.core.calendar import trading_days_between
from snapshotter.data import db, schema
from snapshotter.data.locks import run_lock
from snapshotter.errors import MaxRuntimeReached, UsageError
from snapshotter.jobs import prune as prune_job
from snapshotter.jobs import snapshots as job
from snapshotter.ops.signals import StopFlag
from tests.conftest import invoke, scratch_database, table_rows
from tests.factories import NOW, D, add_cash, add_close, add_closes, add_lot, add_portfolio, crash_on_call, snapshot_dates, snapshots

AT = ("--now", "2026-12-07T12:00:00Z")  # NOW: effective trading date 2026-12-04
PRUNE_1Y = ("prune", "--keep-daily", "1y", "--then", "monthly")
A, B, C = (uuid.UUID(int=i) for i in (1, 2, 3))  # walked in this order
CUTOFF = D("2025-12-04")  # 2026-12-04 - 1y; the nightly window (365 days) starts 2025-12-05
NO_CLOSE = {D("2025-04-15"), D("2025-05-30")}  # no close at all: nobody has a snapshot those days
BBB_LATE = (D("2025-06-05"), D("2025-07-31"), D("2026-03-02"))  # B's BBB lot is partial on these days until the closes arrive
PRICED = [d for d in trading_days_between(D("2025-01-02"), D("2026-12-04")) if d not in NO_CLOSE]
DAILY = [d for d in PRICED if d >= CUTOFF]
# Each portfolio's last snapshot of each month before the cutoff: May's is the 29th (no close on the 30th);
# C's last is 2025-06-17; December 2025's 1st-3rd go because the 31st (after the cutoff) is kept.
MONTH_ENDS = {
    A: ["2025-01-31", "2025-02-28", "2025-03-31", "2025-04-30", "2025-05-29", "2025-06-30", "2025-07-31", "2025-08-29",
        "2025-09-30", "2025-10-31", "2025-11-28"],
    B: ["2025-03-31", "2025-04-30", "2025-05-29", "2025-06-30", "2025-07-31", "2025-08-29", "2025-09-30", "2025-10-31",
        "2025-11-28"],
    C: ["2025-02-28", "2025-03-31", "2025-04-30", "2025-05-29", "2025-06-17"],
}
EXPECTED = {
    A: MONTH_ENDS[A] + [d.isoformat() for d in DAILY],
    B: MONTH_ENDS[B] + [d.isoformat() for d in DAILY],
    C: MONTH_ENDS[C],
}

brt = schema.batch_run_tracking


def keys(engine) -> dict:
    return {pid: snapshot_dates(engine, pid) for pid in (A, B, C)}


def by_key(engine) -> dict:
    return {(r["portfolio_id"], r["snapshot_date"]): r for r in snapshots(engine)}


def prune_runs(engine) -> list[dict]:
    return [r for r in table_rows(engine, brt, order_by=[brt.c.id]) if r["batch_type"] == "prune"]


def oracle(before: dict) -> dict:
    """The rule, independently: before the cutoff each portfolio keeps its newest date of each month."""
    out = {}
    for pid, dates in before.items():
        last = {}
        for d in dates:
            last[d[:7]] = max(last.get(d[:7], d), d)
        out[pid] = [d for d in dates if d >= CUTOFF.isoformat() or d == last[d[:7]]]
    return out


@pytest.fixture
def history(engine):
    """Two years of daily snapshots: A from 2025-01-02, B from 2025-03-10 (AAA and BBB), C from
    2025-02-03 to 2025-06-17 (its lot closed: no longer active, backfilled)."""
    with engine.begin() as c:
        add_portfolio(c, "a", pid=A)
        add_lot(c, A, "AAA", "10", "100", "2025-01-02")
        add_cash(c, A, "2025-01-02", "500")
        add_portfolio(c, "b", pid=B)
        add_lot(c, B, "AAA", "5", "100", "2025-03-10")
        add_lot(c, B, "BBB", "3", "50", "2025-03-10")
        add_portfolio(c, "c", pid=C)
        add_lot(c, C, "AAA", "4", "100", "2025-02-03", exit_date="2025-06-18")
        add_closes(c, "AAA", {d: Decimal(100 + i % 50) for i, d in enumerate(PRICED)})
        add_closes(c, "BBB", {d: Decimal(50 + i % 20) for i, d in enumerate(PRICED) if d >= D("2025-03-10") and d not in BBB_LATE})
    wide = dict(progress=False, max_backfill_days=800)
    assert job.portfolio_refresh(engine, None, job.Options(wait_for_batch=False, **wide), now=NOW).exit_code == 0
    assert job.backfill(engine, str(C), D("2025-02-03"), D("2025-06-17"), opts=job.Options(**wide), now=NOW).exit_code == 0
    before = keys(engine)
    assert before[A][0] == "2025-01-02" and before[B][0] == "2025-03-10" and before[C][-1] == "2025-06-17"
    assert len(before[A]) == len(PRICED)
    return before


# --- the rows ---------------------------------------------------------------------------------


def test_prune_keeps_each_month_end_before_the_cutoff_and_every_day_after(db_url, engine, history):
    rows_before = by_key(engine)
    r = invoke(*AT, *PRUNE_1Y, "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert keys(engine) == EXPECTED == oracle(history)
    kept = by_key(engine)
    assert all(kept[k] == rows_before[k] for k in kept)  # the kept rows untouched: values, ids, updated_at
    deleted = sum(map(len, history.values())) - sum(map(len, EXPECTED.values()))
    summary = json.loads(r.stdout)
    assert {k: summary[k] for k in ("exit_code", "dry_run", "keep_daily", "then", "target_date", "cutoff", "window_start",
                                    "max_backfill_days", "snapshots_deleted", "portfolios_pruned", "months_kept",
                                    "oldest_pruned_date", "newest_pruned_date")} == {
        "exit_code": 0, "dry_run": False, "keep_daily": "1y", "then": "monthly", "target_date": "2026-12-04",
        "cutoff": "2025-12-04", "window_start": "2025-12-05", "max_backfill_days": 365, "snapshots_deleted": deleted,
        "portfolios_pruned": 3, "months_kept": 11 + 9 + 5, "oldest_pruned_date": "2025-01-02", "newest_pruned_date": "2025-12-03",
    }
    (run,) = prune_runs(engine)
    assert (run["run_id"], run["status"], run["target_date"]) == (summary["run_id"], "completed", D("2026-12-04"))
    assert run["stats"]["snapshots_deleted"] == deleted and run["stats"]["cutoff"] == "2025-12-04"


def test_the_console_line_and_a_second_identical_prune_deletes_nothing(db_url, engine, history, backend):
    first = invoke(*AT, *PRUNE_1Y, db_url=db_url)
    assert first.returncode == 0, first.stderr
    deleted = sum(map(len, history.values())) - sum(map(len, EXPECTED.values()))
    (run,) = prune_runs(engine)
    compacted = (  # PostgreSQL: the 11 months wholly before the cutoff (2025-01..11) rewritten compact
        f"11 month partitions rewritten compact ({run['stats']['compacted_mb_before']} MB -> {run['stats']['compacted_mb_after']} MB), "
        if backend == "postgresql" else "")
    assert first.stdout.splitlines() == [
        f"prune 2026-12-04 --keep-daily 1y --then monthly: cutoff 2025-12-04, {deleted} snapshots deleted from 3 portfolios "
        f"(2025-01-02..2025-12-03), 25 month-end snapshots kept before the cutoff, {compacted}{first.stdout.split(', ')[-1].strip()}"
    ]
    rows = by_key(engine)
    again = invoke(*AT, *PRUNE_1Y, "--json", db_url=db_url)
    assert again.returncode == 0, again.stderr
    s = json.loads(again.stdout)
    assert (s["snapshots_deleted"], s["portfolios_pruned"], s["months_kept"], s["oldest_pruned_date"], s["partitions_compacted"]) == (
        0, 0, 25, None, 0)  # nothing thinned, every old month already compacted
    assert by_key(engine) == rows
    assert [r["status"] for r in prune_runs(engine)] == ["completed", "completed"]


def test_dry_run_counts_what_the_run_deletes_and_changes_nothing(db_url, engine, history):
    rows, runs = by_key(engine), table_rows(engine, brt)
    dry = invoke(*AT, *PRUNE_1Y, "--dry-run", "--json", db_url=db_url)
    assert dry.returncode == 0, dry.stderr
    assert by_key(engine) == rows and table_rows(engine, brt) == runs  # no row deleted, no tracking row
    line = invoke(*AT, *PRUNE_1Y, "--dry-run", db_url=db_url)
    assert line.stdout.startswith("dry run: prune 2026-12-04 --keep-daily 1y --then monthly: cutoff 2025-12-04, ")
    assert " snapshots would be deleted from 3 portfolios (2025-01-02..2025-12-03), " in line.stdout
    real = invoke(*AT, *PRUNE_1Y, "--json", db_url=db_url)
    d, r = json.loads(dry.stdout), json.loads(real.stdout)
    assert d["dry_run"] is True and d["run_id"] is None
    same = ("snapshots_deleted", "portfolios_pruned", "months_kept", "cutoff", "oldest_pruned_date", "newest_pruned_date")
    assert {k: d[k] for k in same} == {k: r[k] for k in same}
    assert d["snapshots_deleted"] == sum(map(len, history.values())) - sum(map(len, EXPECTED.values()))


def test_a_crash_between_chunks_keeps_the_pruned_chunks_and_the_rerun_finishes(engine, history, monkeypatch):
    opts = prune_job.PruneOptions(keep=retention.Horizon(1, "y"), chunk_size=1)  # one portfolio per chunk: A, B, C
    crash_on_call(monkeypatch, "_prune_chunk", 2, module=prune_job)
    with pytest.raises(KeyboardInterrupt):
        prune_job.prune(engine, opts, now=NOW)
    monkeypatch.undo()
    assert keys(engine) == {A: EXPECTED[A], B: history[B], C: history[C]}  # A's chunk committed, B's never ran
    assert [r["status"] for r in prune_runs(engine)] == ["failed"]
    r = prune_job.prune(engine, opts, now=NOW)
    assert keys(engine) == EXPECTED
    assert (r.stats["portfolios_pruned"], r.stats["chunks"], r.stats["months_kept"]) == (2, 3, 25)
    assert r.stats["snapshots_deleted"] == sum(len(history[p]) - len(EXPECTED[p]) for p in (B, C))
    assert [x["status"] for x in prune_runs(engine)] == ["failed", "completed"]


def test_a_stop_between_chunks_marks_the_run_interrupted_and_the_rerun_finishes(engine, history, monkeypatch):
    """--max-runtime (or SIGTERM) sets the stop flag: the chunk in flight commits, the next one never starts."""
    flag = StopFlag()
    original = prune_job._prune_chunk

    def then_expire(*a, **kw):
        out = original(*a, **kw)
        flag.expire("1s")
        return out

    monkeypatch.setattr(prune_job, "_prune_chunk", then_expire)
    opts = prune_job.PruneOptions(keep=retention.Horizon(1, "y"), chunk_size=1)
    with pytest.raises(MaxRuntimeReached):
        prune_job.prune(engine, opts, now=NOW, stop=flag)
    assert keys(engine) == {A: EXPECTED[A], B: history[B], C: history[C]}
    (run,) = prune_runs(engine)
    assert (run["status"], run["error"], run["stats"]["portfolios_pruned"]) == ("interrupted", "stopped after --max-runtime 1s", 1)
    monkeypatch.undo()
    prune_job.prune(engine, opts, now=NOW)
    assert keys(engine) == EXPECTED


# --- safety: nothing recreates a pruned day but an explicit request ----------------------------


def test_a_nightly_refresh_recompute_and_heal_after_a_prune_recreate_nothing(db_url, engine, history):
    assert invoke(*AT, *PRUNE_1Y, db_url=db_url).returncode == 0
    pruned = by_key(engine)
    assert keys(engine) == EXPECTED
    window_start = D("2025-12-05")
    with engine.begin() as c:  # BBB's late closes: a pruned day, a kept month-end (partial) and a window day (partial)
        for day in BBB_LATE:
            add_close(c, "BBB", day, "60")

    r = invoke(*AT, "portfolio-refresh", "--no-wait", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["snapshots_created"], s["snapshots_created_by_invalidation"], s["days_backfilled"]) == (0, 0, 0)
    assert s["portfolios_invalidated"] == 1 and s["invalidations_before_window"] == 1  # BBB from 2025-07-31, for B
    assert keys(engine) == EXPECTED
    after = by_key(engine)
    assert {k: v for k, v in after.items() if k[1] < window_start} == {k: v for k, v in pruned.items() if k[1] < window_start}
    assert after[(B, D("2025-07-31"))]["is_partial"] is True  # before the window: left as it was
    assert after[(B, D("2026-03-02"))]["is_partial"] is False  # in the window: healed by the recompute

    for args in (("recompute", "--json"), ("refresh", "--date", "2026-03-02", "--force", "--json")):
        r = invoke(*AT, *args, db_url=db_url)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["snapshots_created"] == 0
        assert keys(engine) == EXPECTED

    # the next night: the window moved on, one new day each for the active portfolios, nothing else
    with engine.begin() as c:
        add_close(c, "AAA", "2026-12-07", "101")
        add_close(c, "BBB", "2026-12-07", "51")
    r = invoke("--now", "2026-12-08T12:00:00Z", "portfolio-refresh", "--no-wait", "--json", db_url=db_url)
    assert r.returncode == 0 and json.loads(r.stdout)["snapshots_created"] == 2, r.stderr
    assert keys(engine) == {A: EXPECTED[A] + ["2026-12-07"], B: EXPECTED[B] + ["2026-12-07"], C: EXPECTED[C]}


def test_an_explicit_backfill_or_refresh_over_pruned_days_recreates_them(db_url, engine, history):
    """The operator's requests (README "Retention (prune)"): they name the days, so they value them again."""
    assert invoke(*AT, *PRUNE_1Y, db_url=db_url).returncode == 0
    r = invoke(*AT, "backfill", "--portfolio", str(A), "--from", "2025-03-03", "--to", "2025-03-07", "--json", db_url=db_url)
    assert r.returncode == 0 and json.loads(r.stdout)["snapshots_created"] == 5, r.stderr
    week = ["2025-03-03", "2025-03-04", "2025-03-05", "2025-03-06", "2025-03-07"]
    assert keys(engine) == {A: sorted(EXPECTED[A] + week), B: EXPECTED[B], C: EXPECTED[C]}
    r = invoke(*AT, "refresh", "--date", "2025-03-12", "--json", db_url=db_url)  # every portfolio active that day
    assert r.returncode == 0 and json.loads(r.stdout)["snapshots_created"] == 3, r.stderr
    assert keys(engine) == {A: sorted(EXPECTED[A] + week + ["2025-03-12"]), B: sorted(EXPECTED[B] + ["2025-03-12"]),
                            C: sorted(EXPECTED[C] + ["2025-03-12"])}
    again = json.loads(invoke(*AT, *PRUNE_1Y, "--json", db_url=db_url).stdout)  # the next prune thins them again
    assert (again["snapshots_deleted"], keys(engine)) == (5 + 3, EXPECTED)


def test_a_smaller_window_allows_a_shorter_horizon_when_every_job_uses_it(db_url, engine, history):
    """SNAPSHOTTER_MAX_BACKFILL_DAYS is the one setting the nightly and the prune share."""
    env = {"SNAPSHOTTER_MAX_BACKFILL_DAYS": "150"}
    assert invoke(*AT, "prune", "--keep-daily", "6m", "--then", "monthly", db_url=db_url).returncode == 64  # 365 by default
    r = invoke(*AT, "prune", "--keep-daily", "6m", "--then", "monthly", "--json", db_url=db_url, env=env)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["cutoff"], s["window_start"], s["max_backfill_days"]) == ("2026-06-04", "2026-07-08", 150)
    pruned = keys(engine)
    assert pruned[A][11:18] == ["2025-12-31", "2026-01-30", "2026-02-27", "2026-03-31", "2026-04-30", "2026-05-29",
                              "2026-06-04"]  # then daily
    r = invoke(*AT, "portfolio-refresh", "--no-wait", "--json", db_url=db_url, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["snapshots_created"] == 0, r.stderr
    assert keys(engine) == pruned


# --- refusals: one line, its exit code, nothing changed ------------------------------------------


@pytest.mark.parametrize("args,env,code,says", [
    (("--keep-daily", "0", "--then", "monthly"), {}, 64, "'0' keeps nothing"),
    (("--keep-daily", "abc", "--then", "monthly"), {}, 64, "'abc' is not a horizon"),
    (("--keep-daily", "12", "--then", "monthly"), {}, 64, "'12' has no unit"),
    (("--keep-daily", "101y", "--then", "monthly"), {}, 64, "longer than 100 years"),
    (("--keep-daily", "2y", "--then", "weekly"), {}, 64, "'weekly' is not one of 'monthly'"),
    (("--keep-daily", "2y"), {}, 64, "Missing option '--then'"),
    (("--then", "monthly"), {}, 64, "Missing option '--keep-daily'"),
    (("--keep-daily", "6m", "--then", "monthly"), {}, 64,
     "--keep-daily 6m reaches into the nightly backfill window: its cutoff 2026-06-04 is after the window's first day "
     "2025-12-05 (--max-backfill-days 365)"),
    (("--keep-daily", "363d", "--then", "monthly"), {}, 64, "keep at least 364d"),
    (("--keep-daily", "1y", "--then", "monthly", "--max-backfill-days", "400"), {}, 64, "reaches into the nightly backfill window"),
    (("--keep-daily", "1y", "--then", "monthly"), {"SNAPSHOTTER_MAX_BACKFILL_DAYS": "400"}, 64, "(--max-backfill-days 400)"),
    (("--keep-daily", "1y", "--then", "monthly"), {"SNAPSHOTTER_MAX_BACKFILL_DAYS": "a year"}, 78,
     "SNAPSHOTTER_MAX_BACKFILL_DAYS must be a whole number of calendar days from 1, got 'a year'"),
], ids=["zero", "abc", "no-unit", "too-long", "weekly", "no-then", "no-keep", "inside-window", "a-day-short", "wider-window",
        "wider-window-env", "bad-env"])
def test_bad_input_is_one_line_its_code_and_changes_nothing(db_url, engine, small_history, args, env, code, says):
    rows, runs = by_key(engine), table_rows(engine, brt)
    r = invoke(*AT, "prune", *args, db_url=db_url, env=env)
    lines = [line for line in r.stderr.splitlines() if line.startswith("snapshotter:")]
    assert r.returncode == code, r.stderr
    assert len(lines) == 1 and says in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout and r.stdout == ""
    assert by_key(engine) == rows and table_rows(engine, brt) == runs


def test_a_held_lock_is_75_and_changes_nothing(db_url, engine, small_history):
    rows, runs = by_key(engine), table_rows(engine, brt)
    with run_lock(engine):  # the snapshot writers' lock: a refresh in progress
        r = invoke(*AT, *PRUNE_1Y, db_url=db_url)
    assert r.returncode == 75
    assert [line for line in r.stderr.splitlines() if line.startswith("snapshotter:")] == [
        "snapshotter: error: another run holds the lock 'snapshotter.portfolio_snapshots'; rerun later or pass --wait-for-lock"
    ]
    assert by_key(engine) == rows and table_rows(engine, brt) == runs


@pytest.fixture
def small_history(engine):
    """A's snapshots on the priced days of January 2025 and of 2026-11-30..2026-12-04: something to prune."""
    days = [d for d in PRICED if d < D("2025-02-01") or d >= D("2026-11-30")]
    with engine.begin() as c:
        add_portfolio(c, "a", pid=A)
        add_lot(c, A, "AAA", "10", "100", "2025-01-02")
        add_closes(c, "AAA", {d: Decimal(100) for d in days})
    job.portfolio_refresh(engine, None, job.Options(progress=False, wait_for_batch=False, max_backfill_days=800), now=NOW)
    assert len(snapshots(engine)) == len(days)


def test_status_lists_the_prune_apart_and_check_still_sees_the_newest_snapshot(db_url, engine, small_history):
    assert invoke(*AT, *PRUNE_1Y, db_url=db_url).returncode == 0
    assert snapshot_dates(engine, A) == ["2025-01-31", "2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
    report = json.loads(invoke(*AT, "status", "--json", db_url=db_url).stdout)
    (run,) = report["last_runs"]["prune"]
    assert run["stats"] == {"keep_daily": "1y", "then": "monthly", "cutoff": "2025-12-04", "snapshots_deleted": 19,
                            "portfolios_pruned": 1, "months_kept": 1}
    assert [r["status"] for r in report["last_runs"]["portfolio_refresh"]] == ["completed"]
    assert report["newest_snapshot_date"] == "2026-12-04"
    r = invoke(*AT, "check", "--max-lag", "0", db_url=db_url)
    assert (r.returncode, r.stdout.split(":")[0]) == (0, "ok")


def test_nothing_before_the_cutoff_is_a_completed_run_that_deletes_nothing(db_url, engine):
    r = invoke(*AT, *PRUNE_1Y, "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["snapshots_deleted"], s["chunks"], s["exit_code"]) == (0, 0, 0)
    assert [x["status"] for x in prune_runs(engine)] == ["completed"]


# --- a partitioned portfolio_snapshots (PostgreSQL) ---------------------------------------------


def test_the_delete_works_through_a_table_partitioned_by_month(pg_server_url):
    """On PostgreSQL portfolio_snapshots is partitioned by month (migration 0008): each old month's
    partition keeps its month-end snapshot."""
    admin = sa.create_engine(sa.make_url(pg_server_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with scratch_database(admin, "snapshotter_prune_part") as url:
            eng = db.connect(url)
            try:
                db.upgrade(eng)
                with eng.begin() as c:
                    add_portfolio(c, "a", pid=A)
                    add_lot(c, A, "AAA", "10", "100", "2025-01-02")
                    add_closes(c, "AAA", {d: Decimal(100 + i % 50) for i, d in enumerate(PRICED)})
                job.portfolio_refresh(eng, None, job.Options(progress=False, wait_for_batch=False, max_backfill_days=800), now=NOW)
                assert len(snapshot_dates(eng, A)) == len(PRICED)
                r = prune_job.prune(eng, prune_job.PruneOptions(keep=retention.Horizon(1, "y")), now=NOW)
                assert snapshot_dates(eng, A) == EXPECTED[A]
                assert r.stats["snapshots_deleted"] == len(PRICED) - len(EXPECTED[A])
                with eng.connect() as c:
                    kind = c.execute(sa.text("SELECT relkind FROM pg_class WHERE relname = 'portfolio_snapshots'")).scalar_one()
                    in_may = c.execute(sa.text("SELECT snapshot_date FROM portfolio_snapshots_2025_05")).scalars().all()
                assert kind == "p" and in_may == [D("2025-05-29")]
            finally:
                eng.dispose()
    finally:
        admin.dispose()


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite deletes in place: no partitions
def test_postgresql_rewrites_the_thinned_old_months_compact_and_a_crash_between_them_is_finished_by_the_rerun(
        engine, backend, monkeypatch):
    """The deleted rows' space comes back: each month wholly before the cutoff that the prune thinned
    is rewritten with its live rows (migration 0009); a crash between two months leaves the months
    of the failed run to the rerun (which deletes nothing more), and a third prune rewrites nothing."""
    pids = [uuid.UUID(int=100 + i) for i in range(40)]
    with engine.begin() as c:
        for pid in pids:
            add_portfolio(c, "p", pid=pid)
            add_lot(c, pid, "AAA", "10", "100", "2025-01-02")
        add_closes(c, "AAA", {d: Decimal(100 + i % 50) for i, d in enumerate(PRICED)})
    job.portfolio_refresh(engine, None, job.Options(progress=False, wait_for_batch=False, max_backfill_days=800), now=NOW)

    def state():
        with engine.connect() as c:
            return {m: c.execute(sa.text(
                "SELECT pg_relation_filenode(to_regclass(:p)), pg_relation_size(to_regclass(:p)), "
                "(SELECT count(*) FROM portfolio_snapshots "
                "WHERE snapshot_date >= :a AND snapshot_date < :b)"),
                {"p": f"portfolio_snapshots_{m}", "a": D(f"{m.replace('_', '-')}-01"),
                 "b": D(f"{m.replace('_', '-')}-01").replace(day=28) + (D("2025-01-05") - D("2025-01-01"))}).one()
                for m in ("2025_03", "2025_05", "2026_03")}

    before = state()
    crash_on_call(monkeypatch, "compact_month", 2, module=prune_job.partitions)
    with pytest.raises(KeyboardInterrupt):
        prune_job.prune(engine, prune_job.PruneOptions(keep=retention.Horizon(1, "y")), now=NOW)
    monkeypatch.undo()
    crashed = state()
    # every chunk's delete committed; January compacted, then the crash on February
    assert crashed["2025_03"][0] == before["2025_03"][0] and crashed["2025_03"][2] == 40
    r = prune_job.prune(engine, prune_job.PruneOptions(keep=retention.Horizon(1, "y")), now=NOW)
    # nothing left to delete; the failed run's months, January to November, rewritten (January again)
    assert (r.stats["snapshots_deleted"], r.stats["partitions_compacted"], r.stats["compact_from"][:7], r.stats["compact_to"][:7]) == (
        0, 11, "2025-01", "2025-12")
    after = state()
    for m in ("2025_03", "2025_05"):  # old months: rewritten, marked, a page or two instead of ~15
        filenode, size, rows = after[m]
        assert filenode != before[m][0] and rows == 40
        assert size * 4 < before[m][1], (m, size, before[m][1])
    assert after["2026_03"] == before["2026_03"]  # after the cutoff: daily, untouched
    again = prune_job.prune(engine, prune_job.PruneOptions(keep=retention.Horizon(1, "y")), now=NOW)
    assert (again.stats["snapshots_deleted"], again.stats["partitions_compacted"]) == (0, 0) and state() == after
    with engine.connect() as c:  # still one table to the application: keys, the foreign key, the month's bounds
        assert c.execute(sa.text("SELECT count(*) FROM portfolio_snapshots WHERE snapshot_date < '2025-12-01'")).scalar_one() == 40 * 11
        fks = c.execute(sa.text("SELECT count(*) FROM pg_constraint WHERE conrelid = 'portfolio_snapshots_2025_05'::regclass "
                                "AND contype IN ('f', 'p', 'u')")).scalar_one()
        assert fks == 3


# --- the pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("today,keep,first_kept", [
    ("2026-12-04", "2y", "2024-12-04"),
    ("2026-12-04", "1y", "2025-12-04"),
    ("2024-02-29", "1y", "2023-02-28"),  # the day the earlier month lacks: its last day
    ("2026-03-31", "1m", "2026-02-28"),
    ("2026-01-15", "13m", "2024-12-15"),
    ("2026-12-04", "400d", "2025-10-30"),
])
def test_cutoff_is_calendar_arithmetic(today, keep, first_kept):
    assert retention.cutoff(D(today), retention.parse_horizon(keep)) == D(first_kept)


def test_horizons_parse_and_bad_ones_say_why():
    assert [str(retention.parse_horizon(v)) for v in ("2y", " 18M ", "400d")] == ["2y", "18m", "400d"]
    for bad, why in (("0", "keeps nothing"), ("0y", "keeps nothing"), ("abc", "not a horizon"), ("1.5y", "not a horizon"),
                     ("-1d", "not a horizon"), ("2w", "not a horizon"), ("30", "has no unit"), ("1201m", "longer than 100 years")):
        with pytest.raises(ValueError, match=why):
            retention.parse_horizon(bad)


def test_the_window_check_is_exact_at_the_boundary():
    target = D("2026-12-04")  # window (365 days): 2025-12-05 .. 2026-12-04
    assert retention.check_outside_window(D("2025-12-05"), target, 365, retention.Horizon(364, "d")) == D("2025-12-05")
    with pytest.raises(UsageError, match="keep at least 364d"):
        retention.check_outside_window(D("2025-12-06"), target, 365, retention.Horizon(363, "d"))


def test_scan_end_is_the_end_of_the_last_candidates_month():
    monthly = retention.Policy.monthly
    assert retention.scan_end(monthly, D("2025-12-04")) == D("2026-01-01")
    assert retention.scan_end(monthly, D("2025-12-01")) == D("2025-12-01")  # the last candidate is in November
    assert retention.scan_end(monthly, D("2026-01-01")) == D("2026-01-01")
