"""Last-run metrics for Prometheus users: with PUSHGATEWAY_URL a job pushes its metrics to a
Pushgateway at its end (a local receiver here), and without it nothing; a push never fails
a job nor changes its exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug import Response

from snapshotter.config import Settings
from snapshotter.ops import logs, metrics
from tests.conftest import ROOT
from tests.factories import add_cash, add_closes, add_lot, add_portfolio, complete_symbol_batch

JOB_PATH = "/metrics/job/portfolio-refresh"


def cli(db_url: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("ALPHAVANTAGE", "POLYGON", "ALERT_", "HEALTHCHECK", "SNAPSHOTTER_", "PUSHGATEWAY"))}
    full.update(DATABASE_URL=db_url, **(env or {}))
    return subprocess.run([sys.executable, "-m", "snapshotter", *args], capture_output=True, text=True, env=full,
                          timeout=120, cwd=ROOT)


def samples(body: bytes) -> dict[str, float]:
    """name -> value of every sample in a text exposition body."""
    return {s.name: s.value for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


@pytest.fixture
def week(engine):
    with engine.begin() as c:
        pid = add_portfolio(c, "week")
        add_lot(c, pid, "AAA", "10", "100", "2026-09-14")
        add_cash(c, pid, "2026-09-14", "500")
        add_closes(c, "AAA", {f"2026-09-{d}": 100 + d for d in range(14, 19)})
        complete_symbol_batch(c, "2026-09-18")
    return pid


def test_a_job_pushes_its_last_run_metrics(db_url, week, server):
    server.expect_request(JOB_PATH, method="POST").respond_with_data("", status=200)
    before = time.time()
    r = cli(db_url, "portfolio-refresh", "--date", "2026-09-18", "--json", env={"PUSHGATEWAY_URL": server.url_for("/")})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (req,) = [req for req, _ in server.log]
    assert (req.method, req.path) == ("POST", JOB_PATH)  # POST: the last success survives later failures
    assert req.headers["Content-Type"].startswith("text/plain; version=0.0.4")  # the text exposition format
    got = samples(req.get_data())
    assert set(got) == {
        "snapshotter_last_run_duration_seconds", "snapshotter_last_run_exit_code", "snapshotter_last_run_finished_timestamp_seconds",
        "snapshotter_last_run_snapshots_created", "snapshotter_last_run_symbols_failed", "snapshotter_last_success_timestamp_seconds",
    }
    assert got["snapshotter_last_run_exit_code"] == 0
    assert got["snapshotter_last_run_snapshots_created"] == out["snapshots_created"] == 5
    assert got["snapshotter_last_run_symbols_failed"] == 0
    assert 0 < got["snapshotter_last_run_duration_seconds"] < 60
    assert before <= got["snapshotter_last_run_finished_timestamp_seconds"] == got["snapshotter_last_success_timestamp_seconds"] <= time.time()
    assert "# TYPE snapshotter_last_run_exit_code gauge" in req.get_data().decode()


def test_a_failed_run_pushes_its_code_and_leaves_the_last_success_alone(db_url, engine, server):
    with engine.begin() as c:
        add_portfolio(c, "waits")  # no completed symbol batch: the wait times out, exit 75
    server.expect_request(JOB_PATH, method="POST").respond_with_data("")
    r = cli(db_url, "portfolio-refresh", "--date", "2026-09-18", "--wait-timeout", "0.3s", "--poll-interval", "0.1s",
            env={"PUSHGATEWAY_URL": server.url_for("/")})
    assert r.returncode == 75, r.stderr
    (req,) = [req for req, _ in server.log]
    got = samples(req.get_data())
    assert got["snapshotter_last_run_exit_code"] == 75
    assert "snapshotter_last_success_timestamp_seconds" not in got


def test_symbol_batch_counts_its_failed_symbols(db_url, engine, server, tmp_path):
    (tmp_path / "AAPL.csv").write_text("date,open,high,low,close,volume\n2026-11-24,1,1,1,10.5,100\n")
    server.expect_request("/metrics/job/symbol-batch", method="POST").respond_with_data("")
    r = cli(db_url, "symbol-batch", "--provider", "csv", "--symbols", "AAPL,NOPE", "--from", "2026-11-24", "--to", "2026-11-24",
            "--json", env={"PUSHGATEWAY_URL": server.url_for("/"), "SNAPSHOTTER_PRICES_DIR": str(tmp_path)})
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["symbols_failed"] == ["NOPE"]
    (req,) = [req for req, _ in server.log]
    got = samples(req.get_data())
    assert (got["snapshotter_last_run_exit_code"], got["snapshotter_last_run_symbols_failed"]) == (1, 1)


def test_without_the_url_nothing_is_pushed(db_url, week, server):
    r = cli(db_url, "portfolio-refresh", "--date", "2026-09-18")
    assert r.returncode == 0, r.stderr
    assert server.log == []
    assert metrics.push_run_metrics(Settings(), "refresh", 0, {}, 1.0, time.time()) is False


def test_a_gateway_that_fails_changes_nothing_and_its_url_stays_secret(db_url, week, server):
    server.expect_request(JOB_PATH, method="POST").respond_with_data("no", status=500)
    url = server.url_for("/").replace("http://", "http://pusher:s3cr3t-pw@")
    r = cli(db_url, "portfolio-refresh", "--date", "2026-09-18", env={"PUSHGATEWAY_URL": url})
    assert r.returncode == 0, r.stderr  # the job's own result
    (req,) = [req for req, _ in server.log]
    assert req.authorization.username == "pusher" and req.authorization.password == "s3cr3t-pw"  # basic auth, not in the URL
    warnings = [json.loads(l) for l in r.stderr.splitlines() if '"metrics.push_failed"' in l]
    assert [w["error"] for w in warnings] == ["HTTP 500"]
    assert "s3cr3t-pw" not in r.stderr and "pusher" not in r.stderr


def test_a_hanging_gateway_is_given_up_after_the_timeout(server, monkeypatch):
    def slow(_request):
        time.sleep(1)
        return Response("late")

    server.expect_request("/metrics/job/symbol-batch").respond_with_handler(slow)
    monkeypatch.setattr(metrics, "TIMEOUT_S", 0.3)
    started = time.monotonic()
    ok = metrics.push_run_metrics(Settings(pushgateway_url=server.url_for("/")), "symbol-batch", 0, {}, 1.0, time.time())
    assert ok is False and time.monotonic() - started < 0.9
    deadline = time.monotonic() + 10
    while not server.log and time.monotonic() < deadline:  # the late answer is logged before the next test
        time.sleep(0.05)
    assert logs.redact(server.url_for("/")) == "***"  # registered for redaction by the push
