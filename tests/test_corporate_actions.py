"""Corporate actions, the ingestion half: the pure rules (validation, when to ask, what looks
like an unrecorded split), ``load --splits`` / ``--symbol-changes``, the batch's split fetching
and suspected-split alert on both backends, and ``prices refetch``."""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from snapshotter.core import corporate_actions as ca
from snapshotter.config import Settings
from snapshotter.core.calendar import NEW_YORK, trading_days_between
from snapshotter.data import schema
from snapshotter.jobs.symbol_batch import run_symbol_batch
from tests.conftest import invoke, row_counts, table_rows
from tests.factories import FakeClock, add_closes, add_lot, add_portfolio, add_snapshot
from tests.fake_providers import AV_KEY, POLY_KEY, json_response
from snapshotter.core.bars import Split, SymbolChange
from snapshotter.core.validation import check_symbol_change, validate_splits

D = date.fromisoformat
TODAY = D("2026-12-07")


# --- the pure rules ---------------------------------------------------------------------


def test_splits_are_validated_in_one_place():
    rows, rejected = validate_splits(
        [
            Split("nvda", D("2024-06-10"), Decimal("1"), Decimal("10")),
            Split("AAA", D("2026-01-05"), Decimal("0"), Decimal("2")),
            Split("BBB", D("2026-01-05"), Decimal("1"), Decimal("-3")),
            Split("CCC", D("2027-03-08"), Decimal("1"), Decimal("2")),  # 91 days after today
            Split("CCC", D("2027-03-07"), Decimal("1"), Decimal("2")),  # 90 days: announced, kept
            Split("DDD", D("2026-02-02"), Decimal("1"), Decimal("2")),
            Split("DDD", D("2026-02-02"), Decimal("1"), Decimal("3")),  # same day, another ratio: both go
            Split("EEE", D("2026-02-02"), Decimal("1"), Decimal("10")),
            Split("EEE", D("2026-02-02"), Decimal("2"), Decimal("20")),  # the same ratio: one split
            Split("FFF", None, Decimal("1"), Decimal("2")),
            Split("GGG", D("2026-02-02"), Decimal("NaN"), Decimal("2")),
            Split("HHH", D("2026-02-02"), Decimal("1"), Decimal("0.00000000001")),
        ],
        TODAY,
    )
    assert [(r["symbol"], r["ex_date"], r["split_from"], r["split_to"]) for r in rows] == [
        ("CCC", D("2027-03-07"), Decimal("1"), Decimal("2")),
        ("EEE", D("2026-02-02"), Decimal("1"), Decimal("10")),
        ("NVDA", D("2024-06-10"), Decimal("1"), Decimal("10")),
    ]
    assert [(r.symbol, r.reason) for r in rejected] == [
        ("AAA", "split_from must be positive (0)"),
        ("BBB", "split_to must be positive (-3)"),
        ("CCC", "ex_date 2027-03-08 is more than 90 days after today (2026-12-07)"),
        ("FFF", "ex_date is missing or not a date"),
        ("GGG", "split_from is not a finite number (NaN)"),
        ("HHH", "split_to has more than 10 decimals (1E-11)"),
        ("DDD", "ex_date 2026-02-02 is listed more than once with different ratios"),
    ]


def test_symbol_changes_are_two_different_symbols_within_the_horizon():
    assert check_symbol_change(SymbolChange("fb", "META", D("2022-06-09")), TODAY) == {
        "old_symbol": "FB", "new_symbol": "META", "effective_date": D("2022-06-09")}
    with pytest.raises(ValueError, match="both META"):
        check_symbol_change(SymbolChange("META", "meta", D("2022-06-09")), TODAY)
    with pytest.raises(ValueError, match="more than 90 days"):
        check_symbol_change(SymbolChange("FB", "META", D("2099-06-09")), TODAY)


def test_when_splits_are_asked_for():
    last = {"AAA": D("2026-12-07"), "BBB": D("2026-12-06"), "CCC": D("2026-12-01")}
    assert ca.splits_due(["AAA", "BBB", "CCC", "NEW"], last, TODAY, 1) == ["BBB", "CCC", "NEW"]
    assert ca.splits_due(["AAA", "BBB", "CCC", "NEW"], last, TODAY, 7) == ["NEW"]
    assert ca.splits_due(["AAA", "BBB", "CCC"], {**last, "CCC": D("2026-11-30")}, TODAY, 7) == ["CCC"]
    assert ca.splits_since(["BBB"], last, TODAY) == D("2026-11-06")
    assert ca.splits_since(["BBB", "NEW"], last, TODAY) == D("2024-12-07")


@pytest.mark.parametrize(
    "prev, close, ratio",
    [
        ("1200", "120", "10-for-1"),
        ("1200", "122.4", "10-for-1"),  # within 2%
        ("1200", "118", "10-for-1"),
        ("100", "50", "2-for-1"),
        ("90", "30.2", "3-for-1"),
        ("2", "40", "1-for-20"),
        ("10", "49.5", "1-for-5"),
        ("1200", "125", None),  # 9.6: more than 2% off 10
        ("100", "70", None),
        ("100", "101", None),
    ],
)
def test_a_close_that_moves_like_a_split_is_suspected(prev, close, ratio):
    s = ca.suspected_split("AAA", D("2026-11-19"), Decimal(prev), D("2026-11-20"), Decimal(close))
    assert (s.ratio if s else None) == ratio


# --- load --splits / --symbol-changes ------------------------------------------------------

NOW_ARGS = ("--now", "2026-12-07T12:00:00Z")


def snapshot_on(engine, day: str) -> None:
    """One stored snapshot on ``day``: the 0007 insert trigger records a split only when history exists after it."""
    with engine.begin() as c:
        add_snapshot(c, add_portfolio(c, "p"), D(day), 0)


def invalidations(engine) -> list[tuple]:
    inv = schema.snapshot_invalidations
    return [(r["symbol"], r["from_date"], r["reason"]) for r in table_rows(engine, inv, order_by=[inv.c.id])]


def splits(engine) -> list[tuple]:
    s = schema.symbol_splits
    return [(r["symbol"], r["ex_date"], r["split_from"], r["split_to"], r["source"])
            for r in table_rows(engine, s, order_by=[s.c.symbol, s.c.ex_date])]


def test_load_splits_and_symbol_changes(db_url, engine, tmp_path):
    snapshot_on(engine, "2026-11-20")
    f = tmp_path / "splits.csv"
    f.write_text("symbol,ex_date,split_from,split_to,note\nnvda,2024-06-10,1,10,ten for one\nAAA,2026-11-02,20,1,\nAAA,2026-11-02,20,1,repeated\n")
    g = tmp_path / "changes.csv"
    g.write_text("old_symbol,new_symbol,effective_date\nFB,META,2022-06-09\n")
    r = invoke(*NOW_ARGS, "load", "--splits", str(f), "--symbol-changes", str(g), db_url=db_url)
    assert (r.returncode, r.stdout) == (0, "splits: 2 rows\nsymbol_changes: 1 rows\n"), r.stderr
    assert splits(engine) == [("AAA", D("2026-11-02"), Decimal(20), Decimal(1), "csv-import"),
                              ("NVDA", D("2024-06-10"), Decimal(1), Decimal(10), "csv-import")]
    assert [(r["old_symbol"], r["new_symbol"], r["effective_date"], r["source"]) for r in table_rows(engine, schema.symbol_changes)] == [
        ("FB", "META", D("2022-06-09"), "csv-import")]
    # history exists after each date: each new row is recorded once by the 0007 triggers
    first = [("NVDA", D("2024-06-10"), "split recorded"), ("AAA", D("2026-11-02"), "split recorded"),
             ("FB", D("2022-06-09"), "ticker change recorded")]
    assert invalidations(engine) == first
    before = {t: table_rows(engine, schema.metadata.tables[t]) for t in ("symbol_splits", "symbol_changes", "snapshot_invalidations")}

    # loading the same files again changes nothing at all: no write, no invalidation
    r = invoke(*NOW_ARGS, "load", "--splits", str(f), "--symbol-changes", str(g), db_url=db_url)
    assert r.returncode == 0
    assert {t: table_rows(engine, schema.metadata.tables[t]) for t in before} == before

    # a corrected ratio (2-for-40 is still 1-for-20: unchanged; 1-for-10 is a correction) updates it, once
    f.write_text("symbol,ex_date,split_from,split_to\nAAA,2026-11-02,10,1\nNVDA,2024-06-10,2,20\n")
    assert invoke(*NOW_ARGS, "load", "--splits", str(f), db_url=db_url).returncode == 0
    assert splits(engine)[0] == ("AAA", D("2026-11-02"), Decimal(10), Decimal(1), "csv-import")
    assert splits(engine)[1][2:4] == (Decimal(1), Decimal(10))
    assert invalidations(engine) == first + [("AAA", D("2026-11-02"), "split changed")]


BAD_SPLITS = [
    ("AAA,2026-11-02,0,10", "splits.csv:2: split_from must be positive (0)"),
    ("AAA,2026-11-02,1,-2", "splits.csv:2: split_to must be positive (-2)"),
    ("AAA,2099-01-02,1,10", "splits.csv:2: ex_date 2099-01-02 is more than 90 days after today (2026-12-07)"),
    ("AAA,2026-11-02,1,10\nAAA,2026-11-02,1,4",
     "splits.csv:3: symbol and ex_date listed more than once with different values, first on line 2"),
    ("AAA,2026-11-02,1", "splits.csv:2: split_to is empty"),
    ("AAA,2026-13-02,1,10", "splits.csv:2: month must be in 1..12"),
    ("AAA,2026-11-02,one,10", "splits.csv:2: not a decimal: 'one'"),
    ("A/B,2026-11-02,1,10", "splits.csv:2: bad symbol 'A/B'"),
]


@pytest.mark.parametrize("line, says", BAD_SPLITS, ids=[s.split(": ", 1)[1][:30] for _, s in BAD_SPLITS])
def test_a_bad_splits_file_is_one_line_exit_64_and_writes_nothing(db_url, engine, tmp_path, line, says):
    snapshot_on(engine, "2026-11-20")
    load_is_refused(db_url, engine, tmp_path / "splits.csv", "--splits", "symbol,ex_date,split_from,split_to\n" + line, says)


def load_is_refused(db_url, engine, f, option: str, text: str, says: str) -> None:
    """``load OPTION f`` of ``text``: exit 64, the one error line ``says`` (after f's directory), no row changed."""
    f.write_text(text + "\n")
    before = row_counts(engine)
    r = invoke(*NOW_ARGS, "load", option, str(f), db_url=db_url)
    assert r.returncode == 64
    assert [x for x in r.stderr.splitlines() if x.startswith("snapshotter:")] == [f"snapshotter: error: {f.parent}/{says}"]
    assert row_counts(engine) == before


@pytest.mark.parametrize("body, says", [
    ("FB,FB,2022-06-09", "changes.csv:2: old_symbol and new_symbol are both FB"),
    ("FB,META,2099-06-09", "changes.csv:2: effective_date 2099-06-09 is more than 90 days after today (2026-12-07)"),
    ("FB,META,2022-06-09\nFB,MTA,2022-06-09",
     "changes.csv:3: old_symbol and effective_date listed more than once with different values, first on line 2"),
    ("FB,,2022-06-09", "changes.csv:2: new_symbol is empty"),
])
def test_a_bad_symbol_changes_file_is_one_line_exit_64_and_writes_nothing(db_url, engine, tmp_path, body, says):
    load_is_refused(db_url, engine, tmp_path / "changes.csv", "--symbol-changes", "old_symbol,new_symbol,effective_date\n" + body, says)


# --- the batch: splits from the providers, once a day --------------------------------------

WEEK = trading_days_between(D("2026-11-16"), D("2026-11-24"))


def evening(day: str) -> datetime:
    """21:00 New York on ``day``: the nightly run's instant."""
    return datetime.combine(D(day), time(21, 0), tzinfo=NEW_YORK).astimezone(timezone.utc)


def nightly(engine, provider: str, day: str, **settings):
    clock = FakeClock()
    return run_symbol_batch(engine, Settings(calls_per_minute="unlimited", **settings), provider=provider, now=evening(day),
                            progress=False, clock=clock, sleep=clock.sleep)


@pytest.fixture
def holds_aaa_nvda(engine):
    with engine.begin() as c:
        p = add_portfolio(c, "p")
        add_lot(c, p, "AAA", "10", "100", "2026-11-02")
        add_lot(c, p, "NVDA", "1", "100", "2026-11-02")


def split_invalidations(engine) -> list[tuple]:
    return [i for i in invalidations(engine) if "split" in i[2]]


def test_polygon_splits_once_a_day_paged_and_an_identical_refetch_records_nothing(engine, holds_aaa_nvda, poly):
    poly.add("AAA", {d: "10.5" for d in WEEK})
    poly.add("NVDA", {d: "180.25" for d in WEEK})
    poly.split_events = [
        {"execution_date": "2025-06-10", "id": "E1", "split_from": 1, "split_to": 10, "ticker": "NVDA"},
        {"execution_date": "2025-03-03", "id": "E2", "split_from": 1, "split_to": 3, "ticker": "QQQQ"},  # not ours
        {"execution_date": "2026-11-20", "id": "E3", "split_from": 1, "split_to": 4, "ticker": "AAA"},
        {"execution_date": "2026-12-01", "id": "E4", "split_from": 0, "split_to": 4, "ticker": "NVDA"},  # rejected
    ]
    poly.splits_page = 2
    snapshot_on(engine, "2026-11-23")
    keys = dict(polygon_api_key=POLY_KEY, polygon_base_url=poly.url)

    r = nightly(engine, "polygon", "2026-11-24", **keys)
    assert (r.status, r.exit_code, r.alert) == ("completed", 0, None)
    assert r.stats["splits"] == {"due": 2, "calls": 2, "inserted": 2, "updated": 0, "unchanged": 0, "rejected": 1, "error": None}
    assert r.stats["splits_checked"] == {"on": "2026-11-24", "symbols": ["AAA", "NVDA"]}
    assert [k for k in poly.keys() if k == "splits"] == ["splits", "splits"]
    assert poly.requests[-2]["args"]["execution_date.gte"] == "2024-11-24"  # never checked: two years back
    assert splits(engine) == [("AAA", D("2026-11-20"), Decimal(1), Decimal(4), "polygon"),
                              ("NVDA", D("2025-06-10"), Decimal(1), Decimal(10), "polygon")]
    assert split_invalidations(engine) == [("NVDA", D("2025-06-10"), "split recorded"), ("AAA", D("2026-11-20"), "split recorded")]

    # a second batch the same day makes no splits request
    n = len(poly.requests)
    r = nightly(engine, "polygon", "2026-11-24", **keys)
    assert r.stats["splits"]["due"] == 0 and "splits" not in [q["key"] for q in poly.requests[n:]]

    # the next day asks again, from 30 days before the last check; the same answer changes nothing
    before = table_rows(engine, schema.symbol_splits)
    r = nightly(engine, "polygon", "2026-11-25", **keys)
    assert r.stats["splits"] == {"due": 2, "calls": 1, "inserted": 0, "updated": 0, "unchanged": 1, "rejected": 1, "error": None}
    assert [q["args"] for q in poly.requests if q["key"] == "splits"][-1]["execution_date.gte"] == "2026-10-25"
    assert table_rows(engine, schema.symbol_splits) == before
    assert len(split_invalidations(engine)) == 2

    # a provider's correction updates the split, and the trigger invalidates the history from it
    poly.split_events[2]["split_to"] = 5
    r = nightly(engine, "polygon", "2026-11-26", **keys)
    assert r.stats["splits"]["updated"] == 1
    assert splits(engine)[0] == ("AAA", D("2026-11-20"), Decimal(1), Decimal(5), "polygon")
    assert split_invalidations(engine)[-1] == ("AAA", D("2026-11-20"), "split changed")


def test_a_failed_splits_page_is_asked_again_by_the_next_run_and_changes_no_outcome(engine, holds_aaa_nvda, poly):
    poly.add("AAA", {d: "10.5" for d in WEEK})
    poly.split_events = [{"execution_date": "2026-11-20", "id": "E3", "split_from": 1, "split_to": 4, "ticker": "AAA"}]
    poly.then("splits", json_response({"status": "ERROR", "error": "denied"}, 403))
    keys = dict(polygon_api_key=POLY_KEY, polygon_base_url=poly.url)
    r = nightly(engine, "polygon", "2026-11-24", **keys)
    assert (r.status, r.exit_code) == ("completed", 0)
    assert r.stats["splits"]["error"].startswith("polygon: splits since 2024-11-24: HTTP 403 refused")
    assert "splits_checked" not in r.stats and splits(engine) == []
    r = nightly(engine, "polygon", "2026-11-24", **keys)
    assert r.stats["splits"]["inserted"] == 1 and r.stats["splits_checked"]["symbols"] == ["AAA", "NVDA"]


def test_a_crash_between_pages_keeps_the_stored_page_and_records_no_check(engine, holds_aaa_nvda, poly):
    """Page 1 is stored with its (empty) check record; page 2 never comes: the next run asks everything again."""
    poly.add("AAA", {d: "10.5" for d in WEEK})
    poly.split_events = [{"execution_date": "2025-03-03", "id": "E1", "split_from": 1, "split_to": 2, "ticker": "AAA"},
                         {"execution_date": "2026-11-20", "id": "E2", "split_from": 1, "split_to": 4, "ticker": "NVDA"}]
    poly.splits_page = 1
    poly.then("splits", lambda: json_response(poly._splits({"execution_date.gte": "2024-11-24"})),
              *[json_response({"status": "ERROR"}, 500)] * 3)
    keys = dict(polygon_api_key=POLY_KEY, polygon_base_url=poly.url)
    r = nightly(engine, "polygon", "2026-11-24", **keys)
    assert (r.status, r.exit_code) == ("completed", 0)
    assert (r.stats["splits"]["inserted"], r.stats["splits"]["error"]) == (1, "polygon: splits since 2024-11-24: HTTP 500")
    assert r.stats["splits_checked"] == {"on": "2026-11-24", "symbols": []}
    r = nightly(engine, "polygon", "2026-11-24", **keys)
    assert r.stats["splits"] == {"due": 2, "calls": 2, "inserted": 1, "updated": 0, "unchanged": 1, "rejected": 0, "error": None}
    assert [x[:2] for x in splits(engine)] == [("AAA", D("2025-03-03")), ("NVDA", D("2026-11-20"))]


def test_alphavantage_splits_weekly_one_call_per_symbol(engine, holds_aaa_nvda, av):
    av.add("AAA", {d: "10.5" for d in WEEK})
    av.add("NVDA", {d: "180.25" for d in WEEK})
    av.split_events = {"NVDA": [("2025-06-10", "10.0000"), ("2021-07-20", "4.0000")]}
    keys = dict(alphavantage_api_key=AV_KEY, alphavantage_base_url=av.url, calls_per_day="unlimited")
    r = nightly(engine, "alphavantage", "2026-11-24", **keys)
    assert r.stats["splits"] == {"due": 2, "calls": 2, "inserted": 1, "updated": 0, "unchanged": 0, "rejected": 0, "error": None}
    assert (av.calls_for("AAA", "SPLITS"), av.calls_for("NVDA", "SPLITS")) == (1, 1)
    assert splits(engine) == [("NVDA", D("2025-06-10"), Decimal(1), Decimal("10"), "alphavantage")]  # 2021: before the lookback
    for day in ("2026-11-25", "2026-11-27", "2026-11-30"):  # within the week: no SPLITS call
        assert nightly(engine, "alphavantage", day, **keys).stats["splits"]["due"] == 0
    assert av.calls_for("NVDA", "SPLITS") == 1
    r = nightly(engine, "alphavantage", "2026-12-01", **keys)  # a week after the first check
    assert (r.stats["splits"]["calls"], av.calls_for("NVDA", "SPLITS")) == (2, 2)


def write_prices(directory: Path, symbol: str, closes: dict) -> None:
    lines = ["date,open,high,low,close,volume"] + [f"{d},{c},{c},{c},{c},100" for d, c in sorted(closes.items())]
    (directory / f"{symbol}.csv").write_text("\n".join(lines) + "\n")


def test_csv_splits_file_through_the_batch(engine, holds_aaa_nvda, tmp_path):
    write_prices(tmp_path, "AAA", {d: "10.5" for d in WEEK})
    write_prices(tmp_path, "NVDA", {d: "180" for d in WEEK})
    (tmp_path / "splits.csv").write_text("symbol,ex_date,split_from,split_to\nNVDA,2025-06-10,1,10\nNVDA,2026-11-18,1,-1\nZZZ,2026-11-18,1,2\n")
    r = nightly(engine, "csv", "2026-11-24", prices_dir=tmp_path)
    assert r.stats["splits"] == {"due": 2, "calls": 1, "inserted": 1, "updated": 0, "unchanged": 0, "rejected": 1, "error": None}
    assert splits(engine) == [("NVDA", D("2025-06-10"), Decimal(1), Decimal(10), "csv")]


# --- possible unrecorded splits --------------------------------------------------------------

AFTER_CLOSE = ("--now", "2026-11-25T02:00:00Z")  # 21:00 New York on Tuesday 2026-11-24


def tenfold_drop(tmp_path: Path) -> dict:
    """AAA closes 1200 until Thursday 2026-11-19, then about 120: a 10-for-1 split nobody recorded."""
    write_prices(tmp_path, "AAA", {d: ("1200" if d <= D("2026-11-19") else "120.5") for d in WEEK})
    write_prices(tmp_path, "NVDA", {d: "180" for d in WEEK})
    return {"SNAPSHOTTER_PROVIDER": "csv", "SNAPSHOTTER_PRICES_DIR": str(tmp_path)}


def test_a_tenfold_drop_without_a_split_on_file_alerts_and_status_lists_it(db_url, engine, holds_aaa_nvda, tmp_path, receiver):
    import json

    env = {**tenfold_drop(tmp_path), **receiver.env}
    r = invoke(*AFTER_CLOSE, "symbol-batch", "--json", db_url=db_url, env=env)
    out = json.loads(r.stdout)
    assert (r.returncode, out["status"]) == (0, "completed")
    seen = {"symbol": "AAA", "day": "2026-11-20", "prev_date": "2026-11-19", "prev_close": "1200.000000", "close": "120.500000",
            "ratio": "10-for-1"}
    assert out["possible_unrecorded_splits"] == [seen]
    (alert,) = receiver.alerts
    assert "symbol-batch 2026-11-24 exited 0: possible unrecorded split: AAA 2026-11-20 (10-for-1: 1200 on 2026-11-19 -> 120.5)" in json.dumps(alert)
    status = json.loads(invoke(*AFTER_CLOSE, "status", "--json", db_url=db_url).stdout)
    assert status["possible_unrecorded_splits"] == [seen]
    assert "possible unrecorded split: AAA 2026-11-20 (10-for-1" in invoke(*AFTER_CLOSE, "status", db_url=db_url).stdout
    assert table_rows(engine, schema.symbol_splits) == []  # it changes no data by itself

    # the operator records it: status is silent, and so is a rerun
    f = tmp_path / "mine.csv"
    f.write_text("symbol,ex_date,split_from,split_to\nAAA,2026-11-20,1,10\n")
    assert invoke(*AFTER_CLOSE, "load", "--splits", str(f), db_url=db_url).returncode == 0
    assert json.loads(invoke(*AFTER_CLOSE, "status", "--json", db_url=db_url).stdout)["possible_unrecorded_splits"] == []


def test_silent_when_the_split_is_on_file(db_url, engine, holds_aaa_nvda, tmp_path, receiver):
    import json

    env = {**tenfold_drop(tmp_path), **receiver.env}
    (tmp_path / "splits.csv").write_text("symbol,ex_date,split_from,split_to\nAAA,2026-11-20,1,10\n")  # fetched before the check
    r = invoke(*AFTER_CLOSE, "symbol-batch", "--json", db_url=db_url, env=env)
    assert (r.returncode, json.loads(r.stdout)["possible_unrecorded_splits"]) == (0, [])
    assert receiver.alerts == []
    assert json.loads(invoke(*AFTER_CLOSE, "status", "--json", db_url=db_url).stdout)["possible_unrecorded_splits"] == []


# --- prices refetch --------------------------------------------------------------------------


def test_prices_refetch_overwrites_adjusted_closes_and_the_history_is_invalidated(db_url, engine, holds_aaa_nvda, poly, receiver):
    import json

    # the cache as an older version filled it: Polygon's split-adjusted closes (AAA split 10-for-1 on 2026-11-20)
    with engine.begin() as c:
        add_closes(c, "AAA", {d: "120.500000" for d in WEEK})  # stored as the batch stores them: 6 decimals
        add_closes(c, "NVDA", {d: "180" for d in WEEK})
    snapshot_on(engine, "2026-11-18")
    poly.add("AAA", {d: ("1205" if d < D("2026-11-20") else "120.5") for d in WEEK})  # as traded
    env = {"POLYGON_API_KEY": POLY_KEY, "POLYGON_BASE_URL": poly.url, "SNAPSHOTTER_CALLS_PER_MINUTE": "unlimited", **receiver.env}
    r = invoke(*AFTER_CLOSE, "prices", "refetch", "--symbol", "aaa", "--from", "2026-11-16", "--provider", "polygon", "--json",
               db_url=db_url, env=env)
    out = json.loads(r.stdout)
    assert (r.returncode, out["status"], out["mode"], out["provider_calls"], out["rows_upserted"]) == (0, "completed", "refetch", 1, 7)
    (req,) = poly.requests
    assert (req["path"], req["args"]["adjusted"]) == ("/v2/aggs/ticker/AAA/range/1/day/2026-11-16/2026-11-24", "false")
    p = schema.symbol_prices_daily
    got = {(x["symbol"], x["price_date"]): (x["close"], x["source"]) for x in table_rows(engine, p)}
    assert [got[("AAA", d)] for d in WEEK] == [(Decimal("1205"), "polygon")] * 4 + [(Decimal("120.5"), "polygon")] * 3
    assert {got[("NVDA", d)] for d in WEEK} == {(Decimal("180"), "test")}  # another symbol: untouched
    # the four changed closes are recorded by the close-change trigger (the unchanged ones are not)
    inv = [i for i in invalidations(engine) if i[0] == "AAA"]
    assert inv == [("AAA", d, "close changed") for d in WEEK[:4]]
    (run,) = [x for x in table_rows(engine, schema.batch_run_tracking) if x["run_id"] == out["run_id"]]
    assert (run["batch_type"], run["status"], run["target_date"]) == ("price_refetch", "completed", D("2026-11-24"))
    # a refetch is no nightly batch: portfolio-refresh still waits for one
    assert invoke(*AFTER_CLOSE, "portfolio-refresh", "--wait-timeout", "0s", db_url=db_url).returncode == 75


@pytest.mark.parametrize("args, says", [
    (("--symbol", "A/B", "--from", "2026-11-16"), "--symbol: bad symbol 'A/B'"),
    (("--symbol", "AAA", "--from", "2026-11-20", "--to", "2026-11-16"), "is after --to"),
    (("--symbol", "AAA", "--from", "2026-11-21", "--to", "2026-11-22"), "no trading day in 2026-11-21..2026-11-22"),
    (("--symbol", "AAA", "--from", "2099-01-02"), "is after --to"),
    (("--symbol", "AAA", "--from", "someday"), "is not a date"),
    (("--symbol", "AAA"), "--from"),
])
def test_prices_refetch_bad_input_is_one_line_exit_64(db_url, engine, holds_aaa_nvda, args, says):
    before = row_counts(engine)
    r = invoke(*AFTER_CLOSE, "prices", "refetch", *args, db_url=db_url)
    lines = [x for x in r.stderr.splitlines() if x.startswith("snapshotter:")]
    assert r.returncode == 64 and len(lines) == 1 and says in lines[0], r.stderr
    assert row_counts(engine) == before
