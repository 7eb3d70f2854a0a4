"""symbol-batch end to end on SQLite and PostgreSQL, against Alpha Vantage/Polygon-shaped servers on 127.0.0.1.

Job tests call run_symbol_batch in-process with a fixed "now" (Tue 2026-11-24,
after the close) and a fake clock/sleep, so rate limits and retry backoff cost
no real time; CLI tests run the command in-process (conftest.invoke), and a real
process where a signal is the point.
"""

import json
import signal
import threading
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from snapshotter.data import db, schema
from snapshotter.config import Settings
from snapshotter.errors import LockHeld, Stopped, UsageError
from snapshotter.jobs.symbol_batch import LOCK_NAME, run_symbol_batch
from snapshotter.data.locks import run_lock
from snapshotter.providers.base import get_provider
from snapshotter.ops.signals import StopFlag
from snapshotter.core.calendar import trading_days_between
from tests.conftest import CliProcess, invoke, row_counts, table_rows
from tests.factories import NOV, FakeClock, add_close, add_lot, add_portfolio, closes
from tests.fake_providers import AV_BURST, AV_KEY, AV_NOTE, AV_PREMIUM, HTML, POLY_KEY, held, json_response, slow

D = date.fromisoformat
NOW = datetime(2026, 11, 24, 22, 0, tzinfo=timezone.utc)  # 17:00 New York: Tuesday's close has passed
TUE = D("2026-11-24")


def settings_for(av=None, poly=None, **kw) -> Settings:
    s = Settings(
        alphavantage_api_key=AV_KEY,
        alphavantage_base_url=av.url if av else "http://127.0.0.1:1/query",
        polygon_api_key=POLY_KEY,
        polygon_base_url=poly.url if poly else "http://127.0.0.1:1",
        provider_timeout="2",
    )
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def run(engine, provider, settings, **kw):
    clock = FakeClock()
    kw.setdefault("now", NOW)
    result = run_symbol_batch(engine, settings, provider=provider, clock=clock, sleep=clock.sleep, progress=False, **kw)
    result.sleeps = clock.sleeps
    return result


def prices(engine, symbol=None) -> list[tuple]:
    t = schema.symbol_prices_daily
    rows = table_rows(engine, t, order_by=[t.c.symbol, t.c.price_date])
    return [(r["symbol"], r["price_date"], r["close"], r["source"]) for r in rows if symbol is None or r["symbol"] == symbol]


def runs(engine) -> list[dict]:
    t = schema.batch_run_tracking
    return table_rows(engine, t, order_by=[t.c.id])


def seed_cache(engine, symbols, through: date, value="1.00"):
    with engine.begin() as c:
        for s in symbols:
            for d in trading_days_between(D("2026-11-02"), through):
                add_close(c, s, d, value)


# --- the happy paths and call counts ------------------------------------------------------------


def test_alphavantage_three_day_gap_costs_one_call_per_symbol_and_refreshes_the_overlap(engine, av):
    seed_cache(engine, ["AAPL", "MSFT"], D("2026-11-19"))  # cached 1.00 everywhere: the provider "corrected" them
    av.add("AAPL", closes("200"))
    av.add("MSFT", closes("400"))
    r = run(engine, "alphavantage", settings_for(av), symbols="AAPL,MSFT")
    assert (r.status, r.exit_code, r.error) == ("completed", 0, None)
    assert [(q["symbol"], q["outputsize"]) for q in av.requests] == [("AAPL", "compact"), ("MSFT", "compact")]
    refetched = trading_days_between(D("2026-11-13"), TUE)  # 5-day overlap + the 3 missing days
    assert len(refetched) == 8
    for sym, base in (("AAPL", "200"), ("MSFT", "400")):
        expected = [(sym, d, Decimal("1.00"), "test") for d in NOV if d < D("2026-11-13")]
        expected += [(sym, d, Decimal(base) + Decimal(d.day) / 100, "alphavantage") for d in refetched]
        assert prices(engine, sym) == expected
    s = r.stats
    assert (s["symbols_requested"], s["symbols_fetched"], s["provider_calls"], s["rows_upserted"], s["rows_rejected"]) == (2, 2, 2, 16, 0)
    assert s["symbols_failed"] == s["symbols_deferred"] == [] and s["daily_budget_left"] == 23
    (row,) = runs(engine)
    assert (row["batch_type"], row["target_date"], row["status"], row["error"]) == ("symbol_batch", TUE, "completed", None)
    assert row["finished_at"] is not None and row["heartbeat_at"] is not None
    assert row["stats"]["provider_calls"] == 2 and row["stats"]["symbols_fetched"] == 2
    # the 1.0 s spacing of the free tier, waited on the fake clock
    assert r.sleeps == [1.0]

    again = run(engine, "alphavantage", settings_for(av), symbols="AAPL,MSFT")
    assert again.exit_code == 0 and again.stats["provider_calls"] == 0 and again.stats["symbols_up_to_date"] == 2
    assert len(av.requests) == 2


def test_polygon_grouped_costs_one_call_per_day_for_all_symbols(engine, poly):
    symbols = ["AAPL", "KO", "MSFT", "SPY"]
    seed_cache(engine, symbols, D("2026-11-19"))
    for i, s in enumerate(symbols):
        poly.add(s, closes(str(100 * (i + 1))))
    r = run(engine, "polygon", settings_for(poly=poly), symbols=",".join(symbols))
    assert r.exit_code == 0 and r.status == "completed"
    assert poly.keys() == ["grouped 2026-11-20", "grouped 2026-11-23", "grouped 2026-11-24"]
    assert r.stats["provider_calls"] == 3 and r.stats["rows_upserted"] == 12 and r.stats["symbols_fetched"] == 4
    new = [p for p in prices(engine) if p[3] == "polygon"]
    assert new == [
        (s, d, Decimal(100 * (i + 1)) + Decimal(d.day) / 100, "polygon")
        for i, s in enumerate(symbols)
        for d in (D("2026-11-20"), D("2026-11-23"), TUE)
    ]
    assert not any(p[0] in ("ZZZZ", "QQQ") for p in prices(engine))  # other tickers of the day are not stored
    assert r.sleeps == [12.0, 12.0]  # 5 calls a minute, spaced evenly


def test_polygon_nightly_is_a_single_call_and_a_lone_symbol_uses_the_range_endpoint(engine, poly):
    symbols = ["AAPL", "KO", "MSFT"]
    seed_cache(engine, symbols, D("2026-11-23"))
    for s in symbols + ["NVDA"]:
        poly.add(s, closes("50"))
    r = run(engine, "polygon", settings_for(poly=poly), symbols=",".join(symbols))
    assert poly.keys() == ["grouped 2026-11-24"] and r.stats["provider_calls"] == 1 and r.exit_code == 0
    r = run(engine, "polygon", settings_for(poly=poly), symbols="NVDA", date_from=D("2026-11-16"), date_to=D("2026-11-20"))
    assert poly.keys()[1:] == ["range NVDA"]
    assert poly.requests[1]["path"].endswith("/2026-11-16/2026-11-20")
    assert [p[1] for p in prices(engine, "NVDA")] == trading_days_between(D("2026-11-16"), D("2026-11-20"))
    (_, second) = runs(engine)
    assert second["target_date"] == D("2026-11-20") and second["stats"]["mode"] == "range"


def test_symbols_come_from_open_lots_the_watchlist_and_recent_exits(engine, tmp_path):
    with engine.begin() as c:
        pid = add_portfolio(c)
        gone = add_portfolio(c, deleted=True)
        add_lot(c, pid, "OPEN", 1, 10, "2026-01-05")
        add_lot(c, pid, "RECENT", 1, 10, "2026-01-05", exit_date="2026-10-26")  # 29 days before the target
        add_lot(c, pid, "OLD", 1, 10, "2026-01-05", exit_date="2026-10-23")  # 32 days before
        add_lot(c, pid, "DELETED", 1, 10, "2026-01-05", deleted=True)
        add_lot(c, gone, "GONE", 1, 10, "2026-01-05")
        c.execute(schema.watchlist.insert().values(symbol="WATCH"))
    for s in ("OPEN", "RECENT", "WATCH", "OLD"):
        (tmp_path / f"{s}.csv").write_text("date,open,high,low,close,volume\n2026-11-24,1,1,1,1.5,10\n")
    r = run(engine, "csv", Settings(prices_dir=tmp_path))
    assert r.exit_code == 0
    assert sorted({p[0] for p in prices(engine)}) == ["OPEN", "RECENT", "WATCH"]
    assert r.stats["symbols_requested"] == 3


def test_csv_provider_fills_the_cache_from_the_sample_prices(engine):
    r = run(engine, "csv", Settings(), symbols="AAPL,SPY", date_from=D("2026-11-02"), date_to=TUE)
    assert r.exit_code == 0 and r.stats["rows_upserted"] == 34 and r.stats["provider_calls"] == 2
    assert prices(engine, "AAPL")[0] == ("AAPL", D("2026-11-02"), Decimal("252.39"), "csv")
    assert prices(engine, "SPY")[-1] == ("SPY", TUE, Decimal("874.06"), "csv")
    t = schema.symbol_prices_daily
    with engine.connect() as c:
        row = c.execute(sa.select(t).where(t.c.symbol == "AAPL", t.c.price_date == TUE)).one()
    assert (row.open, row.high, row.low, row.volume) == (Decimal("275.28"), Decimal("280.95"), Decimal("273.63"), 76017682)


def test_exact_decimals_half_even_on_both_backends(engine, av):
    av.add("IBM", {"2026-11-23": "10.1234565", "2026-11-24": "123456789.9999995"})
    r = run(engine, "alphavantage", settings_for(av), symbols="IBM", date_from=D("2026-11-23"), date_to=TUE)
    assert r.exit_code == 0
    assert [p[2] for p in prices(engine)] == [Decimal("10.123456"), Decimal("123456790.000000")]


# --- transient errors and retries -----------------------------------------------------------------


def test_throttle_note_and_burst_message_are_retried_then_stored(engine, av):
    av.add("AAPL", closes("200"))
    av.add("MSFT", closes("400"))
    av.then("AAPL", AV_NOTE)
    av.then("MSFT", AV_BURST)
    r = run(engine, "alphavantage", settings_for(av), symbols="AAPL,MSFT", date_from=D("2026-11-23"), date_to=TUE)
    assert r.exit_code == 0 and r.stats["provider_calls"] == 4 and r.stats["symbols_fetched"] == 2
    assert av.calls_for("AAPL") == av.calls_for("MSFT") == 2
    assert len(prices(engine)) == 4
    assert 1.0 in r.sleeps  # the burst message asks for one second


def test_500_then_success_and_a_slow_answer_past_the_timeout(engine, av):
    av.add("AAPL", closes("200"))
    av.add("MSFT", closes("400"))
    av.then("AAPL", json_response({"oops": 1}, 500))
    av.then("MSFT", slow(json_response(av.body("MSFT")), 1.0))
    r = run(engine, "alphavantage", settings_for(av, provider_timeout="0.25"), symbols="AAPL,MSFT", date_from=TUE, date_to=TUE)
    assert r.exit_code == 0 and r.status == "completed"
    assert r.stats["provider_calls"] == 4
    assert [p[:3] for p in prices(engine)] == [("AAPL", TUE, Decimal("200.24")), ("MSFT", TUE, Decimal("400.24"))]


def test_429_honours_retry_after_and_backs_off_without_it(engine, poly):
    poly.add("AAPL", closes("200"))
    limited = {"status": "ERROR", "request_id": "x", "error": "You've exceeded the maximum requests per minute"}
    poly.then("range AAPL", json_response(limited, 429, {"Retry-After": "7"}), json_response(limited, 429))
    s = settings_for(poly=poly, calls_per_minute="unlimited")
    r = run(engine, "polygon", s, symbols="AAPL", date_from=TUE, date_to=TUE)
    assert r.exit_code == 0 and r.stats["provider_calls"] == 3
    assert r.sleeps[0] == 7.0
    assert 2.0 <= r.sleeps[1] <= 6.0  # exponential backoff (2 s, then 4 s) plus up to 2 s of jitter


def test_a_symbol_that_keeps_failing_is_recorded_and_the_others_go_on(engine, av):
    av.add("AAPL", closes("200"))
    av.add("MSFT", closes("400"))
    av.then("BAD", *[json_response({}, 503)] * 3)
    r = run(engine, "alphavantage", settings_for(av), symbols="AAPL,BAD,MSFT", date_from=TUE, date_to=TUE)
    assert (r.status, r.exit_code) == ("completed", 1)  # the batch went through every symbol
    assert r.stats["symbols_failed"] == ["BAD"] and r.stats["symbols_fetched"] == 2
    assert "HTTP 503" in r.stats["failures"]["BAD"]
    assert av.calls_for("BAD") == 3  # bounded attempts
    (row,) = runs(engine)
    assert row["status"] == "completed" and row["stats"]["symbols_failed"] == ["BAD"] and "1 of 3 symbol(s) failed: BAD" in row["error"]


def test_an_unreachable_provider_stops_after_three_calls_and_exits_69(engine):
    s = settings_for(provider_timeout="0.5")  # nothing listens on 127.0.0.1:1
    r = run(engine, "alphavantage", s, symbols="A,B,C,D,E", date_from=TUE, date_to=TUE)
    assert (r.status, r.exit_code) == ("failed", 69)
    assert r.stats["symbols_failed"] == ["A", "B", "C"] and r.stats["symbols_deferred"] == ["D", "E"]
    assert r.stats["provider_calls"] == 9


# --- unusable data -------------------------------------------------------------------------------------


def test_unknown_symbol_truncated_json_and_html_fail_only_their_symbol(engine, av):
    av.add("AAPL", closes("200"))
    av.then("TRUNC", json_response('{"Meta Data": {"2. Symbol": "TRUNC"}, "Time Series (Daily)": {"2026-11-24": {"4. cl'))
    av.then("HTML", json_response(HTML))
    r = run(engine, "alphavantage", settings_for(av), symbols="AAPL,HTML,NOPE,TRUNC", date_from=TUE, date_to=TUE)
    assert (r.status, r.exit_code) == ("completed", 1)  # the batch went through every symbol
    assert r.stats["symbols_failed"] == ["HTML", "NOPE", "TRUNC"]
    f = r.stats["failures"]
    assert "HTML page" in f["HTML"] and "Invalid API call" in f["NOPE"] and "not valid JSON" in f["TRUNC"]
    assert [p[0] for p in prices(engine)] == ["AAPL"]
    assert av.calls_for("HTML") == av.calls_for("NOPE") == av.calls_for("TRUNC") == 1  # not retried


def test_only_bad_data_exits_65(engine, av):
    av.then("TRUNC", json_response("{"))
    r = run(engine, "alphavantage", settings_for(av), symbols="TRUNC", date_from=TUE, date_to=TUE)
    assert (r.status, r.exit_code) == ("failed", 65)


def test_bad_rows_are_rejected_and_the_good_ones_stored(engine, av):
    body = av.body("IBM", {D("2026-11-20"): "10.00", D("2026-11-23"): "-4.20", D("2026-11-24"): "11.00"})
    series = body["Time Series (Daily)"]
    series["2026-11-24"]["4. close"] = None  # a null close
    series["2026-11-25"] = {"4. close": "12.00"}  # the future (NOW is the 24th)
    series["2026-11-21"] = {"4. close": "12.00"}  # a Saturday
    av.then("IBM", body)
    r = run(engine, "alphavantage", settings_for(av), symbols="IBM", date_from=D("2026-11-20"), date_to=TUE)
    assert r.exit_code == 0 and r.status == "completed"
    assert r.stats["rows_rejected"] == 4 and r.stats["rows_upserted"] == 1
    assert prices(engine) == [("IBM", D("2026-11-20"), Decimal("10.00"), "alphavantage")]
    assert r.stats["symbols_no_data"] == ["IBM"]  # nothing usable for the last day asked for


def test_a_response_whose_rows_are_all_bad_fails_the_symbol(engine, av):
    av.then("IBM", av.body("IBM", {D("2026-11-23"): "-1", D("2026-11-24"): "0"}))
    r = run(engine, "alphavantage", settings_for(av), symbols="IBM", date_from=D("2026-11-23"), date_to=TUE)
    assert (r.exit_code, r.stats["symbols_failed"]) == (65, ["IBM"])
    assert "every row was rejected" in r.stats["failures"]["IBM"]
    assert prices(engine) == []


def test_polygon_grouped_null_and_negative_closes_are_rejected_per_symbol(engine, poly):
    symbols = ["AAPL", "KO", "MSFT", "SPY"]
    seed_cache(engine, symbols, D("2026-11-19"))
    for s in symbols:
        poly.add(s, closes("10"))
    poly.series["KO"][TUE] = "null"
    poly.series["SPY"][D("2026-11-23")] = "-3"
    r = run(engine, "polygon", settings_for(poly=poly), symbols=",".join(symbols))
    assert r.exit_code == 0 and r.stats["provider_calls"] == 3
    assert r.stats["rows_rejected"] == 2 and r.stats["rows_upserted"] == 10
    assert r.stats["symbols_no_data"] == ["KO"]
    assert (D("2026-11-23") not in [p[1] for p in prices(engine, "SPY") if p[3] == "polygon"])


# --- quota, refusal, signals, lock -----------------------------------------------------------------


def test_provider_quota_stops_cleanly_defers_the_rest_and_exits_75(engine, av):
    for s in ("A", "B", "C", "D"):
        av.add(s, closes("10"))
    av.quota_after = 2
    r = run(engine, "alphavantage", settings_for(av), symbols="A,B,C,D", date_from=TUE, date_to=TUE)
    assert (r.status, r.exit_code) == ("aborted", 75)
    assert r.stats["symbols_fetched"] == 2 and r.stats["symbols_deferred"] == ["C", "D"] and r.stats["symbols_failed"] == []
    assert len(av.requests) == 3  # the third answer was the quota message: not retried
    assert [p[0] for p in prices(engine)] == ["A", "B"]
    (row,) = runs(engine)
    assert row["status"] == "aborted" and row["stats"]["symbols_deferred"] == ["C", "D"]
    assert AV_KEY not in row["error"] and "25 requests per day" in row["error"]


def test_daily_budget_stop_counts_earlier_runs_today(engine, av):
    for s in ("A", "B", "C", "D"):
        av.add(s, closes("10"))
    s = settings_for(av, calls_per_day="3")
    r = run(engine, "alphavantage", s, symbols="A,B,C,D", date_from=TUE, date_to=TUE)
    assert (r.status, r.exit_code) == ("aborted", 75)
    assert r.stats["symbols_deferred"] == ["D"] and r.stats["provider_calls"] == 3 and r.stats["daily_budget_left"] == 0
    assert len(av.requests) == 3  # stopped before asking, not after a refusal
    r = run(engine, "alphavantage", s, symbols="D", date_from=TUE, date_to=TUE)
    assert (r.exit_code, r.stats["provider_calls"], r.stats["symbols_deferred"]) == (75, 0, ["D"])
    assert len(av.requests) == 3
    assert [row["status"] for row in runs(engine)] == ["aborted", "aborted"]


def test_premium_refusal_aborts_with_78(engine, av):
    av.add("A", closes("10"))
    av.then("B", AV_PREMIUM)
    r = run(engine, "alphavantage", settings_for(av), symbols="A,B,C", date_from=D("2025-01-02"), date_to=TUE)
    assert (r.status, r.exit_code) == ("aborted", 78)
    assert [q["outputsize"] for q in av.requests] == ["full", "full"]
    assert r.stats["symbols_deferred"] == ["B", "C"] and "premium feature" in r.error


def test_polygon_403_aborts_with_78(engine, poly):
    poly.then("grouped 2026-11-24", json_response({"status": "NOT_AUTHORIZED", "message": "upgrade your plan"}, 403))
    symbols = ["A", "B", "C"]
    seed_cache(engine, symbols, D("2026-11-23"))
    r = run(engine, "polygon", settings_for(poly=poly), symbols=",".join(symbols))
    assert (r.status, r.exit_code) == ("aborted", 78) and r.stats["symbols_deferred"] == symbols


def test_sigterm_finishes_the_symbol_in_flight_then_marks_the_run_interrupted(engine, av):
    for s in ("A", "B", "C"):
        av.add(s, closes("10"))
    stop = StopFlag()
    provider = get_provider("alphavantage", settings_for(av))
    real = provider.daily_closes

    def fetch_then_signal(*a, **kw):
        bars = real(*a, **kw)
        stop.request(15)  # SIGTERM arrives while A is being fetched
        return bars

    provider.daily_closes = fetch_then_signal
    with pytest.raises(Stopped) as info:
        run(engine, provider, settings_for(av), symbols="A,B,C", date_from=TUE, date_to=TUE, stop=stop)
    assert info.value.exit_code == 143
    assert [p[0] for p in prices(engine)] == ["A"]
    (row,) = runs(engine)
    assert row["status"] == "interrupted" and row["stats"]["symbols_fetched"] == 1


def test_a_second_batch_on_the_same_database_exits_75(engine, av):
    with run_lock(engine, LOCK_NAME):
        with pytest.raises(LockHeld):
            run(engine, "alphavantage", settings_for(av), symbols="A", date_from=TUE, date_to=TUE)
    assert runs(engine) == [] and av.requests == []


def test_bad_arguments_raise_before_anything_is_written(engine):
    for kw in (
        dict(target_date=D("2026-11-25")),  # not closed yet at NOW
        dict(date_from=TUE),
        dict(date_from=TUE, date_to=D("2026-11-20")),
        dict(target_date=TUE, date_from=TUE, date_to=TUE),
        dict(symbols=" , "),
        dict(symbols="A/B"),
    ):
        with pytest.raises(UsageError):
            run(engine, "csv", Settings(), **kw)
    assert row_counts(engine)["batch_run_tracking"] == 0


# --- the command as cron runs it ------------------------------------------------------------------------


def test_cli_csv_nightly_json_summary_then_nothing_to_do(db_url, engine):
    assert invoke("load", "--sample", db_url=db_url).returncode == 0
    r = invoke("symbol-batch", "--date", "2026-11-24", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["status"], out["exit_code"], out["provider"], out["symbols_requested"]) == ("completed", 0, "csv", 9)
    assert out["rows_upserted"] == 9 * 90 == row_counts(engine)["symbol_prices_daily"]
    for key in ("symbols_fetched", "symbols_failed", "symbols_deferred", "rows_upserted", "rows_rejected", "provider_calls", "duration_s"):
        assert key in out
    r = invoke("symbol-batch", "--date", "2026-11-24", "--json", db_url=db_url)
    assert json.loads(r.stdout)["provider_calls"] == 0
    assert [row["status"] for row in runs(engine)] == ["completed", "completed"]


def test_cli_alphavantage_quota_exit_75_alerts_and_never_prints_the_key(db_url, engine, av, server):
    for s in ("A", "B", "C"):
        av.add(s, closes("10"))
    av.quota_after = 1
    alerts = []
    server.expect_request("/hook", method="POST").respond_with_handler(lambda req: (alerts.append(req.get_json()), json_response({}))[1])
    env = {"ALPHAVANTAGE_API_KEY": AV_KEY, "ALPHAVANTAGE_BASE_URL": av.url, "SNAPSHOTTER_CALLS_PER_MINUTE": "6000",
           "ALERT_WEBHOOK_URL": server.url_for("/hook")}
    r = invoke("--log-level", "debug", "symbol-batch", "--provider", "alphavantage", "--symbols", "A,B,C",
                "--from", "2026-11-23", "--to", "2026-11-24", "--json", db_url=db_url, env=env)
    assert r.returncode == 75, r.stderr
    out = json.loads(r.stdout)
    assert out["symbols_deferred"] == ["B", "C"] and out["status"] == "aborted"
    assert AV_KEY not in r.stdout + r.stderr
    assert [l for l in r.stderr.splitlines() if l.startswith("snapshotter: error:")][0].startswith("snapshotter: error: daily quota exhausted")
    (alert,) = alerts
    assert alert["text"].startswith("symbol-batch 2026-11-24 exited 75: daily quota exhausted, 2 symbol(s) deferred")
    assert AV_KEY not in json.dumps(alert)


def test_cli_polygon_grouped_plus_one_range_partial_failure_exits_1(db_url, engine, poly):
    symbols = ["A", "B", "C", "D"]
    seed_cache(engine, symbols, D("2026-11-20"))
    for s in symbols[:3]:
        poly.add(s, closes("10"))  # D is not traded: no data, not a failure
    poly.then("range E", json_response(HTML))  # E has no cache: its own range call, answered with a web page
    env = {"POLYGON_API_KEY": POLY_KEY, "POLYGON_BASE_URL": poly.url, "SNAPSHOTTER_CALLS_PER_MINUTE": "6000", "SNAPSHOTTER_PROVIDER": "polygon"}
    r = invoke("symbol-batch", "--date", "2026-11-24", "--symbols", "A,B,C,D,E", "--json", db_url=db_url, env=env)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert poly.keys() == ["grouped 2026-11-23", "grouped 2026-11-24", "range E"]
    assert (out["provider_calls"], out["rows_upserted"], out["symbols_fetched"]) == (3, 6, 4)
    assert out["symbols_failed"] == ["E"] and out["symbols_no_data"] == ["D"] and out["status"] == "completed"
    assert [row["status"] for row in runs(engine)] == ["completed"]
    assert POLY_KEY not in r.stdout + r.stderr


def test_cli_settings_as_options_instead_of_environment(db_url, engine, poly, tmp_path):
    """SPEC: each setting is an environment variable and also a command-line option."""
    seed_cache(engine, ["A", "B"], D("2026-11-23"))
    for s in ("A", "B"):
        poly.add(s, closes("10"))
    r = invoke("--polygon-api-key", POLY_KEY, "--polygon-base-url", poly.url, "--log-level", "debug",
                "symbol-batch", "--provider", "polygon", "--date", "2026-11-24", "--symbols", "A,B", "--json",
                db_url=db_url, env={"SNAPSHOTTER_CALLS_PER_MINUTE": "6000"})
    assert r.returncode == 0, r.stderr
    assert poly.keys() == ["grouped 2026-11-24"]
    assert [p for p in prices(engine) if p[1] == TUE] == [("A", TUE, Decimal("10.24"), "polygon"), ("B", TUE, Decimal("10.24"), "polygon")]
    assert POLY_KEY not in r.stdout + r.stderr
    (tmp_path / "Z.csv").write_text("date,open,high,low,close,volume\n2026-11-24,1,1,1,7.5,10\n")
    r = invoke("--prices-dir", str(tmp_path), "symbol-batch", "--symbols", "Z", "--from", "2026-11-24", "--to", "2026-11-24", db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert prices(engine, "Z") == [("Z", TUE, Decimal("7.5"), "csv")]


@pytest.mark.parametrize(
    "args",
    [
        ["--date", "2026-02-30"],
        ["--date", "tomorrow"],
        ["--from", "2026-11-20"],
        ["--to", "2026-11-20"],
        ["--from", "2026-11-20", "--to", "2026-11-02"],
        ["--date", "2999-01-04"],
        ["--date", "2026-11-20", "--from", "2026-11-02", "--to", "2026-11-20"],
        ["--symbols", ","],
    ],
)
def test_cli_bad_arguments_exit_64_and_write_nothing(tmp_path, args):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    r = invoke("symbol-batch", *args, db_url=url)
    assert r.returncode == 64, r.stderr
    assert len([l for l in r.stderr.splitlines() if l.startswith("snapshotter: error:")]) == 1
    assert not (tmp_path / "x.db").exists()


def test_cli_missing_key_exits_78_and_help_lists_the_command(tmp_path):
    r = invoke("symbol-batch", "--provider", "polygon", db_url=f"sqlite:///{tmp_path / 'x.db'}")
    assert r.returncode == 78 and "POLYGON_API_KEY" in r.stderr
    assert not (tmp_path / "x.db").exists()
    r = invoke("symbol-batch", "--help")
    assert r.returncode == 0 and "--symbols" in r.stdout and "--from" in r.stdout


@pytest.mark.slow  # a real process
def test_cli_sigterm_stores_the_symbol_in_flight_and_exits_143(tmp_path, av, server):
    """A real process stopped while A's answer is on its way: A is stored, nothing after it is asked for."""
    arrived = threading.Event()
    for s in ("A", "B", "C", "D"):
        av.add(s, closes("10"))
    av.then("A", held(json_response(av.body("A")), arrived, server.release))
    url = f"sqlite:///{tmp_path / 'x.db'}"
    env = dict(ALPHAVANTAGE_API_KEY=AV_KEY, ALPHAVANTAGE_BASE_URL=av.url, SNAPSHOTTER_CALLS_PER_MINUTE="6000")
    with CliProcess("symbol-batch", "--provider", "alphavantage", "--symbols", "A,B,C,D", "--date", "2026-11-24",
                    db_url=url, env=env) as child:
        assert arrived.wait(60), "A's request never reached the provider"
        child.send_signal(signal.SIGTERM)  # the child waits for A's answer, held back until:
        server.release.set()
        r = child.finish()
    assert r.returncode == 143, r.stderr
    assert [av.calls_for(s) for s in ("A", "B", "C", "D")] == [1, 0, 0, 0]
    engine = db.connect(url)
    try:
        assert {p[0] for p in prices(engine)} == {"A"}
        (row,) = runs(engine)
        assert row["status"] == "interrupted" and row["stats"]["symbols_fetched"] == 1
    finally:
        engine.dispose()
