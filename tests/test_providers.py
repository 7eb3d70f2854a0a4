"""Providers against real HTTP on 127.0.0.1: parsing, error classification, secrets, and bar validation."""

import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path

import pytest

from snapshotter.config import SAMPLE_PRICES_DIR, Settings
from snapshotter.errors import (
    BadProviderData,
    ConfigError,
    ExitCode,
    ProviderRefused,
    QuotaExhausted,
    RateLimited,
    SymbolNotFound,
    TransientProviderError,
)
from snapshotter.core.bars import Bar
from snapshotter.providers.base import get_provider
from snapshotter.providers.http import retry_after_seconds
from snapshotter.core.validation import validate
from tests.fake_providers import AV_BURST, AV_ERROR, AV_KEY, AV_NOTE, AV_PREMIUM, AV_QUOTA, HTML, POLY_KEY, json_response, slow

D = date.fromisoformat
A, B = D("2026-11-20"), D("2026-11-24")


def av_provider(fake, timeout="2"):
    return get_provider("alphavantage", Settings(alphavantage_api_key=AV_KEY, alphavantage_base_url=fake.url, provider_timeout=timeout))


def poly_provider(fake, timeout="2"):
    return get_provider("polygon", Settings(polygon_api_key=POLY_KEY, polygon_base_url=fake.url, provider_timeout=timeout))


# --- Alpha Vantage ----------------------------------------------------------------------


def test_alphavantage_parses_time_series_exactly(av):
    av.add("IBM", {"2026-11-20": "189.9850", "2026-11-23": "190.10", "2026-11-24": "191.000001"})
    p = av_provider(av)
    bars = p.daily_closes("IBM", A, B, size="compact")
    assert sorted((b.price_date, b.close) for b in bars) == [
        (D("2026-11-20"), Decimal("189.9850")),
        (D("2026-11-23"), Decimal("190.10")),
        (D("2026-11-24"), Decimal("191.000001")),
    ]
    assert all(isinstance(b.close, Decimal) and b.volume == Decimal(1000) for b in bars)
    assert av.requests == [{"symbol": "IBM", "outputsize": "compact", "apikey": AV_KEY, "function": "TIME_SERIES_DAILY"}]


@pytest.mark.parametrize(
    "body, error, text",
    [
        (AV_NOTE, RateLimited, "throttled"),
        (AV_BURST, RateLimited, "per second"),
        (AV_QUOTA, QuotaExhausted, "25 requests per day"),
        (AV_PREMIUM, ProviderRefused, "premium feature"),
        (AV_ERROR, SymbolNotFound, "Invalid API call"),
        ({"Information": "Something new happened."}, BadProviderData, "unexpected Information"),
        ({"Meta Data": {"2. Symbol": "IBM"}}, BadProviderData, re.escape("no 'Time Series (Daily)'")),
        ([1, 2, 3], BadProviderData, "expected a JSON object"),
    ],
)
def test_alphavantage_http_200_bodies_are_classified_never_data(av, body, error, text):
    av.then("IBM", body)
    p = av_provider(av)
    with pytest.raises(error, match=text) as info:
        p.daily_closes("IBM", A, B, size="full")
    assert AV_KEY not in str(info.value)


def test_quota_message_carries_the_key_and_it_is_redacted(av):
    av.then("IBM", AV_QUOTA)
    with pytest.raises(QuotaExhausted) as info:
        av_provider(av).daily_closes("IBM", A, B)
    assert AV_KEY not in str(info.value) and "***" in str(info.value)
    assert info.value.exit_code == ExitCode.TEMPFAIL


def test_burst_throttle_asks_for_a_one_second_wait(av):
    av.then("IBM", AV_BURST)
    with pytest.raises(RateLimited) as info:
        av_provider(av).daily_closes("IBM", A, B)
    assert info.value.retry_after == 1.0


def test_a_bad_key_is_a_refusal_not_an_unknown_symbol(av):
    p = get_provider("alphavantage", Settings(alphavantage_api_key="wrong-key", alphavantage_base_url=av.url))
    with pytest.raises(ProviderRefused, match="apikey is invalid"):
        p.daily_closes("IBM", A, B)


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"Meta Data": {"2. Symbol": "IBM"}, "Time Series (Daily)": {"2026-11-24": {"4. close": "1', "not valid JSON"),
        (HTML, "an HTML page"),
        ("", "not valid JSON"),
    ],
)
def test_truncated_json_and_html_on_200_are_bad_data(av, text, match):
    av.then("IBM", json_response(text))
    with pytest.raises(BadProviderData, match=match):
        av_provider(av).daily_closes("IBM", A, B)


def test_a_response_for_another_symbol_is_bad_data(av):
    av.add("MSFT", {"2026-11-24": "400"})
    av.then("IBM", av.body("MSFT"))
    with pytest.raises(BadProviderData, match="for 'MSFT'"):
        av_provider(av).daily_closes("IBM", A, B)


def test_duplicate_dates_in_the_json_object_both_reach_validation(av):
    raw = (
        '{"Meta Data": {"2. Symbol": "IBM"}, "Time Series (Daily)": {'
        '"2026-11-24": {"4. close": "10.00"}, "2026-11-24": {"4. close": "11.00"}, "2026-11-23": {"4. close": "9.50"}}}'
    )
    av.then("IBM", json_response(raw))
    bars = av_provider(av).daily_closes("IBM", A, B)
    assert len(bars) == 3
    rows, rejected = validate(bars, A, B, B)
    assert [r["price_date"] for r in rows] == [D("2026-11-23")]
    assert [(r.price_date, r.reason) for r in rejected] == [(B, "date 2026-11-24 appears 2 times")] * 2


# --- HTTP failures (shared by both HTTP providers) --------------------------------------


def test_http_500_and_timeouts_are_transient(av):
    av.add("IBM", {"2026-11-24": "1"})
    av.then("IBM", json_response({"x": 1}, 500), slow(json_response(av.body("IBM")), 1.0))
    p = av_provider(av, timeout="0.2")
    with pytest.raises(TransientProviderError, match="HTTP 500"):
        p.daily_closes("IBM", A, B)
    with pytest.raises(TransientProviderError, match="timed out"):
        p.daily_closes("IBM", A, B)
    assert len(p.daily_closes("IBM", A, B)) == 1


def test_unreachable_host_is_transient():
    p = get_provider("polygon", Settings(polygon_api_key=POLY_KEY, polygon_base_url="http://127.0.0.1:1", provider_timeout="1"))
    with pytest.raises(TransientProviderError, match="ConnectError"):
        p.grouped_closes(B)


def test_429_with_and_without_retry_after(poly):
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    poly.then(f"grouped {B}", json_response({"status": "ERROR", "error": "exceeded"}, 429, {"Retry-After": "7"}))
    poly.then(f"grouped {B}", json_response({"status": "ERROR", "error": "exceeded"}, 429, {"Retry-After": when}))
    poly.then(f"grouped {B}", json_response({"status": "ERROR", "error": "exceeded"}, 429))
    p = poly_provider(poly)
    waits = []
    for _ in range(3):
        with pytest.raises(RateLimited) as info:
            p.grouped_closes(B)
        waits.append(info.value.retry_after)
    assert waits[0] == 7.0 and 25 <= waits[1] <= 30 and waits[2] is None


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_refusals(poly, status):
    body = {"status": "NOT_AUTHORIZED", "request_id": "x", "message": "You are not entitled to this data. Please upgrade your plan."}
    poly.then(f"range IBM", json_response(body, status))
    with pytest.raises(ProviderRefused, match=f"HTTP {status}") as info:
        poly_provider(poly).daily_closes("IBM", A, B)
    assert info.value.exit_code == ExitCode.CONFIG


def test_retry_after_parsing():
    now = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("12", now) == 12.0
    assert retry_after_seconds("Tue, 24 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Tue, 24 Nov 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None) is None


# --- Polygon ------------------------------------------------------------------------------


def test_polygon_range_uses_a_bearer_header_and_new_york_dates(poly):
    poly.add("AAPL", {"2026-11-20": "228.97", "2026-11-23": "230.14", "2026-11-24": "236.54"})
    bars = poly_provider(poly).daily_closes("AAPL", A, B)
    assert [(b.price_date, b.close) for b in bars] == [(A, Decimal("228.97")), (D("2026-11-23"), Decimal("230.14")), (B, Decimal("236.54"))]
    (req,) = poly.requests
    assert req["auth"] == f"Bearer {POLY_KEY}"
    assert POLY_KEY not in req["path"] and POLY_KEY not in str(req["args"])
    assert req["args"] == {"adjusted": "false", "sort": "asc", "limit": "50000"}
    assert req["path"] == "/v2/aggs/ticker/AAPL/range/1/day/2026-11-20/2026-11-24"


def test_polygon_grouped_returns_every_ticker_of_the_day(poly):
    poly.add("AAPL", {"2026-11-24": "236.54"})
    poly.add("MSFT", {"2026-11-24": "480.1"})
    bars = poly_provider(poly).grouped_closes(B)
    assert {b.symbol: b.close for b in bars} == {"AAPL": Decimal("236.54"), "MSFT": Decimal("480.1"), "ZZZZ": Decimal("1.5"), "QQQ": Decimal("500.25")}
    assert {b.price_date for b in bars} == {B}
    assert poly.keys() == [f"grouped {B}"]
    assert poly.requests[0]["args"] == {"adjusted": "false"}  # closes as traded, not split-adjusted


def test_polygon_split_adjusted_answer_is_bad_data_not_closes(poly):
    """One price basis: an answer that says adjusted=true would rewrite every pre-split close."""
    poly.then("range AAPL", {"ticker": "AAPL", "adjusted": True, "status": "OK", "results": [{"c": 5, "t": 1795928400000}]})
    with pytest.raises(BadProviderData, match="split-adjusted"):
        poly_provider(poly).daily_closes("AAPL", A, B)


def test_polygon_no_results_is_no_data_and_odd_statuses_are_classified(poly):
    p = poly_provider(poly)
    assert p.daily_closes("NOPE", A, B) == []
    assert p.grouped_closes(D("2026-11-26")) == []  # Thanksgiving: OK, resultsCount 0
    poly.then("range IBM", {"status": "ERROR", "request_id": "x", "error": "bad"})
    poly.then("range IBM", {"status": "OK", "results": {"c": 1}})
    poly.then("range IBM", {"status": "NOT_AUTHORIZED", "message": "plan"})
    poly.then("range IBM", {"ticker": "MSFT", "status": "OK", "results": []})
    poly.then("range IBM", {"status": "DELAYED", "ticker": "IBM", "results": [{"c": 5, "t": 1795928400000}]})
    with pytest.raises(BadProviderData, match="status ERROR"):
        p.daily_closes("IBM", A, B)
    with pytest.raises(BadProviderData, match="not a list"):
        p.daily_closes("IBM", A, B)
    with pytest.raises(ProviderRefused):
        p.daily_closes("IBM", A, B)
    with pytest.raises(BadProviderData, match="for 'MSFT'"):
        p.daily_closes("IBM", A, B)
    (bar,) = p.daily_closes("IBM", A, B)
    assert bar.close == 5


def test_polygon_404_is_an_unknown_symbol(poly):
    poly.then("range IBM", json_response({"status": "NOT_FOUND"}, 404))
    with pytest.raises(SymbolNotFound):
        poly_provider(poly).daily_closes("IBM", A, B)


# --- csv and the registry -----------------------------------------------------------------


def test_csv_provider_reads_the_sample_prices():
    p = get_provider("csv", Settings())
    bars = p.daily_closes("AAPL", D("2025-11-24"), D("2025-11-26"))
    assert [(b.price_date, b.close, b.volume) for b in bars] == [
        (D("2025-11-24"), Decimal("229.54"), Decimal("37913810")),
        (D("2025-11-25"), Decimal("228.97"), Decimal("33868828")),
        (D("2025-11-26"), Decimal("230.14"), Decimal("74197857")),
    ]
    assert p.directory == SAMPLE_PRICES_DIR


def test_csv_provider_errors(tmp_path: Path):
    (tmp_path / "BAD.csv").write_text("day,price\n2026-11-24,1\n")
    p = get_provider("csv", Settings(prices_dir=tmp_path))
    with pytest.raises(SymbolNotFound):
        p.daily_closes("NOPE", A, B)
    with pytest.raises(SymbolNotFound):
        p.daily_closes("../etc/passwd", A, B)
    with pytest.raises(BadProviderData, match="header"):
        p.daily_closes("BAD", A, B)


def test_registry_needs_keys_and_known_names():
    with pytest.raises(ConfigError, match="ALPHAVANTAGE_API_KEY"):
        get_provider("alphavantage", Settings())
    with pytest.raises(ConfigError, match="POLYGON_API_KEY"):
        get_provider("polygon", Settings())
    with pytest.raises(ConfigError, match="unknown provider 'yahoo'"):
        get_provider("yahoo", Settings())
    with pytest.raises(ConfigError, match="SNAPSHOTTER_PROVIDER_TIMEOUT"):
        get_provider("polygon", Settings(polygon_api_key=POLY_KEY, provider_timeout="soon"))
    assert get_provider(None, Settings(provider="csv")).name == "csv"


# --- validation -----------------------------------------------------------------------------


def bar(day, close, **kw):
    return Bar("IBM", D(day) if isinstance(day, str) else day, None if close is None else Decimal(close), **kw)


def test_validation_rejects_bad_rows_with_reasons_and_quantizes_half_even():
    bars = [
        bar("2026-11-20", "10.1234565"),  # half-even to 10.123456
        bar("2026-11-23", "-1.00"),
        bar("2026-11-24", None),
        bar("2026-11-21", "5"),  # Saturday
        bar("2026-11-25", "5"),  # after "today"
        bar("2026-11-19", "5"),  # outside the range: ignored, not an error
        Bar("IBM", None, Decimal("5")),
        bar("2026-11-24", "NaN"),
        bar("2026-11-24", "Infinity"),
        bar("2026-11-20", "1", volume=Decimal("-3")),
        bar("2026-11-20", "1e20"),
        bar("2026-11-20", "0.0000001"),
    ]
    rows, rejected = validate(bars, A, B, B)
    assert rows == []  # 2026-11-20 appears 4 times and 2026-11-24 3 times: every copy rejected
    assert len(rejected) == 11
    rows, rejected = validate(bars[:7], A, B, B)
    assert [(r["price_date"], r["close"]) for r in rows] == [(A, Decimal("10.123456"))]
    reasons = [r.reason for r in rejected]
    assert reasons == [
        "close is not positive (-1.00)",
        "close is missing",
        "2026-11-21 is not an NYSE trading day",
        "date 2026-11-25 is in the future",
        "date is missing or not a date",
    ]


def test_validation_ranges_and_volumes():
    rows, rejected = validate([bar("2026-11-24", "1e20")], A, B, B)
    assert rejected[0].reason.startswith("close is out of range")
    rows, rejected = validate([bar("2026-11-24", "0.0000001")], A, B, B)
    assert rejected[0].reason.startswith("close is out of range")
    rows, rejected = validate([bar("2026-11-24", "2", open=Decimal("0"))], A, B, B)
    assert rejected[0].reason == "open is not positive (0)"
    rows, rejected = validate([bar("2026-11-24", "2", volume=Decimal("12.5"))], A, B, B)
    assert "volume" in rejected[0].reason
    rows, rejected = validate([bar("2026-11-24", "2", volume=Decimal("7.0E+7"))], A, B, B)
    assert rows[0]["volume"] == 70_000_000 and not rejected


# --- splits ----------------------------------------------------------------------------------


def all_pages(provider, symbols, since):
    """Every page, following the cursors, as the batch does (one call each)."""
    pages, cursor = [], None
    while True:
        page = provider.splits(symbols, since, cursor)
        pages.append(page)
        if page.next is None:
            return pages
        cursor = page.next


def split_event(ticker, day, frm, to):
    return {"execution_date": day, "id": f"E{ticker}{day}", "split_from": Decimal(frm), "split_to": Decimal(to), "ticker": ticker}


def test_polygon_splits_are_paged_by_next_url_with_the_bearer_header_only(poly):
    poly.split_events = [
        split_event("NVDA", "2024-06-10", "1", "10"),
        split_event("ZZZZ", "2025-01-02", "1", "2"),  # not asked for
        split_event("AAA", "2026-11-20", "1", "4"),
        split_event("CCC", "2026-11-23", "20", "1"),
        split_event("OLD", "2020-01-02", "1", "2"),  # before since: filtered by the server
        split_event("AAA", "2027-01-04", "1.5", "1"),  # announced
    ]
    poly.splits_page = 2
    pages = all_pages(poly_provider(poly), ["AAA", "CCC", "NVDA"], D("2024-01-01"))
    assert [[(s.symbol, s.ex_date, s.split_from, s.split_to) for s in p.splits] for p in pages] == [
        [("NVDA", D("2024-06-10"), Decimal(1), Decimal(10))],
        [("AAA", D("2026-11-20"), Decimal(1), Decimal(4)), ("CCC", D("2026-11-23"), Decimal(20), Decimal(1))],
        [("AAA", D("2027-01-04"), Decimal("1.5"), Decimal(1))],
    ]
    assert [p.covered for p in pages] == [(), (), ("AAA", "CCC", "NVDA")]  # only once every page is in
    assert [r["path"] for r in poly.requests] == ["/v3/reference/splits"] * 3
    assert [r["args"] for r in poly.requests] == [
        {"execution_date.gte": "2024-01-01", "sort": "execution_date", "order": "asc", "limit": "1000"},
        {"cursor": "2024-01-01:2:2"},
        {"cursor": "2024-01-01:4:2"},
    ]
    assert {r["auth"] for r in poly.requests} == {f"Bearer {POLY_KEY}"}


def test_polygon_splits_errors_are_classified(poly):
    poly.then("splits", {"status": "ERROR", "error": "bad"})
    poly.then("splits", {"status": "OK", "results": [], "next_url": "https://api.polygon.io/v3/reference/splits?page=2"})
    p = poly_provider(poly)
    with pytest.raises(BadProviderData, match="status ERROR"):
        p.splits(["AAA"], D("2026-01-01"))
    with pytest.raises(BadProviderData, match="next_url without a cursor"):
        p.splits(["AAA"], D("2026-01-01"))


def test_alphavantage_splits_one_symbol_a_call(av):
    av.split_events = {"NVDA": [("2024-06-10", "10.0000"), ("2021-07-20", "4.0000"), ("2000-06-27", "2.0000")],
                       "BAD": [("not a date", "2"), ("2026-01-05", "abc")]}
    p = av_provider(av)
    pages = all_pages(p, ["BAD", "NOPE", "NVDA"], D("2020-01-01"))
    assert [(p.covered, p.next) for p in pages] == [(("BAD",), "1"), (("NOPE",), "2"), (("NVDA",), None)]
    assert [(s.symbol, s.ex_date, s.split_from, s.split_to) for s in pages[2].splits] == [
        ("NVDA", D("2024-06-10"), Decimal(1), Decimal("10.0000")), ("NVDA", D("2021-07-20"), Decimal(1), Decimal("4.0000"))]
    assert pages[1].splits == []  # Alpha Vantage answers {} for a symbol it has nothing about
    bad = pages[0].splits  # what does not parse reaches validation, which rejects it with a reason
    assert [(s.ex_date, s.split_to.is_nan()) for s in bad] == [(None, False), (D("2026-01-05"), True)]
    assert av.requests == [{"symbol": s, "outputsize": None, "apikey": AV_KEY, "function": "SPLITS"} for s in ("BAD", "NOPE", "NVDA")]
    av.then("splits IBM", AV_QUOTA)
    with pytest.raises(QuotaExhausted):
        p.splits(["IBM"], D("2020-01-01"))


def test_csv_splits_file(tmp_path):
    p = get_provider("csv", Settings(prices_dir=tmp_path))
    assert p.splits(["AAA"], D("2020-01-01")).splits == []  # no splits.csv: no splits
    (tmp_path / "splits.csv").write_text(
        "symbol,ex_date,split_from,split_to\naaa,2026-11-20,1,4\nBBB,2026-11-20,1,2\nAAA,2019-01-02,1,2\nAAA,,1,2\nAAA,2026-11-23,x,2\n")
    page = p.splits(["AAA"], D("2020-01-01"))
    assert [(s.symbol, s.ex_date, s.split_from, s.split_to) for s in page.splits][:2] == [
        ("AAA", D("2026-11-20"), Decimal(1), Decimal(4)), ("AAA", None, Decimal(1), Decimal(2))]
    assert page.splits[2].split_from.is_nan() and (page.next, page.covered) == (None, ("AAA",))
    (tmp_path / "splits.csv").write_text("symbol,date,ratio\n")
    with pytest.raises(BadProviderData, match="header must have symbol, ex_date, split_from, split_to"):
        p.splits(["AAA"], D("2020-01-01"))
