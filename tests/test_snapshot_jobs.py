"""portfolio-refresh, refresh --date and backfill on both backends: exact rows and exit codes."""

from __future__ import annotations

import json
import signal
from decimal import Decimal

import pytest
import sqlalchemy as sa

from snapshotter.data import schema
from snapshotter.jobs import snapshots as job
from snapshotter.data.locks import run_lock
from snapshotter.core.calendar import trading_days_between
from tests.conftest import CliProcess, in_background, invoke, log_event, row_counts, run_cli, table_rows
from tests.factories import (
    NOW,
    D, add_cash, add_close, add_closes, add_lot, add_portfolio, complete_symbol_batch, crash_on_call, snapshot_dates, snapshots,
    values,
)

NOW_OPTS = dict(progress=False, wait_for_batch=False)


def opts(**kw):
    return job.Options(**{**NOW_OPTS, **kw})


def closes_for(days, start=Decimal("100"), step=Decimal("1")):
    return {d: start + step * i for i, d in enumerate(days)}


def test_backfills_missed_days_across_weekend_and_holiday(engine, four_week_portfolio):
    pid, days = four_week_portfolio
    r = job.portfolio_refresh(engine, D("2026-09-04"), opts(), now=NOW)
    assert r.exit_code == 0 and r.stats["snapshots_created"] == 10
    # Mon 2026-09-07 is Labor Day; the run on Wed 09-09 fills Tue 8 and Wed 9 only.
    r = job.portfolio_refresh(engine, D("2026-09-09"), opts(), now=NOW)
    assert r.exit_code == 0
    assert snapshot_dates(engine, pid)[-3:] == ["2026-09-04", "2026-09-08", "2026-09-09"]
    assert r.stats["snapshots_created"] == 2 and r.stats["days_backfilled"] == 1


def test_missed_monday_and_tuesday_are_filled_on_wednesday(engine, four_week_portfolio):
    pid, _ = four_week_portfolio
    job.portfolio_refresh(engine, D("2026-09-11"), opts(), now=NOW)
    r = job.portfolio_refresh(engine, D("2026-09-16"), opts(), now=NOW)
    assert snapshot_dates(engine, pid)[-4:] == ["2026-09-11", "2026-09-14", "2026-09-15", "2026-09-16"]
    assert (r.stats["snapshots_created"], r.stats["days_backfilled"]) == (3, 2)


def test_new_portfolio_starts_at_its_first_activity_and_values_each_day_with_that_days_close(engine, four_week_portfolio):
    pid, days = four_week_portfolio
    r = job.portfolio_refresh(engine, D("2026-08-28"), opts(), now=NOW)
    assert r.exit_code == 0
    rows = snapshots(engine, pid)
    assert [x["snapshot_date"] for x in rows] == trading_days_between(D("2026-08-24"), D("2026-08-28"))
    # Day i: close 100 + i, 10 shares at cost 100, cash 500.50.
    for i, row in enumerate(rows):
        holdings = Decimal(10) * (100 + i)
        assert values(row) == (
            holdings, Decimal("500.500000"), holdings + Decimal("500.50"), Decimal("1000.000000"), holdings - 1000,
            (holdings - 1000) / 10, 1, 1, False, None,
        )


def test_rerun_is_idempotent(engine, four_week_portfolio):
    job.portfolio_refresh(engine, D("2026-09-18"), opts(), now=NOW)
    before = snapshots(engine)
    pos_before = table_rows(engine, schema.positions)
    r = job.portfolio_refresh(engine, D("2026-09-18"), opts(), now=NOW)
    assert r.stats["snapshots_created"] == 0 and r.stats["snapshots_recomputed"] == 0 and r.stats["positions_valued"] == 0
    assert snapshots(engine) == before
    assert table_rows(engine, schema.positions) == pos_before


def test_max_backfill_days_caps_a_new_portfolio(engine, four_week_portfolio):
    pid, _ = four_week_portfolio
    job.portfolio_refresh(engine, D("2026-09-18"), opts(max_backfill_days=7), now=NOW)
    assert snapshot_dates(engine, pid) == ["2026-09-14", "2026-09-15", "2026-09-16", "2026-09-17", "2026-09-18"]


def test_partial_snapshot_is_healed_when_the_close_arrives(engine, four_week_portfolio):
    pid, _ = four_week_portfolio
    with engine.begin() as c:
        add_lot(c, pid, "ZZZ", "2", "50", "2026-09-01")
        add_closes(c, "ZZZ", {D("2026-09-01"): Decimal("55"), D("2026-09-03"): Decimal("56")})  # 09-02 missing
    job.portfolio_refresh(engine, D("2026-09-03"), opts(), now=NOW)
    partial = {r["snapshot_date"]: r for r in snapshots(engine, pid)}[D("2026-09-02")]
    assert (partial["is_partial"], partial["missing_symbols"], partial["position_count"], partial["priced_position_count"]) == (True, "ZZZ", 2, 1)
    assert partial["holdings_value"] == Decimal("1070")  # AAA only: 10 x 107
    assert partial["total_cost"] == Decimal("1000")
    with engine.begin() as c:
        add_close(c, "ZZZ", "2026-09-02", "54.5")
    r = job.portfolio_refresh(engine, D("2026-09-03"), opts(), now=NOW)
    # the close arrived for a day with snapshots: invalidated history, recomputed from 09-02 (09-02 and 09-03)
    assert (r.stats["snapshots_created"], r.stats["snapshots_recomputed"], r.stats["snapshots_recomputed_by_invalidation"]) == (0, 0, 2)
    healed = {r["snapshot_date"]: r for r in snapshots(engine, pid)}[D("2026-09-02")]
    assert values(healed) == (Decimal("1179"), Decimal("500.5"), Decimal("1679.5"), Decimal("1100"), Decimal("79"),
                              Decimal("7.181818"), 2, 2, False, None)
    assert healed["created_at"] == partial["created_at"] and healed["updated_at"] >= partial["updated_at"]


def test_day_without_any_close_is_skipped_then_filled_later(engine, four_week_portfolio):
    pid, _ = four_week_portfolio
    with engine.begin() as c:
        c.execute(schema.symbol_prices_daily.delete().where(schema.symbol_prices_daily.c.price_date == D("2026-09-10")))
    r = job.portfolio_refresh(engine, D("2026-09-11"), opts(max_backfill_days=10), now=NOW)
    assert "2026-09-10" in r.stats["days_without_prices"]
    assert "2026-09-10" not in snapshot_dates(engine, pid)
    with engine.begin() as c:
        add_close(c, "AAA", "2026-09-10", "111")
    r = job.portfolio_refresh(engine, D("2026-09-11"), opts(max_backfill_days=10), now=NOW)
    assert r.stats["snapshots_created"] == 1
    assert "2026-09-10" in snapshot_dates(engine, pid)


def test_lots_and_cash_as_of_each_day_not_today(engine):
    days = trading_days_between(D("2026-10-01"), D("2026-10-09"))
    with engine.begin() as c:
        pid = add_portfolio(c)
        add_lot(c, pid, "AAA", "1", "10", "2026-10-01", exit_date="2026-10-05")  # held 10-01, 10-02 only
        add_lot(c, pid, "BBB", "3", "20", "2026-10-06")
        add_lot(c, pid, "CCC", "100", "1", "2026-10-01", deleted=True)
        add_cash(c, pid, "2026-10-01", "100")
        add_cash(c, pid, "2026-10-07", "-40")
        for s in ("AAA", "BBB", "CCC"):
            add_closes(c, s, {d: Decimal("30") for d in days})
    job.portfolio_refresh(engine, D("2026-10-09"), opts(), now=NOW)
    got = {r["snapshot_date"].isoformat(): (r["holdings_value"], r["cash_balance"], r["position_count"]) for r in snapshots(engine, pid)}
    assert got == {
        "2026-10-01": (Decimal(30), Decimal(100), 1),
        "2026-10-02": (Decimal(30), Decimal(100), 1),
        "2026-10-05": (Decimal(0), Decimal(100), 0),
        "2026-10-06": (Decimal(90), Decimal(100), 1),
        "2026-10-07": (Decimal(90), Decimal(60), 1),
        "2026-10-08": (Decimal(90), Decimal(60), 1),
        "2026-10-09": (Decimal(90), Decimal(60), 1),
    }


def test_inactive_and_deleted_portfolios_get_nothing(engine, four_week_portfolio):
    with engine.begin() as c:
        gone = add_portfolio(c, "deleted", deleted=True)
        add_lot(c, gone, "AAA", "1", "1", "2026-08-24")
        empty = add_portfolio(c, "sold out")
        add_lot(c, empty, "AAA", "1", "1", "2026-08-24", exit_date="2026-08-25")
    r = job.portfolio_refresh(engine, D("2026-09-18"), opts(), now=NOW)
    assert snapshot_dates(engine, gone) == [] and snapshot_dates(engine, empty) == []
    assert r.stats["portfolios_active"] == 1


def test_market_values_follow_the_latest_close(engine, four_week_portfolio):
    pid, days = four_week_portfolio
    with engine.begin() as c:
        closed = add_lot(c, pid, "AAA", "5", "90", "2026-08-24", exit_date="2026-09-01")
    job.portfolio_refresh(engine, D("2026-09-18"), opts(), now=NOW)
    lots = {r["id"]: r for r in table_rows(engine, schema.positions)}
    open_lot = next(r for k, r in lots.items() if k != closed)
    last = Decimal(100 + len(days) - 1)
    assert (open_lot["last_price"], open_lot["market_value"], open_lot["market_value_date"]) == (last, last * 10, D("2026-09-18"))
    assert (lots[closed]["last_price"], lots[closed]["market_value"]) == (None, None)


def test_one_bad_portfolio_is_reported_and_the_others_are_written(engine, four_week_portfolio):
    good, _ = four_week_portfolio
    with engine.begin() as c:
        bad = add_portfolio(c, "overflow")
        # 10^17 shares x 10^13 overflows NUMERIC(28, 6) on PostgreSQL and the same bound on SQLite.
        add_lot(c, bad, "BIG", "100000000000000000", "1", "2026-09-14")
        add_closes(c, "BIG", {d: Decimal("10000000000000") for d in trading_days_between(D("2026-09-14"), D("2026-09-18"))})
        others = [add_portfolio(c, f"ok{i}") for i in range(5)]
        for p in others:
            add_lot(c, p, "AAA", "1", "100", "2026-09-14")
    r = job.portfolio_refresh(engine, D("2026-09-18"), opts(chunk_size=3), now=NOW)
    assert r.exit_code == 1
    assert r.stats["portfolios_failed"] == 1
    # Its snapshots fail, and so does its market value (the same overflow): counted apart, listed once.
    assert r.stats["market_value_failures"] == 1
    assert [f["portfolio_id"] for f in r.stats["failed_portfolios"]] == [str(bad)]
    assert not r.stats["failed_portfolios"][0]["error"].startswith("market values: ")
    assert snapshot_dates(engine, bad) == []
    for p in others:
        assert snapshot_dates(engine, p) == ["2026-09-14", "2026-09-15", "2026-09-16", "2026-09-17", "2026-09-18"]
    assert len(snapshot_dates(engine, good)) == 19
    with engine.connect() as c:
        row = c.execute(sa.select(schema.batch_run_tracking).where(schema.batch_run_tracking.c.batch_type == "portfolio_refresh")).one()
    assert row.status == "failed" and row.stats["portfolios_failed"] == 1


def test_a_market_value_that_fails_alone_is_reported_and_exits_1(engine, four_week_portfolio):
    """Snapshots fine (BIG has no close on the day), but its latest close overflows the market value."""
    good, _ = four_week_portfolio
    with engine.begin() as c:
        bad = add_portfolio(c, "late overflow")
        add_lot(c, bad, "BIG", "100000000000000000", "1", "2026-09-14")
        add_closes(c, "BIG", {D("2026-09-18"): Decimal("10000000000000")})
    r = job.refresh_date(engine, D("2026-09-15"), opts=opts(), now=NOW)
    assert r.exit_code == 1
    assert (r.stats["portfolios_failed"], r.stats["market_value_failures"], r.stats["snapshots_created"]) == (0, 1, 2)
    (failure,) = r.stats["failed_portfolios"]
    assert failure["portfolio_id"] == str(bad) and failure["error"].startswith("market values: ")
    (partial_snap,) = snapshots(engine, bad)
    assert (partial_snap["is_partial"], partial_snap["missing_symbols"]) == (True, "BIG")
    lots = {r["portfolio_id"]: r for r in table_rows(engine, schema.positions)}
    assert lots[bad]["market_value"] is None and lots[good]["market_value"] is not None


def test_market_values_in_many_physical_slices_with_one_bad_lot(engine, monkeypatch):
    """The market-value pass walks the table in slices; a failing slice is redone portfolio by portfolio."""
    from snapshotter.data import spans as valuation

    monkeypatch.setattr(valuation, "PG_SPAN_BLOCKS", 1)  # 60 lots at fillfactor 50 fill several 8 KB blocks
    monkeypatch.setattr(valuation, "SQLITE_SPAN_ROWS", 7)
    days = trading_days_between(D("2026-09-14"), D("2026-09-18"))
    with engine.begin() as c:
        pids = [add_portfolio(c, f"p{i}") for i in range(60)]
        for i, p in enumerate(pids):
            add_lot(c, p, "BIG" if i == 33 else "AAA", "100000000000000000" if i == 33 else str(i + 1), "1", "2026-09-14")
        add_closes(c, "AAA", closes_for(days))
        add_closes(c, "BIG", {D("2026-09-18"): Decimal("10000000000000")})  # only after the refreshed day
    with engine.connect() as c:
        n_spans = len(job._spans(c))
    assert n_spans > 2
    r = job.refresh_date(engine, D("2026-09-15"), opts=opts(), now=NOW)
    assert (r.exit_code, r.stats["positions_valued"], r.stats["market_value_failures"]) == (1, 59, 1)
    assert [f["portfolio_id"] for f in r.stats["failed_portfolios"]] == [str(pids[33])]
    last = closes_for(days)[D("2026-09-18")]
    lots = {x["portfolio_id"]: x for x in table_rows(engine, schema.positions)}
    assert lots[pids[33]]["market_value"] is None
    assert all(lots[p]["market_value"] == last * (i + 1) for i, p in enumerate(pids) if i != 33)


def test_spans_cover_the_whole_table_and_end_open():
    from snapshotter.data.spans import Span, spans

    assert spans(0, 25, 10) == [Span(0, 10), Span(10, 20), Span(20, None)]
    assert spans(1, 1, 10) == [Span(1, None)]
    assert spans(0, 0, 10) == [Span(0, None)]


def test_several_workers_write_exactly_what_one_writes(engine):
    """Chunks on 3 connections at once (PostgreSQL; SQLite runs 1) give the same rows and stats as 1."""
    days = trading_days_between(D("2026-09-14"), D("2026-09-18"))
    with engine.begin() as c:
        for i in range(30):
            p = add_portfolio(c, f"p{i}")
            add_lot(c, p, "AAA", str(i + 1), "10", "2026-09-14")
            if i % 3:
                add_lot(c, p, "BBB", "2", "5", "2026-09-15")
            add_cash(c, p, "2026-09-14", f"{i}.25")
        add_closes(c, "AAA", closes_for(days))
        add_closes(c, "BBB", closes_for(days[:-1], start=Decimal("7.5")))  # no BBB close on the 18th: partial

    def outcome(workers):
        r = job.portfolio_refresh(engine, D("2026-09-18"), opts(chunk_size=4, workers=workers), now=NOW)
        rows = sorted(
            (str(x["portfolio_id"]), x["snapshot_date"], x["total_value"], x["total_cost"], x["pnl_percent"], x["is_partial"], x["missing_symbols"])
            for x in snapshots(engine)
        )
        lots = sorted((str(x["portfolio_id"]), x["symbol"], x["market_value"]) for x in table_rows(engine, schema.positions))
        keep = ("snapshots_created", "portfolios_processed", "portfolios_active", "positions_valued", "days_backfilled", "chunks")
        return rows, lots, {k: r.stats[k] for k in keep}

    one = outcome(1)
    with engine.begin() as c:
        c.execute(schema.portfolio_snapshots.delete())
        c.execute(schema.positions.update().values(last_price=None, market_value=None, market_value_date=None))
    three = outcome(3)
    assert one == three
    assert one[2]["snapshots_created"] == 30 * 5 and one[2]["chunks"] == 8 and one[2]["positions_valued"] == 50


def test_refresh_date_keeps_existing_unless_forced(engine, four_week_portfolio):
    pid, _ = four_week_portfolio
    job.refresh_date(engine, D("2026-09-15"), opts=opts(), now=NOW)
    (before,) = snapshots(engine, pid)
    with engine.begin() as c:
        c.execute(schema.symbol_prices_daily.update().where(schema.symbol_prices_daily.c.price_date == D("2026-09-15")).values(close=Decimal("200")))
    with engine.begin() as c:  # as before invalidations existed: the corrected close is not recorded as invalidated history
        c.execute(schema.snapshot_invalidations.delete())
    r = job.refresh_date(engine, D("2026-09-15"), opts=opts(), now=NOW)
    assert r.stats["snapshots_created"] == 0 and snapshots(engine, pid) == [before]
    r = job.refresh_date(engine, D("2026-09-15"), force=True, opts=opts(), now=NOW)
    assert (r.stats["snapshots_created"], r.stats["snapshots_recomputed"]) == (0, 1)
    (after,) = snapshots(engine, pid)
    assert after["holdings_value"] == Decimal("2000") and after["id"] == before["id"]
    r = job.refresh_date(engine, D("2026-09-15"), force=True, opts=opts(), now=NOW)  # nothing changed: still recomputed, not created
    assert (r.stats["snapshots_created"], r.stats["snapshots_recomputed"]) == (0, 1)


def test_dry_run_writes_nothing(engine, four_week_portfolio):
    pid, _ = four_week_portfolio
    counts = row_counts(engine)
    r = job.portfolio_refresh(engine, D("2026-09-18"), opts(dry_run=True), now=NOW)
    assert r.stats["snapshots_created"] == 19
    assert len(r.preview) == 19 and r.preview[0]["portfolio_id"] == pid
    assert row_counts(engine) == counts


def test_crash_safe_chunks_rerun_completes_without_duplicates(engine, monkeypatch):
    """Each chunk commits alone: simulate a crash after the first chunk, then rerun."""
    days = trading_days_between(D("2026-09-14"), D("2026-09-18"))
    with engine.begin() as c:
        pids = [add_portfolio(c, f"p{i}") for i in range(6)]
        for p in pids:
            add_lot(c, p, "AAA", "1", "1", "2026-09-14")
        add_closes(c, "AAA", closes_for(days))
    crash_on_call(monkeypatch, "_snapshot_chunk", 3)
    with pytest.raises(KeyboardInterrupt):
        job.portfolio_refresh(engine, D("2026-09-18"), opts(chunk_size=2, workers=1), now=NOW)  # one at a time: a known crash point
    monkeypatch.undo()
    assert len(snapshots(engine)) == 4 * 5
    r = job.portfolio_refresh(engine, D("2026-09-18"), opts(chunk_size=2), now=NOW)
    assert r.stats["snapshots_created"] == 2 * 5
    rows = snapshots(engine)
    assert len(rows) == 30 and len({(x["portfolio_id"], x["snapshot_date"]) for x in rows}) == 30


def test_a_crash_in_the_market_value_pass_is_finished_by_the_rerun(engine, monkeypatch):
    """Market values are a second pass after all snapshots; a crash there loses nothing."""
    days = trading_days_between(D("2026-09-14"), D("2026-09-18"))
    with engine.begin() as c:
        pids = [add_portfolio(c, f"p{i}") for i in range(4)]
        for p in pids:
            add_lot(c, p, "AAA", "2", "1", "2026-09-14")
        add_closes(c, "AAA", closes_for(days))
    crash_on_call(monkeypatch, "_market_value_span", 1)
    with pytest.raises(KeyboardInterrupt):
        job.portfolio_refresh(engine, D("2026-09-18"), opts(chunk_size=2, workers=1), now=NOW)
    monkeypatch.undo()
    assert len(snapshots(engine)) == 4 * 5
    lots = table_rows(engine, schema.positions)
    assert [l["market_value_date"] for l in lots] == [None] * 4  # every snapshot committed, no market value yet
    r = job.portfolio_refresh(engine, D("2026-09-18"), opts(chunk_size=2), now=NOW)
    assert (r.stats["snapshots_created"], r.stats["positions_valued"]) == (0, 4)
    last = closes_for(days)[D("2026-09-18")]
    assert {(l["last_price"], l["market_value"], l["market_value_date"]) for l in table_rows(engine, schema.positions)} == {
        (last, last * 2, D("2026-09-18"))
    }


# --- CLI: exit codes, waiting, locking, bad input -----------------------------------------


@pytest.mark.slow  # a real process
def test_wait_timeout_exits_75_and_writes_no_snapshot(db_url, engine, four_week_portfolio):
    counts = row_counts(engine)
    # A real process: exit 75 as cron sees it.
    r = run_cli("portfolio-refresh", "--date", "2026-09-18", "--wait-timeout", "1s", "--poll-interval", "0.2s", db_url=db_url)
    assert r.returncode == 75, r.stderr
    assert "symbol batch for 2026-09-18 not completed" in r.stderr
    after = row_counts(engine)
    assert after["portfolio_snapshots"] == 0 and table_rows(engine, schema.positions)[0]["last_price"] is None
    assert after["batch_run_tracking"] == counts["batch_run_tracking"] + 1
    (run,) = table_rows(engine, schema.batch_run_tracking)
    assert (run["batch_type"], run["status"]) == ("portfolio_refresh", "aborted")


def test_waits_for_the_symbol_batch_then_runs(db_url, engine, four_week_portfolio, stop_flag_sleeps):
    def finish_the_batch_once_the_refresh_waits():
        assert stop_flag_sleeps.wait(60), "the refresh never waited for the symbol batch"
        with engine.begin() as c:
            complete_symbol_batch(c, "2026-09-18")

    with in_background(finish_the_batch_once_the_refresh_waits):
        r = invoke("portfolio-refresh", "--date", "2026-09-18", "--wait-timeout", "60s", "--poll-interval", "0.2s", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["snapshots_created"] == 19 and summary["exit_code"] == 0
    (ready,) = [e for e in map(log_event, r.stderr.splitlines()) if e and e["event"] == "refresh.symbol_batch_ready"]
    assert ready["polls"] >= 1  # it did wait before it went on


def test_second_run_exits_75_while_the_lock_is_held(db_url, engine, four_week_portfolio):
    with engine.begin() as c:
        complete_symbol_batch(c, "2026-09-18")
    with run_lock(engine):
        r = invoke("portfolio-refresh", "--date", "2026-09-18", db_url=db_url)
        assert r.returncode == 75
        assert "another run holds the lock" in r.stderr
        assert row_counts(engine)["portfolio_snapshots"] == 0


@pytest.mark.slow  # a real process
def test_two_refresh_processes_at_once_the_second_exits_75_and_the_first_finishes(db_url, engine, four_week_portfolio):
    """Cron overlap: a real process holds the lock while it waits for the batch; a second run exits 75."""
    with CliProcess("portfolio-refresh", "--date", "2026-09-18", "--wait-timeout", "10m", "--poll-interval", "0.2s", "--json",
                    db_url=db_url) as first:
        first.wait_for("refresh.waiting_for_symbol_batch")  # logged with the lock held
        second = invoke("portfolio-refresh", "--date", "2026-09-18", "--no-wait", db_url=db_url)
        assert second.returncode == 75, second.stderr
        assert "another run holds the lock" in second.stderr
        assert row_counts(engine)["portfolio_snapshots"] == 0
        with engine.begin() as c:
            complete_symbol_batch(c, "2026-09-18")
        r = first.finish()
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["snapshots_created"] == 19
    assert row_counts(engine)["portfolio_snapshots"] == 19


@pytest.mark.slow  # a real process
def test_wait_for_lock_waits_for_the_holder(db_url, engine, four_week_portfolio, stop_flag_sleeps):
    """--wait-for-lock waits while another process holds the lock, then does the work itself."""
    brt = schema.batch_run_tracking
    # The holder: a real refresh holding the lock while it waits for a symbol batch that never comes.
    with CliProcess("portfolio-refresh", "--date", "2026-09-18", "--wait-timeout", "10m", "--poll-interval", "0.2s",
                    db_url=db_url) as holder:
        holder.wait_for("refresh.waiting_for_symbol_batch")

        def stop_the_holder_once_the_waiter_waits():
            assert stop_flag_sleeps.wait(60), "the second run never waited for the lock"
            assert row_counts(engine)["portfolio_snapshots"] == 0
            assert [r["status"] for r in table_rows(engine, brt)] == ["running"]  # the holder's: the waiter has no run yet
            holder.send_signal(signal.SIGTERM)

        with in_background(stop_the_holder_once_the_waiter_waits):
            r = invoke("portfolio-refresh", "--date", "2026-09-18", "--wait-for-lock", "--no-wait", "--json", db_url=db_url)
        held = holder.finish()
    assert held.returncode == 143, held.stderr
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["snapshots_created"] == 19
    assert row_counts(engine)["portfolio_snapshots"] == 19
    assert [x["status"] for x in table_rows(engine, brt, order_by=[brt.c.id])] == ["interrupted", "completed"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["refresh", "--date", "2026-09-07"], "not an NYSE trading day"),
        (["refresh", "--date", "2099-01-02"], "in the future"),
        (["refresh", "--date", "2026-13-01"], "not a date"),
        (["backfill", "--portfolio", "00000000-0000-0000-0000-000000000000"], "unknown portfolio"),
        (["backfill", "--portfolio", "nope"], "unknown portfolio"),
        (["backfill", "--portfolio", "{pid}", "--from", "2026-09-10", "--to", "2026-09-01"], "is after --to"),
        (["backfill", "--portfolio", "{pid}", "--from", "2024-01-02", "--to", "2026-09-01"], "over --max-backfill-days"),
        (["portfolio-refresh", "--wait-timeout", "soon"], "not a duration"),
    ],
)
def test_bad_arguments_exit_64_and_change_nothing(db_url, engine, four_week_portfolio, args, message):
    pid, _ = four_week_portfolio
    counts = row_counts(engine)
    r = invoke(*[a.format(pid=pid) for a in args], db_url=db_url)
    assert r.returncode == 64, r.stderr
    assert message in r.stderr
    assert row_counts(engine) == counts


def test_backfill_cli_dry_run_then_real(db_url, engine, four_week_portfolio):
    pid, _ = four_week_portfolio
    r = invoke("backfill", "--portfolio", str(pid), "--from", "2026-09-01", "--to", "2026-09-04", "--dry-run", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["snapshots_created"] == 4
    assert row_counts(engine)["portfolio_snapshots"] == 0
    r = invoke("backfill", "--portfolio", str(pid), "--from", "2026-09-01", "--to", "2026-09-04", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert snapshot_dates(engine, pid) == ["2026-09-01", "2026-09-02", "2026-09-03", "2026-09-04"]
    # Past days use their own close (100 + index of the day), never today's.
    assert [s["holdings_value"] for s in snapshots(engine, pid)] == [Decimal(1060), Decimal(1070), Decimal(1080), Decimal(1090)]


@pytest.mark.slow  # a real process
def test_cli_one_bad_portfolio_exits_1_and_names_it(db_url, engine, four_week_portfolio):
    with engine.begin() as c:
        bad = add_portfolio(c, "overflow")
        add_lot(c, bad, "BIG", "100000000000000000", "1", "2026-09-18")
        add_close(c, "BIG", "2026-09-18", "10000000000000")
    r = run_cli("portfolio-refresh", "--date", "2026-09-18", "--no-wait", "--json", db_url=db_url)  # a real process: exit 1
    assert r.returncode == 1
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["failed_portfolios"][0]["portfolio_id"] == str(bad)
    assert summary["snapshots_created"] == 19


def test_a_run_writes_into_the_partitions_of_its_months(engine, backend, four_week_portfolio):
    """PostgreSQL: the run creates the monthly partitions of the days it writes, and the next month's,
    before its first chunk, so nothing lands in the default partition. SQLite: one plain table."""
    from snapshotter.data import partitions

    if backend == "postgresql":  # the session's database may have them from an earlier test
        with engine.begin() as c:
            c.execute(sa.text("DROP TABLE IF EXISTS portfolio_snapshots_2026_08, portfolio_snapshots_2026_09, portfolio_snapshots_2026_10"))
            c.execute(schema.snapshot_invalidations.delete())  # the nightly pass itself, not the recompute's, must create them
    before = snapshots(engine)
    preview = job.portfolio_refresh(engine, D("2026-09-18"), opts(dry_run=True), now=NOW)  # writes nothing: no month needed
    assert preview.exit_code == 0 and preview.stats["snapshots_created"] == 19 and snapshots(engine) == before == []
    job.portfolio_refresh(engine, D("2026-09-18"), opts(), now=NOW)
    with engine.connect() as c:
        months = partitions.months(c)
        if backend == "sqlite":
            assert months == []
            return
        per_partition = dict(c.execute(sa.text(
            "SELECT tableoid::regclass::text, count(*) FROM portfolio_snapshots GROUP BY 1")).all())
    assert {"portfolio_snapshots_2026_08", "portfolio_snapshots_2026_09", "portfolio_snapshots_2026_10"} <= set(months)
    assert per_partition == {"portfolio_snapshots_2026_08": 6, "portfolio_snapshots_2026_09": 13}


def test_a_recompute_dry_run_into_a_month_without_its_partition(engine, backend, four_week_portfolio):
    """A lot backdated into a month no snapshot was ever written in: the recompute's dry run runs its
    writes and rolls them back, so it makes that month's partition first (PostgreSQL), and changes no row."""
    pid, _ = four_week_portfolio
    lots = schema.positions
    with engine.begin() as c:  # the history starts on 09-01 (the lot and the cash)
        c.execute(lots.update().values(entry_date=D("2026-09-01")))
        c.execute(schema.cash_transactions.update().values(txn_date=D("2026-09-01")))
    job.portfolio_refresh(engine, D("2026-09-18"), opts(), now=NOW)
    with engine.begin() as c:
        c.execute(schema.snapshot_invalidations.delete())
        if backend == "postgresql":
            c.execute(sa.text("DROP TABLE IF EXISTS portfolio_snapshots_2026_08"))
        c.execute(lots.update().values(entry_date=D("2026-08-24")))  # the trigger records it from 08-24
    before = snapshots(engine)
    r = job.recompute(engine, opts=opts(dry_run=True), now=NOW)
    assert r.exit_code == 0 and r.stats["snapshots_created_by_invalidation"] == 6  # Aug 24-31
    assert snapshots(engine) == before and snapshot_dates(engine, pid)[0] == "2026-09-01"
