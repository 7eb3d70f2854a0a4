"""Crash safety with a real process: SIGKILL between chunks, then a rerun finishes the work."""

from __future__ import annotations

import signal

import pytest
import sqlalchemy as sa

from snapshotter.data import schema
from snapshotter.core.calendar import trading_days_between
from tests.conftest import CliProcess, invoke, row_counts, table_rows
from tests.factories import D, add_closes, add_lot, add_portfolio

DAYS = trading_days_between(D("2026-09-14"), D("2026-09-18"))
N = 400
KILL_AT_CHUNK = 20  # held there, the child gets at most about a page of log lines further (conftest.CliProcess)


@pytest.mark.slow  # a real process
def test_sigkill_mid_run_then_rerun_completes_without_duplicates(db_url, engine):
    with engine.begin() as c:
        for i in range(N):
            add_lot(c, add_portfolio(c, f"p{i}"), "AAA", "1", "1", "2026-09-14")
        add_closes(c, "AAA", {d: 10 + i for i, d in enumerate(DAYS)})
    with CliProcess("--log-level", "debug", "portfolio-refresh", "--date", "2026-09-18", "--no-wait", "--chunk-size", "1",
                    db_url=db_url, hold_after=("refresh.chunk", KILL_AT_CHUNK)) as child:
        at = child.wait_held()
        child.kill()  # SIGKILL
        r = child.finish()
    assert r.returncode == -signal.SIGKILL
    killed_at = row_counts(engine)["portfolio_snapshots"]
    assert KILL_AT_CHUNK * len(DAYS) <= at["created"] <= killed_at < N * len(DAYS)  # mid-run: chunks committed, not all
    assert killed_at % len(DAYS) == 0  # whole chunks only: each portfolio has all its days or none
    (run,) = table_rows(engine, schema.batch_run_tracking)
    assert run["status"] == "running"  # the killed process could not say anything

    r = invoke("portfolio-refresh", "--date", "2026-09-18", "--no-wait", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    with engine.connect() as c:
        rows = c.execute(sa.select(schema.portfolio_snapshots.c.portfolio_id, schema.portfolio_snapshots.c.snapshot_date)).all()
    assert len(rows) == N * len(DAYS) == len(set(rows))
    runs = table_rows(engine, schema.batch_run_tracking, order_by=[schema.batch_run_tracking.c.id])
    assert [x["status"] for x in runs] == ["interrupted", "completed"]
    assert runs[1]["stats"]["snapshots_created"] == N * len(DAYS) - killed_at
