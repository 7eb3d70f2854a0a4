"""A run that hangs must not block every later one: --max-runtime stops a job as SIGTERM
would (exit 75, run ``interrupted``), and PostgreSQL sessions carry statement_timeout and
lock_timeout. The stop is checked on a real process; nothing here depends on timing beyond
generous deadlines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from snapshotter.config import Settings
from snapshotter.core.durations import format_duration, parse_duration
from snapshotter.data import db, schema
from snapshotter.errors import ConfigError, ExitCode, MaxRuntimeReached, Stopped, StoppedBySignal
from snapshotter.jobs.symbol_batch import run_symbol_batch
from snapshotter.ops.signals import StopFlag, max_runtime
from tests.conftest import ROOT
from tests.factories import D, add_closes, add_lot, add_portfolio

brt = schema.batch_run_tracking
HOOK = "/hook/s3cr3t-max-runtime"
PING = "/ping/s3cr3t-max-runtime"


def cli(db_url: str, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHAVANTAGE", "POLYGON", "ALERT_", "HEALTHCHECK", "SNAPSHOTTER_"))}
    full.update(DATABASE_URL=db_url, **(env or {}))
    return subprocess.run([sys.executable, "-m", "snapshotter", *args], capture_output=True, text=True, env=full,
                          timeout=timeout, cwd=ROOT)


def tracking_rows(engine) -> list[dict]:
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(sa.select(brt).order_by(brt.c.id))]


@pytest.fixture
def unready(engine):
    """One portfolio priced 2026-09-14..18, and no completed symbol batch: a refresh waits."""
    with engine.begin() as c:
        pid = add_portfolio(c, "waits")
        add_lot(c, pid, "AAA", "10", "100", "2026-09-14")
        add_closes(c, "AAA", {D(f"2026-09-{d}"): 100 + d for d in range(14, 19)})
    return pid


@pytest.fixture
def hooks(server):
    server.expect_request(HOOK, method="POST").respond_with_data("ok")
    server.expect_request(re.compile("^" + re.escape(PING) + "/"), method="POST").respond_with_data("OK")
    return server


def test_max_runtime_stops_a_refresh_waiting_for_a_batch_that_never_completes(db_url, engine, unready, hooks):
    env = {"ALERT_WEBHOOK_URL": hooks.url_for(HOOK), "HEALTHCHECK_URL": hooks.url_for(PING)}
    started = time.monotonic()
    r = cli(db_url, "portfolio-refresh", "--date", "2026-09-18", "--max-runtime", "2s", "--wait-timeout", "1h",
            "--poll-interval", "0.2s", env=env)
    elapsed = time.monotonic() - started
    assert r.returncode == 75, r.stderr
    assert elapsed < 90  # an hour's wait cut short (generous: only "not the hour")
    assert [l for l in r.stderr.splitlines() if l.startswith("snapshotter:")] == [
        "snapshotter: error: stopped after --max-runtime 2s"
    ]
    (run,) = tracking_rows(engine)
    assert (run["batch_type"], run["status"], run["error"]) == ("portfolio_refresh", "interrupted", "stopped after --max-runtime 2s")
    assert run["finished_at"] is not None and run["target_date"] == D("2026-09-18")
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(schema.portfolio_snapshots)).scalar_one() == 0
    pings = [(req.path, req.get_data()) for req, _ in hooks.log if req.path.startswith(PING)]
    assert [p for p, _ in pings] == [f"{PING}/start", f"{PING}/75"]
    body = json.loads(pings[1][1])
    assert (body["exit_code"], body["status"], body["error"]) == (75, "interrupted", "stopped after --max-runtime 2s")
    alerts = [json.loads(req.get_data())["text"] for req, _ in hooks.log if req.path == HOOK]
    assert len(alerts) == 1 and alerts[0].startswith("portfolio-refresh 2026-09-18 exited 75: stopped after --max-runtime 2s")


def test_the_environment_sets_the_max_runtime_and_the_option_wins(db_url, engine, unready):
    r = cli(db_url, "portfolio-refresh", "--date", "2026-09-18", "--wait-timeout", "1h", "--poll-interval", "0.2s",
            env={"SNAPSHOTTER_MAX_RUNTIME": "1s"})
    assert r.returncode == 75 and "stopped after --max-runtime 1s" in r.stderr, r.stderr
    r = cli(db_url, "portfolio-refresh", "--date", "2026-09-18", "--wait-timeout", "1s", "--poll-interval", "0.2s",
            "--max-runtime", "off", env={"SNAPSHOTTER_MAX_RUNTIME": "0.5s"})
    assert r.returncode == 75 and "not completed within 1s" in r.stderr, r.stderr  # the wait's own deadline, not the max
    assert [row["status"] for row in tracking_rows(engine)] == ["interrupted", "aborted"]


def test_bad_max_runtimes_are_usage_and_configuration_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for job in (["refresh", "--date", "2026-09-18"], ["recompute"], ["symbol-batch"]):
        r = cli(url, *job, "--max-runtime", "soon")
        assert r.returncode == 64 and "is not a duration" in r.stderr, job
    r = cli(url, "refresh", "--date", "2026-09-18", env={"SNAPSHOTTER_MAX_RUNTIME": "soon"})
    assert r.returncode == 78 and "snapshotter: error: SNAPSHOTTER_MAX_RUNTIME: 'soon' is not a duration" in r.stderr, r.stderr
    assert not (tmp_path / "x.db").exists()  # refused before the database was touched


def test_a_symbol_batch_past_its_max_runtime_is_interrupted_with_exit_75(engine):
    stop = StopFlag()
    stop.expire("4h")  # the timer fired before the first symbol
    with pytest.raises(MaxRuntimeReached) as info:
        run_symbol_batch(engine, Settings(), symbols="AAPL,MSFT", date_from=D("2026-11-23"), date_to=D("2026-11-24"),
                         provider="csv", now=datetime(2026, 11, 25, 12, tzinfo=timezone.utc), stop=stop)
    assert info.value.exit_code == ExitCode.TEMPFAIL == 75
    (run,) = tracking_rows(engine)
    assert (run["status"], run["error"]) == ("interrupted", "stopped after --max-runtime 4h")


# --- the pieces -------------------------------------------------------------------------------


def test_stopped_says_why_and_carries_its_exit_code():
    assert isinstance(MaxRuntimeReached("2h"), Stopped) and isinstance(StoppedBySignal(15), Stopped)
    assert (StoppedBySignal(15).exit_code, str(StoppedBySignal(15))) == (143, "stopped by SIGTERM")
    assert (StoppedBySignal(2).exit_code, str(StoppedBySignal(2))) == (130, "stopped by SIGINT")
    assert (MaxRuntimeReached("2h").exit_code, str(MaxRuntimeReached("2h"))) == (75, "stopped after --max-runtime 2h")


def test_the_first_reason_to_stop_wins_and_reset_forgets_it():
    flag = StopFlag()
    flag.check()
    flag.expire("2s")
    flag.request(15)
    with pytest.raises(MaxRuntimeReached):
        flag.check()
    flag.reset()
    flag.check()
    flag.request(2)
    flag.expire("2s")
    with pytest.raises(StoppedBySignal) as info:
        flag.sleep(10)  # wakes at once
    assert info.value.exit_code == 130 and flag.signum == 2


def test_the_timer_sets_the_flag_and_is_cancelled_when_the_run_ends_in_time():
    flag = StopFlag()
    with max_runtime(0.05, flag) as timer:
        assert timer.daemon
        with pytest.raises(MaxRuntimeReached, match="--max-runtime 0.05s"):
            flag.sleep(30)
    flag = StopFlag()
    with max_runtime(30, flag) as timer:
        pass
    assert timer.finished.is_set() and not flag.requested  # cancelled: nothing left behind
    with max_runtime(0, flag) as timer:
        assert timer is None


@pytest.mark.parametrize("seconds, text", [(7200, "2h"), (5400, "1h30m"), (14400, "4h"), (2, "2s"), (90, "1m30s"),
                                           (3661, "1h1m1s"), (1.5, "1.5s"), (0.2, "0.2s")])
def test_durations_print_as_they_are_written(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


# --- PostgreSQL session limits -----------------------------------------------------------------


def test_session_options_keep_what_the_url_already_says():
    assert db.session_options(1800, 60) == "-c statement_timeout=1800000 -c lock_timeout=60000"
    assert db.session_options(None, 60, "-c search_path=app") == "-c lock_timeout=60000 -c search_path=app"
    assert db.session_options(None, None) is None


def test_settings_read_the_session_limits():
    assert Settings().pg_timeouts() == {"statement_timeout_s": 1800.0, "lock_timeout_s": 60.0}
    s = Settings.from_env({"SNAPSHOTTER_PG_STATEMENT_TIMEOUT": "2h", "SNAPSHOTTER_PG_LOCK_TIMEOUT": "off"})
    assert s.pg_timeouts() == {"statement_timeout_s": 7200.0, "lock_timeout_s": None}
    with pytest.raises(ConfigError, match="SNAPSHOTTER_PG_LOCK_TIMEOUT"):
        Settings.from_env({"SNAPSHOTTER_PG_LOCK_TIMEOUT": "a while"}).pg_timeouts()


def test_postgresql_sessions_carry_statement_and_lock_timeouts(pg_server_url):
    eng = db.connect(pg_server_url)
    try:
        with eng.connect() as c:
            assert c.execute(sa.text("SHOW statement_timeout")).scalar() == "30min"
            assert c.execute(sa.text("SHOW lock_timeout")).scalar() == "1min"
    finally:
        eng.dispose()
    eng = db.connect(pg_server_url, statement_timeout_s=0.2, lock_timeout_s=None)
    try:
        with eng.connect() as c:
            assert c.execute(sa.text("SHOW lock_timeout")).scalar() == "0"  # the server's default
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                c.execute(sa.text("SELECT pg_sleep(5)"))
    finally:
        eng.dispose()


def test_a_lock_waited_for_too_long_fails_instead_of_queueing(pg_server_url):
    table = f"lock_probe_{uuid.uuid4().hex[:8]}"
    holder = db.connect(pg_server_url)
    waiter = db.connect(pg_server_url, lock_timeout_s=0.2)
    try:
        with holder.begin() as h:
            h.execute(sa.text(f"CREATE TABLE {table} (x int)"))
        with holder.connect() as h:
            h.execute(sa.text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            with waiter.connect() as w, pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                w.execute(sa.text(f"SELECT * FROM {table}"))
            h.rollback()
    finally:
        with holder.begin() as h:
            h.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        holder.dispose()
        waiter.dispose()
