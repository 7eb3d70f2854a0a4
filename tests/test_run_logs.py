"""Logs tied to runs: every JSON line a job run writes names the run (``run_id``, ``job``,
and ``target_date`` once resolved), whichever thread or library wrote it, and the run id
is spelled as the tracking row, the pings and the alert spell it."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa
import structlog

from snapshotter.data import schema
from snapshotter.jobs.workers import Workers
from snapshotter.ops import logs
from tests.conftest import ROOT
from tests.factories import add_close, add_closes, add_lot, add_portfolio

PING = "/ping/s3cr3t-logs"


def cli(db_url: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHAVANTAGE", "POLYGON", "ALERT_", "HEALTHCHECK", "SNAPSHOTTER_"))}
    full.update(DATABASE_URL=db_url, **env)
    return subprocess.run([sys.executable, "-m", "snapshotter", *args], capture_output=True, text=True, env=full,
                          timeout=120, cwd=ROOT)


def test_every_json_line_of_a_run_names_the_run(db_url, engine, server, backend):
    """A refresh with one portfolio that fails (its chunk is valued in a worker thread on
    PostgreSQL), pings over httpx (the standard library's logging, shown at debug)."""
    with engine.begin() as c:
        good = add_portfolio(c, "good")
        add_lot(c, good, "AAA", "10", "100", "2026-09-14")
        add_closes(c, "AAA", {f"2026-09-{d}": 100 + d for d in range(14, 19)})
        bad = add_portfolio(c, "overflow")
        add_lot(c, bad, "BIG", "100000000000000000", "1", "2026-09-18")
        add_close(c, "BIG", "2026-09-18", "10000000000000")
    server.expect_request(PING + "/start").respond_with_data("OK")
    server.expect_request(PING + "/1").respond_with_data("OK")
    r = cli(db_url, "--log-format", "json", "--log-level", "debug", "portfolio-refresh", "--date", "2026-09-18", "--no-wait",
            "--chunk-size", "1", "--workers", "2", env={"HEALTHCHECK_URL": server.url_for(PING)})
    assert r.returncode == 1, r.stderr

    with engine.connect() as c:
        (run_id,) = c.execute(sa.select(schema.batch_run_tracking.c.run_id)).scalars().all()
    assert run_id == str(uuid.UUID(run_id))  # the canonical form, as healthchecks.io wants it in rid=
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    plain = [l for l in lines if not l.startswith("{")]  # command output, not logs: the failure line, the failed portfolio
    assert plain == [f"  failed {bad}: {plain[0].split(': ', 1)[1]}", "snapshotter: error: 1 of 2 portfolios failed"]
    events = [json.loads(l) for l in lines if l.startswith("{")]
    assert len(events) > 10
    for e in events:
        assert (e.get("run_id"), e.get("job")) == (run_id, "portfolio-refresh"), e
    resolved = [i for i, e in enumerate(events) if "target_date" in e]
    assert resolved and all(events[i]["target_date"] == "2026-09-18" for i in resolved)
    assert resolved == list(range(resolved[0], resolved[-1] + 1))  # from the moment the job resolved it
    names = {e["event"] for e in events}
    assert {"job.started", "refresh.portfolio_failed", "refresh.finished", "job.finished"} <= names
    stdlib = [e for e in events if e.get("logger", "").startswith(("httpx", "httpcore"))]
    assert stdlib and any("HTTP Request: POST" in e["event"] for e in stdlib)
    assert not any("s3cr3t" in l for l in lines)  # the ping URL is a secret, in httpx's lines too
    (start, finish) = [req for req, _ in server.log if req.path.startswith(PING)]
    assert start.args["rid"] == finish.args["rid"] == run_id


# --- the pieces ---------------------------------------------------------------------------------


@pytest.fixture
def stream(monkeypatch):
    out = io.StringIO()
    with monkeypatch.context() as m:  # configure binds the sys.stderr of the moment
        m.setattr(sys, "stderr", out)
        logs.configure("json", "info")
    yield out
    logs.unbind_run()
    logs.configure("json", "warning")  # as conftest left it


def json_lines(out: io.StringIO) -> list[dict]:
    return [json.loads(l) for l in out.getvalue().splitlines() if l.startswith("{")]


def test_standard_library_records_are_rendered_like_structlog_events(stream):
    logs.bind_run("11111111-2222-4333-8444-555555555555", "symbol-batch")
    logs.register_secrets(["k3y-in-a-url"])
    logging.getLogger("alembic.runtime.migration").info("Running upgrade 0004 -> 0005, something")
    logging.getLogger("alembic.runtime.migration").info("Context impl PostgresqlImpl.")  # chatter, dropped
    logging.getLogger("httpx").info("HTTP Request: GET https://x.example/q?apikey=k3y-in-a-url")  # below warning: quiet
    logging.getLogger("httpx").warning("retrying https://x.example/q?apikey=k3y-in-a-url")
    structlog.get_logger("snapshotter").info("ours")
    events = json_lines(stream)
    assert [(e.get("logger"), e["level"]) for e in events] == [
        ("alembic.runtime.migration", "info"), ("httpx", "warning"), (None, "info"),
    ]
    assert events[0]["event"] == "Running upgrade 0004 -> 0005, something"
    assert events[1]["event"] == "retrying https://x.example/q?apikey=***"
    for e in events:
        assert (e["run_id"], e["job"]) == ("11111111-2222-4333-8444-555555555555", "symbol-batch") and "timestamp" in e
    logs.unbind_run()
    structlog.get_logger("snapshotter").info("after the run")
    assert "run_id" not in json_lines(stream)[-1]


def test_python_warnings_become_log_lines():
    """SQLAlchemy warns through ``warnings``; a job's process logs them as JSON lines (pytest
    keeps its own hold on warnings, hence a process of its own)."""
    code = ("from snapshotter.ops import logs; import warnings, sqlalchemy as sa; logs.configure('json', 'info'); "
            "logs.bind_run('r', 'j'); warnings.warn(sa.exc.SAWarning('a warning from SQLAlchemy'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    (line,) = r.stderr.splitlines()
    e = json.loads(line)
    assert (e["logger"], e["level"], e["run_id"], e["job"]) == ("py.warnings", "warning", "r", "j")
    assert "SAWarning: a warning from SQLAlchemy" in e["event"]


def test_configure_again_replaces_the_handler():
    try:
        logs.configure("json", "info")
        logs.configure("json", "info")
        assert [h.get_name() for h in logging.getLogger().handlers].count("snapshotter") == 1
    finally:
        logs.configure("json", "warning")


def test_worker_threads_log_with_the_run_s_context(stream):
    engine = sa.create_engine("sqlite://")
    log = structlog.get_logger("worker")
    logs.bind_run("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "portfolio-refresh")
    logs.bind_target(__import__("datetime").date(2026, 9, 18))

    def task(conn, n):
        log.info("chunk", n=n)
        return n

    with Workers(engine, 2, lambda conn: None, lambda conn: None) as pool:
        for n in range(4):
            pool.submit(task, n)
        assert sorted(r for _, r in pool.drain()) == [0, 1, 2, 3]
    chunks = [e for e in json_lines(stream) if e["event"] == "chunk"]
    assert len(chunks) == 4
    for e in chunks:
        assert (e["run_id"], e["job"], e["target_date"]) == ("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "portfolio-refresh", "2026-09-18")
    engine.dispose()
