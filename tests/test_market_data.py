"""The nightly chain under real market data: a dead symbol never stops the night, the same
answers give the same outcome, dead symbols back off, and a late batch can be valued around."""

from __future__ import annotations

from datetime import datetime, time, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from snapshotter.config import Settings
from snapshotter.core.calendar import NEW_YORK, trading_days_between
from snapshotter.data import schema
from snapshotter.errors import BatchNotReady
from snapshotter.jobs import snapshots as job
from snapshotter.jobs.symbol_batch import run_symbol_batch
from tests.conftest import row_counts, table_rows
from tests.factories import NOW, D, add_closes, add_lot, add_portfolio, complete_symbol_batch, snapshots

WEEK = trading_days_between(D("2026-11-16"), D("2026-11-20"))


def write_prices(directory: Path, symbol: str, closes: dict) -> None:
    lines = ["date,open,high,low,close,volume"] + [f"{d},{c},{c},{c},{c},100" for d, c in sorted(closes.items())]
    (directory / f"{symbol}.csv").write_text("\n".join(lines) + "\n")


def evening(day) -> datetime:
    """21:00 New York on ``day``: after the close, the nightly run's instant."""
    return datetime.combine(day, time(21, 0), tzinfo=NEW_YORK).astimezone(timezone.utc)


def batch(engine, prices_dir: Path, **kw):
    kw.setdefault("now", NOW)
    return run_symbol_batch(engine, Settings(prices_dir=prices_dir), provider="csv", progress=False, **kw)


def refresh(engine, day, **opts):
    return job.portfolio_refresh(engine, day, job.Options(progress=False, **opts), now=NOW)


@pytest.fixture
def dead_symbol_world(engine, tmp_path):
    """AAA priced all week; ZZDL delisted (no file); p1 holds AAA, p2 holds AAA and ZZDL."""
    write_prices(tmp_path, "AAA", {d: Decimal(100 + i) for i, d in enumerate(WEEK)})
    with engine.begin() as c:
        p1, p2 = add_portfolio(c, "p1"), add_portfolio(c, "p2")
        add_lot(c, p1, "AAA", "10", "100", "2026-11-16")
        add_lot(c, p2, "AAA", "1", "100", "2026-11-16")
        add_lot(c, p2, "ZZDL", "2", "50", "2026-11-16")
    return tmp_path, p1, p2


def test_a_dead_symbol_fails_alone_and_the_night_goes_on(engine, dead_symbol_world):
    prices_dir, p1, p2 = dead_symbol_world
    r = batch(engine, prices_dir, date_from=WEEK[0], date_to=WEEK[-1])
    assert (r.status, r.exit_code, r.stats["symbols_failed"]) == ("completed", 1, ["ZZDL"])
    assert r.error == "1 of 2 symbol(s) failed: ZZDL"
    assert r.alert == "1 of 2 symbol(s) failed: ZZDL (50% of the symbols tried, threshold 10%)"
    (run,) = table_rows(engine, schema.batch_run_tracking)
    assert (run["status"], run["target_date"]) == ("completed", WEEK[-1])

    # the refresh waits for a completed batch, and it is one: every portfolio gets its week
    r = refresh(engine, WEEK[-1], wait_timeout_s=0)
    assert (r.exit_code, r.stats["snapshots_created"]) == (0, 10)
    one = {s["snapshot_date"]: s for s in snapshots(engine, p1)}
    assert [one[d]["holdings_value"] for d in WEEK] == [Decimal(10 * (100 + i)) for i in range(5)]
    assert all(not s["is_partial"] for s in one.values())
    two = snapshots(engine, p2)
    assert [(s["holdings_value"], s["total_cost"], s["position_count"], s["priced_position_count"], s["is_partial"], s["missing_symbols"])
            for s in two] == [(Decimal(100 + i), Decimal(100), 2, 1, True, "ZZDL") for i in range(5)]

    # its closes turn up (a late file): the next batch fetches them and the next refresh heals exactly those days
    write_prices(prices_dir, "ZZDL", {d: Decimal("40.5") for d in WEEK})
    r = batch(engine, prices_dir, date_from=WEEK[0], date_to=WEEK[-1])
    assert (r.status, r.exit_code, r.stats["symbols_failed"]) == ("completed", 0, [])
    r = refresh(engine, WEEK[-1], wait_timeout_s=0)
    # the late closes land on days with snapshots: recorded as invalidated history and recomputed first
    assert (r.stats["snapshots_created"], r.stats["snapshots_recomputed"] + r.stats["snapshots_recomputed_by_invalidation"]) == (0, 5)
    assert [(s["holdings_value"], s["total_cost"], s["priced_position_count"], s["is_partial"], s["missing_symbols"])
            for s in snapshots(engine, p2)] == [(Decimal(100 + i) + Decimal("81.0"), Decimal(200), 2, False, None) for i in range(5)]


def test_a_rejected_bar_is_remembered_so_an_identical_rerun_ends_the_same(engine, tmp_path):
    closes = {d: Decimal(10 + i) for i, d in enumerate(WEEK)}
    closes[WEEK[-1]] = Decimal("-4.2")  # garbage on the last day
    write_prices(tmp_path, "BBB", closes)
    night = evening(WEEK[-1])
    first = batch(engine, tmp_path, symbols="BBB", now=night)
    assert (first.status, first.exit_code, first.alert) == ("completed", 0, None)
    assert (first.stats["rows_upserted"], first.stats["rows_rejected"], first.stats["rows_rejected_new"]) == (4, 1, 1)
    (rej,) = table_rows(engine, schema.price_rejections)
    assert (rej["symbol"], rej["price_date"], rej["reason"], rej["source"], rej["times_seen"]) == (
        "BBB", WEEK[-1], "close is not positive (-4.2)", "csv", 1)

    again = batch(engine, tmp_path, symbols="BBB", now=night)
    assert (again.status, again.exit_code, again.alert) == ("completed", 0, None)
    assert (again.stats["provider_calls"], again.stats["symbols_up_to_date"], again.stats["rows_rejected"]) == (0, 1, 0)

    # the next night's overlap asks for the bad day again: the same rejection is no new failure
    closes[D("2026-11-23")] = Decimal("15")
    write_prices(tmp_path, "BBB", closes)
    nxt = batch(engine, tmp_path, symbols="BBB", now=evening(D("2026-11-23")))
    assert (nxt.exit_code, nxt.stats["rows_rejected"], nxt.stats["rows_rejected_new"], nxt.stats["symbols_failed"]) == (0, 1, 0, [])
    (rej,) = table_rows(engine, schema.price_rejections)
    assert rej["times_seen"] == 2

    # the provider corrects the bar: stored, and no longer a rejection
    closes[WEEK[-1]] = Decimal("14")
    write_prices(tmp_path, "BBB", closes)
    r = batch(engine, tmp_path, symbols="BBB", date_from=WEEK[0], date_to=D("2026-11-23"), now=evening(D("2026-11-23")))
    assert r.stats["provider_calls"] == 0  # a range run asks only for what it lacks: a rejected day is an answer
    assert len(table_rows(engine, schema.price_rejections)) == 1
    batch(engine, tmp_path, symbols="BBB", now=evening(D("2026-11-24")))  # the nightly overlap re-reads the corrected day
    assert table_rows(engine, schema.price_rejections) == []
    assert [r["close"] for r in table_rows(engine, schema.symbol_prices_daily) if r["price_date"] == WEEK[-1]] == [Decimal("14.000000")]


def test_a_dead_symbol_backs_off_and_comes_back(engine, tmp_path):
    nights = trading_days_between(D("2026-11-02"), D("2026-11-25"))
    write_prices(tmp_path, "AAA", {d: Decimal(50) for d in nights})
    with engine.begin() as c:
        p = add_portfolio(c, "p")
        add_lot(c, p, "AAA", "1", "1", "2026-10-01")
        add_lot(c, p, "ZZDL", "1", "1", "2026-10-01")

    seen = []
    for i, night in enumerate(nights):
        if night == D("2026-11-19"):
            write_prices(tmp_path, "ZZDL", {d: Decimal(7) for d in nights})  # relisted
        r = batch(engine, tmp_path, now=evening(night))
        tried = "ZZDL" not in r.stats["symbols_skipped_unavailable"]
        seen.append((night.isoformat(), tried, r.exit_code, r.stats["symbols_failed"], r.alert))
        assert r.stats["symbols_unavailable"] == (["ZZDL"] if D("2026-11-06") <= night < D("2026-11-24") else [])
        if i == 0:  # a rerun of the same night counts once
            assert batch(engine, tmp_path, now=evening(night)).exit_code == 1

    fail = "1 of 2 symbol(s) failed: ZZDL (50% of the symbols tried, threshold 10%)"
    assert seen == [
        ("2026-11-02", True, 1, ["ZZDL"], fail),
        ("2026-11-03", True, 1, ["ZZDL"], fail),
        ("2026-11-04", True, 1, ["ZZDL"], fail),
        ("2026-11-05", True, 1, ["ZZDL"], fail),
        ("2026-11-06", True, 1, ["ZZDL"], fail + "; marked unavailable (retried with a growing backoff): ZZDL"),  # 5th night
        ("2026-11-09", True, 0, [], None),  # retried after 1 trading day, fails: expected, no alert
        ("2026-11-10", False, 0, [], None),
        ("2026-11-11", True, 0, [], None),  # after 2
        ("2026-11-12", False, 0, [], None),
        ("2026-11-13", False, 0, [], None),
        ("2026-11-16", False, 0, [], None),
        ("2026-11-17", True, 0, [], None),  # after 4
        ("2026-11-18", False, 0, [], None),
        ("2026-11-19", False, 0, [], None),
        ("2026-11-20", False, 0, [], None),
        ("2026-11-23", False, 0, [], None),
        ("2026-11-24", True, 0, [], "available again: ZZDL"),  # after 5 (weekly), and its file is back
        ("2026-11-25", True, 0, [], None),
    ]
    assert table_rows(engine, schema.symbol_fetch_failures) == []


def test_symbols_and_an_explicit_range_always_try_a_dead_symbol(engine, tmp_path):
    nights = trading_days_between(D("2026-11-02"), D("2026-11-09"))
    write_prices(tmp_path, "AAA", {d: Decimal(50) for d in nights})
    with engine.begin() as c:
        p = add_portfolio(c, "p")
        add_lot(c, p, "ZZDL", "1", "1", "2026-10-01")
        add_lot(c, p, "AAA", "1", "1", "2026-10-01")
    for night in nights[:5]:
        batch(engine, tmp_path, now=evening(night))
    (dead,) = table_rows(engine, schema.symbol_fetch_failures)
    assert (dead["consecutive_failures"], dead["unavailable_since"], dead["next_attempt_on"]) == (5, D("2026-11-06"), D("2026-11-09"))
    r = batch(engine, tmp_path, symbols="ZZDL", now=evening(D("2026-11-06")))
    assert (r.stats["symbols_failed"], r.exit_code) == (["ZZDL"], 1)
    r = batch(engine, tmp_path, date_from=D("2026-11-02"), date_to=D("2026-11-06"), now=evening(D("2026-11-06")))
    assert r.stats["symbols_skipped_unavailable"] == [] and r.stats["symbols_failed"] == ["ZZDL"]
    (again,) = table_rows(engine, schema.symbol_fetch_failures)
    assert again == dead | {"last_attempt_at": again["last_attempt_at"]}  # explicit runs do not count nights


def test_on_timeout_proceed_values_the_cache_and_exits_1(engine):
    with engine.begin() as c:
        p = add_portfolio(c, "p")
        add_lot(c, p, "AAA", "2", "10", "2026-11-16")
        add_lot(c, p, "BBB", "1", "10", "2026-11-16")
        add_closes(c, "AAA", {d: Decimal(11) for d in WEEK})
        add_closes(c, "BBB", {d: Decimal(12) for d in WEEK[:-1]})  # the batch never finished BBB's last day
    counts = row_counts(engine)
    with pytest.raises(BatchNotReady):  # the default: abort, nothing written but the aborted run
        refresh(engine, WEEK[-1], wait_timeout_s=0)
    assert row_counts(engine) == {**counts, "batch_run_tracking": 1}

    r = refresh(engine, WEEK[-1], wait_timeout_s=0, on_timeout="proceed")
    assert (r.exit_code, r.stats["snapshots_created"], r.stats["symbol_batch_completed"]) == (1, 5, False)
    assert r.alert.startswith(f"symbol batch for {WEEK[-1]} not completed within 0s; valued from the cache")
    last = snapshots(engine, p)[-1]
    assert (last["snapshot_date"], last["holdings_value"], last["is_partial"], last["missing_symbols"]) == (WEEK[-1], Decimal(22), True, "BBB")
    runs = table_rows(engine, schema.batch_run_tracking, order_by=[schema.batch_run_tracking.c.id])
    assert [x["status"] for x in runs] == ["aborted", "completed"]
    assert "portfolio refresh aborted, nothing written" in runs[0]["error"] and "valued from the cache" in runs[1]["error"]

    # the batch completes later with BBB's close: the next run heals the partial day
    with engine.begin() as c:
        add_closes(c, "BBB", {WEEK[-1]: Decimal(13)})
        complete_symbol_batch(c, WEEK[-1])
    r = refresh(engine, WEEK[-1], wait_timeout_s=0)
    assert (r.exit_code, r.stats["snapshots_recomputed"] + r.stats["snapshots_recomputed_by_invalidation"]) == (0, 1)
    last = snapshots(engine, p)[-1]
    assert (last["holdings_value"], last["is_partial"]) == (Decimal(35), False)


# --- the same answers over real HTTP: Alpha Vantage and Polygon shapes ----------------------------------


AFTER_CLOSE = ("--now", "2026-11-25T02:00:00Z")  # 21:00 New York on Tuesday 2026-11-24
NOV_DAYS = trading_days_between(D("2026-11-16"), D("2026-11-24"))


@pytest.fixture
def held_aaa_bbb(engine):
    with engine.begin() as c:
        p = add_portfolio(c, "p")
        add_lot(c, p, "AAA", "1", "1", "2026-11-02")
        add_lot(c, p, "BBB", "1", "1", "2026-11-02")


def _provider_env(name: str, fake, receiver) -> dict:
    from tests.fake_providers import AV_KEY, POLY_KEY

    keys = {"alphavantage": {"ALPHAVANTAGE_API_KEY": AV_KEY, "ALPHAVANTAGE_BASE_URL": fake.url},
            "polygon": {"POLYGON_API_KEY": POLY_KEY, "POLYGON_BASE_URL": fake.url}}[name]
    return {**keys, **receiver.env, "SNAPSHOTTER_PROVIDER": name, "SNAPSHOTTER_CALLS_PER_MINUTE": "unlimited"}


@pytest.mark.parametrize("provider", ["alphavantage", "polygon"])
def test_an_identical_rerun_after_a_rejected_bar_gives_the_same_outcome_and_no_alert(
    provider, request, db_url, engine, held_aaa_bbb, receiver
):
    import json

    from tests.conftest import invoke

    fake = request.getfixturevalue("av" if provider == "alphavantage" else "poly")
    fake.add("AAA", {d: "10.5" for d in NOV_DAYS})
    fake.add("BBB", {**{d: "20.25" for d in NOV_DAYS[:-1]}, NOV_DAYS[-1]: "-1.5"})  # garbage on the target day
    env = _provider_env(provider, fake, receiver)

    outcomes = []
    for _ in range(2):
        r = invoke(*AFTER_CLOSE, "symbol-batch", "--json", db_url=db_url, env=env)
        out = json.loads(r.stdout)
        outcomes.append((r.returncode, out["status"], out["symbols_failed"], out["rows_rejected_new"]))
        if len(outcomes) == 1:
            calls_after_first = len(fake.requests)
            # two calls for the closes, then the splits of the day: one per symbol (Alpha Vantage), one in all (Polygon)
            assert (out["rows_rejected"], out["provider_calls"]) == (1, {"alphavantage": 4, "polygon": 3}[provider])
    assert outcomes == [(0, "completed", [], 1), (0, "completed", [], 0)]
    # the rejected day is an answer, and the splits were asked today: nothing asked again
    assert len(fake.requests) == calls_after_first
    assert receiver.alerts == []
    assert [h.path.rsplit("/", 1)[-1] for h in receiver.pings] == ["start", "0", "start", "0"]
    (rej,) = table_rows(engine, schema.price_rejections)
    assert (rej["symbol"], rej["price_date"], rej["source"], rej["times_seen"]) == ("BBB", NOV_DAYS[-1], provider, 1)
    assert "close is not positive (-1.5)" == rej["reason"]
    status = json.loads(invoke(*AFTER_CLOSE, "status", "--json", db_url=db_url).stdout)
    assert status["rejected_bars"]["count"] == 1 and status["rejected_bars"]["latest"][0]["symbol"] == "BBB"


def test_a_batch_completed_for_a_later_day_covers_a_refresh_of_an_earlier_one(engine):
    with engine.begin() as c:
        p = add_portfolio(c, "p")
        add_lot(c, p, "AAA", "1", "10", "2026-11-16")
        add_closes(c, "AAA", {d: Decimal(11) for d in WEEK})
        complete_symbol_batch(c, WEEK[-1])  # the batch brought the cache up to Friday
    r = refresh(engine, WEEK[-2], wait_timeout_s=0)  # Thursday: no batch row of its own
    assert (r.exit_code, r.stats["snapshots_created"]) == (0, 4)
    with pytest.raises(BatchNotReady):  # the Monday after: nothing has covered it yet
        refresh(engine, D("2026-11-23"), wait_timeout_s=0)
