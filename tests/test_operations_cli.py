"""The jobs as an unattended cron runs them, on SQLite and PostgreSQL: graceful stop on
SIGTERM/SIGINT of a real process, runs left behind by killed processes, the exit
codes of the SPEC table not covered elsewhere (real processes), and secrets kept out
of stderr.

Signals land at a point fixed by the child's own log (its n-th ``refresh.chunk``
event, see conftest.CliProcess), never after a sleep."""

from __future__ import annotations

import json
import os
import signal
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from snapshotter.data import schema
from snapshotter.clock import utcnow
from snapshotter.core.calendar import trading_days_between
from tests.conftest import CliProcess, invoke, row_counts, run_cli, table_rows
from tests.factories import D, closes, complete_symbol_batch
from tests.fake_providers import AV_KEY, POLY_KEY, json_response, rid

DAYS = trading_days_between(D("2026-09-14"), D("2026-09-18"))
brt = schema.batch_run_tracking


def seed_portfolios(engine, n: int) -> None:
    """n portfolios of one AAA lot each, AAA priced on DAYS, the symbol batch done for 2026-09-18."""
    pids = [uuid.uuid4() for _ in range(n)]
    now = utcnow()
    with engine.begin() as c:
        c.execute(schema.portfolios.insert(), [{"id": p, "name": f"p{i:04d}"} for i, p in enumerate(pids)])
        c.execute(schema.positions.insert(), [
            {"id": uuid.uuid4(), "portfolio_id": p, "symbol": "AAA", "quantity": Decimal(i + 1), "entry_price": Decimal(10),
             "entry_date": DAYS[0]} for i, p in enumerate(pids)
        ])
        c.execute(schema.symbol_prices_daily.insert(), [
            {"symbol": "AAA", "price_date": d, "close": Decimal(11 + i), "source": "test", "fetched_at": now} for i, d in enumerate(DAYS)
        ])
        complete_symbol_batch(c, "2026-09-18")


def snapshot_count(engine) -> int:
    return row_counts(engine)["portfolio_snapshots"]


# --- graceful stop ---------------------------------------------------------------------------------


# With --chunk-size 1 each portfolio is a chunk, and the child logs `refresh.chunk` after each
# commit. Held after the 20th, the child can log only about a page (~25 lines) more before it
# blocks, and has at most --workers chunks in flight: far from the 400th.
N_PORTFOLIOS = 400
SIGNAL_AT_CHUNK = 20


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
@pytest.mark.slow  # a real process
def test_signal_stops_after_the_chunk_in_flight_and_a_rerun_completes(db_url, engine, receiver, signum, code):
    seed_portfolios(engine, N_PORTFOLIOS)
    with CliProcess("--log-level", "debug", "portfolio-refresh", "--date", "2026-09-18", "--chunk-size", "1",
                    db_url=db_url, env=receiver.env, hold_after=("refresh.chunk", SIGNAL_AT_CHUNK)) as child:
        at = child.wait_held()
        child.send_signal(signum)
        r = child.finish()
    name = signal.Signals(signum).name
    err = r.stderr
    assert r.returncode == code, err
    assert [l for l in err.splitlines() if l.startswith("snapshotter: error:")] == [f"snapshotter: error: stopped by {name}"]
    done = snapshot_count(engine)
    assert SIGNAL_AT_CHUNK * len(DAYS) <= at["created"] <= done < N_PORTFOLIOS * len(DAYS)
    assert done % len(DAYS) == 0  # whole portfolios only: chunks commit alone
    (run,) = [r for r in table_rows(engine, brt) if r["batch_type"] == "portfolio_refresh"]
    assert (run["status"], run["error"]) == ("interrupted", f"stopped by {name}")
    assert run["stats"]["snapshots_created"] == done and run["finished_at"] is not None
    suffix, body = receiver.finish()
    assert suffix == str(code) and receiver.pings[0].query == f"rid={rid(run['run_id'])}"
    assert body == {**run["stats"], "job": "portfolio-refresh", "run_id": run["run_id"], "exit_code": code,
                    "error": f"stopped by {name}", "status": "interrupted", "target_date": "2026-09-18"}
    assert receiver.alerts == [{"text": f"portfolio-refresh 2026-09-18 exited {code}: stopped by {name}\nrun_id: {rid(run['run_id'])}"}]

    r = invoke("portfolio-refresh", "--date", "2026-09-18", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["snapshots_created"] == N_PORTFOLIOS * len(DAYS) - done
    s = schema.portfolio_snapshots
    with engine.connect() as c:
        total = c.execute(sa.select(sa.func.count()).select_from(s)).scalar_one()
        pairs = c.execute(sa.select(sa.func.count()).select_from(sa.select(s.c.portfolio_id, s.c.snapshot_date).distinct().subquery())).scalar_one()
    assert total == pairs == N_PORTFOLIOS * len(DAYS)
    assert [r["status"] for r in table_rows(engine, brt, order_by=[brt.c.id]) if r["batch_type"] == "portfolio_refresh"] == [
        "interrupted", "completed",
    ]


# --- runs left behind by killed processes ----------------------------------------------------------


def add_running_row(engine, batch_type: str, heartbeat_age: timedelta, host="gone-host", pid=999999) -> str:
    run_id = uuid.uuid4().hex
    now = datetime.now(timezone.utc)
    with engine.begin() as c:
        c.execute(brt.insert().values(run_id=run_id, batch_type=batch_type, target_date=D("2026-09-18"), status="running",
                                      started_at=now - heartbeat_age - timedelta(minutes=5), heartbeat_at=now - heartbeat_age,
                                      host=host, pid=pid, stats={"symbols_fetched": 3}))
    return run_id


def row(engine, run_id: str) -> dict:
    (r,) = [x for x in table_rows(engine, brt) if x["run_id"] == run_id]
    return r


def test_stale_running_rows_never_count_as_completed_and_the_next_run_marks_them_interrupted(db_url, engine, tmp_path):
    seed_portfolios(engine, 2)
    with engine.begin() as c:
        c.execute(brt.delete())  # no completed symbol batch: only a stale running one
    stale_batch = add_running_row(engine, "symbol_batch", timedelta(minutes=11))
    stale_refresh = add_running_row(engine, "portfolio_refresh", timedelta(minutes=30))

    r = invoke("portfolio-refresh", "--date", "2026-09-18", "--wait-timeout", "1s", "--poll-interval", "0.2s", db_url=db_url)
    assert r.returncode == 75, r.stderr  # the stale `running` batch is not a completed one
    assert snapshot_count(engine) == 0
    assert row(engine, stale_batch)["status"] == "running"  # only a symbol batch cleans up symbol-batch rows
    gone = row(engine, stale_refresh)
    assert (gone["status"], gone["error"], gone["stats"]) == ("interrupted", "process died without finishing (stale heartbeat)", {"symbols_fetched": 3})
    assert gone["finished_at"] is not None

    (tmp_path / "AAA.csv").write_text("date,open,high,low,close,volume\n" + "".join(f"{d},1,1,1,{11 + i},5\n" for i, d in enumerate(DAYS)))
    r = invoke("symbol-batch", "--date", "2026-09-18", db_url=db_url, env={"SNAPSHOTTER_PRICES_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert (row(engine, stale_batch)["status"], row(engine, stale_batch)["error"]) == (
        "interrupted", "process died without finishing (stale heartbeat)")

    r = invoke("portfolio-refresh", "--date", "2026-09-18", "--wait-timeout", "5s", "--poll-interval", "0.2s", db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert snapshot_count(engine) == 2 * len(DAYS)
    assert sorted((x["batch_type"], x["status"]) for x in table_rows(engine, brt)) == [
        ("portfolio_refresh", "aborted"), ("portfolio_refresh", "completed"), ("portfolio_refresh", "interrupted"),
        ("symbol_batch", "completed"), ("symbol_batch", "interrupted"),
    ]


@pytest.mark.slow  # a real process
def test_a_killed_run_with_a_fresh_heartbeat_is_interrupted_by_the_next_run_on_the_same_host(db_url, engine):
    seed_portfolios(engine, 2)
    with engine.begin() as c:
        c.execute(brt.delete())
    with CliProcess("portfolio-refresh", "--date", "2026-09-18", "--wait-timeout", "10m", "--poll-interval", "0.2s",
                    db_url=db_url) as child:
        child.wait_for("refresh.waiting_for_symbol_batch")  # its run row exists, its lock is held
        child.kill()  # SIGKILL: no handler, no cleanup
        r = child.finish()
    assert r.returncode == -signal.SIGKILL
    (killed,) = [x for x in table_rows(engine, brt) if x["batch_type"] == "portfolio_refresh"]
    assert (killed["status"], killed["pid"]) == ("running", child.pid)
    status = json.loads(invoke("status", "--json", db_url=db_url).stdout)
    # its heartbeat is fresh, but its pid is gone on this host: the one dead-run rule flags it
    assert [(d["run_id"], d["dead"]) for d in status["dead_runs"]] == [(killed["run_id"], True)]
    with engine.begin() as c:
        complete_symbol_batch(c, "2026-09-18")
    r = invoke("portfolio-refresh", "--date", "2026-09-18", "--wait-for-lock", db_url=db_url)
    assert r.returncode == 0, r.stderr  # the lock died with the process
    assert row(engine, killed["run_id"])["status"] == "interrupted"
    assert snapshot_count(engine) == 2 * len(DAYS)


# --- exit codes not covered by the job test modules ----------------------------------------------------


@pytest.mark.slow  # a real process
def test_exit_65_when_the_provider_returns_only_unusable_data(db_url, engine, tmp_path):
    (tmp_path / "AAA.csv").write_text("day,price\n2026-09-18,12\n")  # no date/close columns
    r = run_cli("symbol-batch", "--date", "2026-09-18", "--symbols", "AAA", "--json", db_url=db_url,
                env={"SNAPSHOTTER_PRICES_DIR": str(tmp_path)})  # a real process: exit 65 as cron sees it
    assert r.returncode == 65, r.stderr
    out = json.loads(r.stdout)
    msg = "every symbol's data was unusable: 1 of 1 symbol(s) failed: AAA"
    assert (out["status"], out["symbols_failed"], out["error"]) == ("failed", ["AAA"], msg)
    assert "header must have date and close columns" in out["failures"]["AAA"]
    (run,) = table_rows(engine, brt)
    assert (run["status"], run["error"]) == ("failed", msg)
    assert row_counts(engine)["symbol_prices_daily"] == 0


BUGGY_PLUGIN = """
from snapshotter.providers.base import Provider


class BuggyProvider(Provider):
    name = "buggy"

    def daily_closes(self, symbol, start, end, *, size=None):
        raise ZeroDivisionError("division by zero in the plugin")
"""


@pytest.mark.slow  # a real process
def test_exit_70_on_an_unclassified_error_with_the_alert_and_pings(tmp_path, receiver):
    """A bug nothing classifies (a provider plugin that divides by zero): one line naming the run,
    exit 70, the traceback in the tracking row and at debug level, the alert and the /70 ping."""
    (tmp_path / "buggy_prices.py").write_text(BUGGY_PLUGIN)
    info = tmp_path / "buggy_prices-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: buggy-prices\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[snapshotter.providers]\nbuggy = buggy_prices:BuggyProvider\n")
    url = f"sqlite:///{tmp_path / 'bug.db'}"
    env = {**receiver.env, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    r = run_cli("symbol-batch", "--provider", "buggy", "--symbols", "AAA", "--date", "2026-09-18", db_url=url, env=env)  # real: 70
    assert r.returncode == 70, r.stderr
    msg = "ZeroDivisionError: division by zero in the plugin"
    rid_ = receiver.pings[0].query[len("rid="):]
    run_id = rid_  # one spelling: the canonical UUID in the row, the pings, the alert and the message
    assert [l for l in r.stderr.splitlines() if l.startswith("snapshotter:")] == [
        f"snapshotter: internal error in run {run_id}: {msg} (the traceback is logged at --log-level debug)"
    ]
    assert "Traceback" not in r.stderr  # info level: the one line only
    (run,) = table_rows(sa.create_engine(url), brt)
    assert (run["run_id"], run["status"]) == (run_id, "failed")
    first, rest = run["error"].split("\n", 1)
    assert first == msg and rest.startswith("Traceback (most recent call last):") and "buggy_prices.py" in rest
    suffix, body = receiver.finish()
    assert suffix == "70"
    assert body["exit_code"] == 70 and body["error"] == f"internal error: {msg}" and body["status"] == "failed"
    assert receiver.alerts == [{"text": f"symbol-batch 2026-09-18 exited 70: internal error: {msg}\nrun_id: {rid_}"}]
    r = run_cli("--log-level", "debug", "symbol-batch", "--provider", "buggy", "--symbols", "AAA", "--date", "2026-09-18",
                db_url=url, env=env)
    assert r.returncode == 70 and "command.traceback" in r.stderr and "ZeroDivisionError" in r.stderr


# --- secrets ------------------------------------------------------------------------------------------------


def test_secrets_never_reach_stderr_stdout_alerts_or_pings(db_url, engine, backend, av, poly, server):
    """API keys, the database password and the webhook/ping URLs set in the environment; failing runs at debug level."""
    hook, ping = "/hook/T0/B0/webhook-s3cr3t-9f8e", "/ping/ping-s3cr3t-7a6b"
    server.expect_request(hook).respond_with_data("gone", status=404)  # the alert fails: its failure is logged
    server.expect_request(ping + "/start").respond_with_data("OK")
    for code in ("1", "75", "78", "143"):
        server.expect_request(f"{ping}/{code}").respond_with_data("OK")
    url = make_url(db_url)
    if backend == "postgresql" and not url.password:  # trust auth accepts any password
        url = url.set(password="db-pw-s3cr3t-5c4d")
    password = url.password or "db-pw-s3cr3t-5c4d"
    env = {
        "ALPHAVANTAGE_API_KEY": AV_KEY, "ALPHAVANTAGE_BASE_URL": av.url, "POLYGON_API_KEY": POLY_KEY, "POLYGON_BASE_URL": poly.url,
        "SNAPSHOTTER_CALLS_PER_MINUTE": "6000", "ALERT_WEBHOOK_URL": server.url_for(hook), "HEALTHCHECK_URL": server.url_for(ping),
    }
    full_url = url.render_as_string(hide_password=False)
    av.add("A", closes("10"))
    av.quota_after = 0  # the quota message quotes the key
    poly.then("range A", json_response({"status": "NOT_AUTHORIZED", "message": f"key {POLY_KEY} not entitled"}, 403))
    runs = [
        (75, ["symbol-batch", "--provider", "alphavantage", "--symbols", "A", "--from", "2026-11-23", "--to", "2026-11-24"], full_url),
        (78, ["symbol-batch", "--provider", "polygon", "--symbols", "A,B,C,D", "--date", "2026-11-24"], full_url),
        (75, ["portfolio-refresh", "--date", "2026-11-24", "--wait-timeout", "0.2s", "--poll-interval", "0.1s"], full_url),
        (69, ["status"], f"postgresql+psycopg://app:{password}@127.0.0.1:1/nowhere"),
    ]
    seen = ""
    for code, args, database_url in runs:
        r = invoke("--log-level", "debug", "--log-format", "json", *args, db_url=database_url, env=env)
        assert r.returncode == code, r.stderr
        assert len([l for l in r.stderr.splitlines() if l.startswith("snapshotter: error:")]) == 1
        seen += r.stdout + r.stderr
    sent = "".join(req.get_data(as_text=True) + req.full_path for req, _ in server.log if req.path.startswith((hook, ping)))
    for secret in (AV_KEY, POLY_KEY, password, hook, ping, "s3cr3t"):
        assert secret not in seen, secret
    for secret in (AV_KEY, POLY_KEY, password):
        assert secret not in sent, secret
    assert '"notify.failed"' in seen and '"HTTP 404"' in seen  # the failing webhook was logged, without its URL
    assert "***" in seen  # something was redacted, not merely absent
