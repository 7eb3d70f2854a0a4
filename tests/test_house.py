"""The house rules: one target per run, one clock reading per command, one home per rule, no import cycles."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest

from scripts import import_graph
from snapshotter.core import targets
from snapshotter.core.calendar import effective_trading_date, trading_days_between
from snapshotter.core.durations import parse_duration
from snapshotter.data import schema
from snapshotter.errors import UsageError
from snapshotter.jobs import snapshots as job
from tests.conftest import invoke, row_counts, table_rows
from tests.factories import NOW, D, add_closes, add_lot, add_portfolio

brt = schema.batch_run_tracking


def test_the_package_has_no_import_cycle_and_keeps_its_layers():
    edges = import_graph.graph()
    assert import_graph.cycles(edges) == []
    assert import_graph.layer_violations(edges) == []


# --- targets, resolved once --------------------------------------------------------


def test_backfill_target_is_the_last_trading_day_of_the_range():
    rng = targets.backfill_range(D("2026-09-01"), D("2026-09-06"), NOW, 365)  # --to on a Sunday
    assert (rng.first, rng.last, rng.target) == (D("2026-09-01"), D("2026-09-06"), D("2026-09-04"))
    assert rng.days == tuple(trading_days_between(D("2026-09-01"), D("2026-09-04")))


@pytest.mark.parametrize(
    "first,last,message",
    [
        ("2026-09-05", "2026-09-07", "no trading day in 2026-09-05..2026-09-07"),  # Sat, Sun, Labor Day
        ("2026-09-10", "2026-09-01", "--from 2026-09-10 is after --to 2026-09-01"),
        ("2026-12-01", "2026-12-08", "--to 2026-12-08 is in the future: the latest closed trading day is 2026-12-04"),
        ("2024-01-02", "2026-09-01", "over --max-backfill-days 365"),
    ],
)
def test_bad_ranges_are_usage_errors(first, last, message):
    with pytest.raises(UsageError, match=message):
        targets.backfill_range(D(first), D(last), NOW, 365)


def test_symbol_batch_target_on_a_saturday_is_refused_and_a_range_ends_on_its_last_trading_day():
    with pytest.raises(UsageError, match="--date 2026-09-05 is not an NYSE trading day"):
        targets.symbol_batch_target(D("2026-09-05"), None, None, NOW)
    target, rng = targets.symbol_batch_target(None, D("2026-08-31"), D("2026-09-07"), NOW)
    assert target == D("2026-09-04") and rng.first == D("2026-08-31")
    assert targets.symbol_batch_target(None, None, None, NOW) == (D("2026-12-04"), None)


def test_the_effective_date_comes_from_the_instant_passed_in():
    # Friday 2026-12-04 closes at 16:00 New York (21:00 UTC): a minute before, Thursday is the latest closed day.
    assert effective_trading_date(datetime(2026, 12, 4, 20, 59, tzinfo=timezone.utc)) == D("2026-12-03")
    assert effective_trading_date(datetime(2026, 12, 4, 21, 0, tzinfo=timezone.utc)) == D("2026-12-04")


def test_durations_have_one_parser():
    assert [parse_duration(v) for v in ("90", "90s", "5m", "1h30m", "0.5s")] == [90, 90, 300, 5400, 0.5]
    for bad in ("soon", "5x", "99999999999h", "-1s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.fixture
def one_lot(engine):
    days = trading_days_between(D("2026-08-24"), D("2026-09-18"))
    with engine.begin() as c:
        pid = add_portfolio(c, "p")
        add_lot(c, pid, "AAA", "10", "100", "2026-08-24")
        add_closes(c, "AAA", {d: 100 + i for i, d in enumerate(days)})
    return pid


def test_backfill_to_a_sunday_reports_one_target_everywhere(db_url, engine, one_lot):
    r = invoke("--now", "2026-12-07T12:00:00Z", "backfill", "--portfolio", str(one_lot), "--from", "2026-09-01",
                "--to", "2026-09-06", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    (run,) = table_rows(engine, brt)
    assert (run["batch_type"], run["status"], run["target_date"]) == ("portfolio_backfill", "completed", D("2026-09-04"))
    assert run["stats"]["target_date"] == summary["target_date"] == "2026-09-04"
    assert summary["snapshots_created"] == 4  # Tue 1 .. Fri 4


def test_backfill_over_a_weekend_and_a_holiday_is_64_and_writes_nothing(db_url, engine, one_lot):
    counts = row_counts(engine)
    r = invoke("--now", "2026-12-07T12:00:00Z", "backfill", "--portfolio", str(one_lot), "--from", "2026-09-05",
                "--to", "2026-09-07", db_url=db_url)
    assert r.returncode == 64
    errors = [line for line in r.stderr.splitlines() if line.startswith("snapshotter:")]
    assert errors == ["snapshotter: error: no trading day in 2026-09-05..2026-09-07: nothing to do"]
    assert row_counts(engine) == counts


def test_the_job_returns_the_target_it_resolved(engine, one_lot):
    r = job.backfill(engine, str(one_lot), D("2026-09-14"), D("2026-09-20"), opts=job.Options(progress=False), now=NOW)
    assert r.target == D("2026-09-18") and r.stats["target_date"] == "2026-09-18"
    r = job.portfolio_refresh(engine, None, job.Options(progress=False, wait_for_batch=False), now=NOW)
    assert r.target == D("2026-12-04")


def test_now_fixes_the_default_target_of_every_command(db_url, engine, one_lot):
    """One instant per command: --now 2026-09-19 (a Saturday) makes Friday 2026-09-18 the default day."""
    r = invoke("--now", "2026-09-19T12:00:00Z", "portfolio-refresh", "--no-wait", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["target_date"] == "2026-09-18"
    r = invoke("--now", "2026-09-19T12:00:00Z", "check", "--max-lag", "0", db_url=db_url)
    assert (r.returncode, r.stdout.split(":")[0]) == (0, "ok")
    assert date.fromisoformat(r.stdout.split("behind ")[1].split(" ")[0]) == D("2026-09-18")


@pytest.mark.parametrize("mode", ["sql", "plan", "analyze"])
def test_explain_prints_the_first_chunks_statements_and_keeps_nothing(db_url, engine, one_lot, mode):
    counts = row_counts(engine)
    r = invoke("--now", "2026-12-07T12:00:00Z", "portfolio-refresh", "--date", "2026-09-18", "--no-wait", "--explain", mode, db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert row_counts(engine) == counts  # no snapshot, no tracking row, positions untouched
    assert table_rows(engine, schema.positions)[0]["market_value"] is None
    steps = [line for line in r.stdout.splitlines() if line.startswith("-- ") and line[3:4].isdigit()]
    assert steps == [
        "-- 1. the chunk's portfolios", "-- 2. days after each portfolio's last snapshot", "-- 3. partial snapshots to heal",
        "-- 4. value the new snapshots", "-- 5. the frontier status reads", "-- 6. market values of the first slice",
    ]
    assert "INSERT INTO portfolio_snapshots" in r.stdout and "UPDATE positions" in r.stdout
    plans = [line for line in r.stdout.splitlines() if line.startswith("--   ")]
    if mode == "sql":
        assert plans == []
    elif engine.dialect.name == "postgresql" and mode == "analyze":
        assert any("actual time=" in line for line in plans)
    else:
        assert plans and not any("actual time=" in line for line in plans)
