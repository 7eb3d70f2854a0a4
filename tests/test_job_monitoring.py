"""Pings and alerts of the job commands, end to end: the `snapshotter` command (in-process,
conftest.invoke) against a local webhook and ping receiver (pytest-httpserver), exact
bodies, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from snapshotter.data import schema
from tests.conftest import invoke, row_counts, table_rows
from tests.factories import D, add_close, add_lot, add_portfolio, closes, complete_symbol_batch
from tests.fake_providers import AV_KEY, PING_PATH, rid

WAIT_MSG = (
    "symbol batch for 2026-09-18 not completed within 1s; portfolio refresh aborted, nothing written; "
    "the next run backfills the day"
)


def the_run(engine, batch_type: str) -> dict:
    rows = [r for r in table_rows(engine, schema.batch_run_tracking) if r["batch_type"] == batch_type]
    assert len(rows) == 1, rows
    return rows[0]


def stdout_json(r) -> dict:
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_successful_refresh_pings_start_and_0_with_the_summary_and_sends_no_alert(db_url, engine, one_week_portfolio, receiver):
    with engine.begin() as c:
        complete_symbol_batch(c, "2026-09-18")
    r = invoke("portfolio-refresh", "--date", "2026-09-18", "--json", db_url=db_url, env=receiver.env)
    assert r.returncode == 0, r.stderr
    out = stdout_json(r)
    run = the_run(engine, "portfolio_refresh")
    assert (run["status"], out["run_id"], out["snapshots_created"]) == ("completed", run["run_id"], 5)
    suffix, body = receiver.finish()
    assert suffix == "0" and receiver.pings[0].query == f"rid={rid(run['run_id'])}"
    expected = {k: v for k, v in out.items() if k != "dry_run"}
    assert body == {**expected, "job": "portfolio-refresh", "error": None}
    assert body["portfolios_active"] == 1 and body["target_date"] == "2026-09-18"
    assert receiver.alerts == []
    assert "snapshotter: error" not in r.stderr


def test_wait_timeout_exits_75_pings_75_and_alerts_once(db_url, engine, one_week_portfolio, receiver):
    r = invoke("portfolio-refresh", "--date", "2026-09-18", "--wait-timeout", "1s", "--poll-interval", "0.2s",
                db_url=db_url, env=receiver.env)
    assert r.returncode == 75, r.stderr
    run = the_run(engine, "portfolio_refresh")
    assert (run["status"], run["error"]) == ("aborted", WAIT_MSG)
    suffix, body = receiver.finish()
    assert suffix == "75" and receiver.pings[0].query == f"rid={rid(run['run_id'])}"
    assert body == {
        "job": "portfolio-refresh", "run_id": run["run_id"], "exit_code": 75, "error": WAIT_MSG, "status": "aborted",
        "target_date": "2026-09-18", "mode": "gaps", "duration_s": run["stats"]["duration_s"],
    }
    assert receiver.alerts == [{"text": f"portfolio-refresh 2026-09-18 exited 75: {WAIT_MSG}\nrun_id: {rid(run['run_id'])}"}]
    assert row_counts(engine)["portfolio_snapshots"] == 0


def add_overflowing_portfolio(engine):
    """10^17 shares x 10^13 overflows NUMERIC(28, 6): this portfolio's chunk fails on both backends."""
    with engine.begin() as c:
        bad = add_portfolio(c, "overflow")
        add_lot(c, bad, "BIG", "100000000000000000", "1", "2026-09-18")
        add_close(c, "BIG", "2026-09-18", "10000000000000")
    return bad


def test_failing_portfolio_over_the_ratio_exits_1_and_alerts_with_the_ratio(db_url, engine, one_week_portfolio, receiver):
    bad = add_overflowing_portfolio(engine)
    r = invoke("portfolio-refresh", "--date", "2026-09-18", "--no-wait", "--json", db_url=db_url, env=receiver.env)
    assert r.returncode == 1, r.stderr
    out = stdout_json(r)
    assert [f["portfolio_id"] for f in out["failed_portfolios"]] == [str(bad)]
    run = the_run(engine, "portfolio_refresh")
    assert run["status"] == "failed"
    suffix, body = receiver.finish()
    assert suffix == "1"
    assert body == {**{k: v for k, v in out.items() if k != "dry_run"}, "job": "portfolio-refresh", "error": "1 of 2 portfolios failed"}
    assert receiver.alerts == [{
        "text": "portfolio-refresh 2026-09-18 exited 1: portfolio refresh for 2026-09-18: 1 of 2 portfolios failed "
        f"(50%, threshold 10%)\nrun_id: {rid(run['run_id'])}"
    }]
    errors = [l for l in r.stderr.splitlines() if l.startswith("snapshotter: error:")]
    assert errors == ["snapshotter: error: 1 of 2 portfolios failed"]


def test_failures_under_the_ratio_exit_1_and_ping_1_without_an_alert(db_url, engine, one_week_portfolio, receiver):
    add_overflowing_portfolio(engine)
    r = invoke("portfolio-refresh", "--date", "2026-09-18", "--no-wait", "--alert-failure-ratio", "0.5",
                db_url=db_url, env=receiver.env)
    assert r.returncode == 1, r.stderr
    suffix, body = receiver.finish()
    assert (suffix, body["exit_code"], body["portfolios_failed"], body["error"]) == ("1", 1, 1, "1 of 2 portfolios failed")
    assert receiver.alerts == []


def test_symbol_batch_quota_exhausted_exits_75_alerts_and_pings_75(db_url, engine, av, receiver):
    for s in ("A", "B", "C"):
        av.add(s, closes("10"))
    av.quota_after = 1
    env = {**receiver.env, "ALPHAVANTAGE_API_KEY": AV_KEY, "ALPHAVANTAGE_BASE_URL": av.url, "SNAPSHOTTER_CALLS_PER_MINUTE": "6000"}
    r = invoke("symbol-batch", "--provider", "alphavantage", "--symbols", "A,B,C", "--from", "2026-11-23", "--to", "2026-11-24",
                "--json", db_url=db_url, env=env)
    assert r.returncode == 75, r.stderr
    out = stdout_json(r)
    run = the_run(engine, "symbol_batch")
    assert (run["status"], run["run_id"], out["symbols_deferred"]) == ("aborted", out["run_id"], ["B", "C"])
    assert out["error"].startswith("daily quota exhausted, 2 symbol(s) deferred to the next run: ") and AV_KEY not in out["error"]
    suffix, body = receiver.finish()
    assert suffix == "75" and receiver.pings[0].query == f"rid={rid(run['run_id'])}"
    assert body == {**out, "job": "symbol-batch"}
    assert receiver.alerts == [{"text": f"symbol-batch 2026-11-24 exited 75: {out['error']}\nrun_id: {rid(run['run_id'])}"}]
    assert AV_KEY not in r.stdout + r.stderr + json.dumps(receiver.alerts)


def test_usage_error_inside_a_job_pings_64_and_alerts(db_url, engine, one_week_portfolio, receiver):
    counts = row_counts(engine)
    r = invoke("refresh", "--date", "2026-09-07", db_url=db_url, env=receiver.env)  # Labor Day
    assert r.returncode == 64, r.stderr
    assert row_counts(engine) == counts  # no tracking row either
    suffix, body = receiver.finish()
    rid_ = receiver.pings[0].query[len("rid="):]
    msg = "--date 2026-09-07 is not an NYSE trading day"
    assert suffix == "64"
    # the target is resolved by the job; a date it refused is named in the message, not reported as the target
    assert body == {"job": "refresh", "run_id": rid_, "exit_code": 64, "error": msg, "target_date": None}
    assert receiver.alerts == [{"text": f"refresh exited 64: {msg}\nrun_id: {rid_}"}]


def test_click_usage_errors_and_dry_runs_are_not_monitored(db_url, engine, one_week_portfolio, receiver):
    r = invoke("portfolio-refresh", "--bogus", db_url=db_url, env=receiver.env)
    assert r.returncode == 64
    r = invoke("backfill", "--portfolio", str(one_week_portfolio), "--from", "2026-09-14", "--to", "2026-09-18", "--dry-run", "--json",
                db_url=db_url, env=receiver.env)
    assert r.returncode == 0, r.stderr
    assert stdout_json(r)["snapshots_created"] == 5
    assert receiver.pings == [] and receiver.alerts == []
    assert row_counts(engine)["portfolio_snapshots"] == 0


def test_backfill_and_refresh_are_monitored_with_their_target(db_url, engine, one_week_portfolio, receiver):
    r = invoke("backfill", "--portfolio", str(one_week_portfolio), "--from", "2026-09-14", "--to", "2026-09-16", db_url=db_url, env=receiver.env)
    assert r.returncode == 0, r.stderr
    r = invoke("refresh", "--date", "2026-09-18", db_url=db_url, env=receiver.env)
    assert r.returncode == 0, r.stderr
    runs = table_rows(engine, schema.batch_run_tracking, order_by=[schema.batch_run_tracking.c.id])
    assert [(x["batch_type"], x["target_date"], x["status"]) for x in runs] == [
        ("portfolio_backfill", D("2026-09-16"), "completed"), ("portfolio_refresh", D("2026-09-18"), "completed"),
    ]
    pings = receiver.pings
    assert [p.path[len(PING_PATH):] for p in pings] == ["/start", "/0", "/start", "/0"]
    assert [p.query for p in pings] == [f"rid={rid(runs[0]['run_id'])}"] * 2 + [f"rid={rid(runs[1]['run_id'])}"] * 2
    bodies = [json.loads(p.body) for p in pings[1::2]]
    assert [(b["job"], b["target_date"], b["snapshots_created"], b["exit_code"]) for b in bodies] == [
        ("backfill", "2026-09-16", 3, 0), ("refresh", "2026-09-18", 1, 0),
    ]
    assert receiver.alerts == []


def test_an_unreachable_receiver_never_changes_the_exit_code(tmp_path, fast_notify_retries):
    env = {"ALERT_WEBHOOK_URL": "http://127.0.0.1:1/hook-s3cr3t", "HEALTHCHECK_URL": "http://127.0.0.1:1/ping-s3cr3t"}
    r = invoke("refresh", "--date", "2026-09-07", db_url=f"sqlite:///{tmp_path / 'x.db'}", env=env)
    assert r.returncode == 64
    warnings = [json.loads(l) for l in r.stderr.splitlines() if '"notify.failed"' in l]
    assert [(w["kind"], w["attempts"], w["error"]) for w in warnings] == [
        ("ping_start", 3, "ConnectError"), ("alert", 3, "ConnectError"), ("ping_finish", 3, "ConnectError"),
    ]
    assert "s3cr3t" not in r.stderr + r.stdout
