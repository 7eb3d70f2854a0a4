"""Corporate actions, the ingestion half: the pure rules (validation, when to ask, what looks
like an unrecorded split), ``load --splits`` / ``--symbol-changes``, the batch's split fetching
and suspected-split alert on both backends, and ``prices refetch``."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from snapshotter.core import corporate_actions as ca
from snapshotter.data import schema
from tests.conftest import invoke, row_counts, table_rows
from tests.factories import add_portfolio
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
        pid = add_portfolio(c, "p")
        now = datetime(2026, 12, 7, tzinfo=timezone.utc)
        c.execute(schema.portfolio_snapshots.insert().values(
            portfolio_id=pid, snapshot_date=D(day), holdings_value=0, cash_balance=0, total_value=0, total_cost=0, total_pnl=0,
            pnl_percent=0, position_count=0, priced_position_count=0, is_partial=False, created_at=now, updated_at=now))


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
    f = tmp_path / "splits.csv"
    f.write_text("symbol,ex_date,split_from,split_to\n" + line + "\n")
    before = row_counts(engine)
    r = invoke(*NOW_ARGS, "load", "--splits", str(f), db_url=db_url)
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
    f = tmp_path / "changes.csv"
    f.write_text("old_symbol,new_symbol,effective_date\n" + body + "\n")
    before = row_counts(engine)
    r = invoke(*NOW_ARGS, "load", "--symbol-changes", str(f), db_url=db_url)
    assert r.returncode == 64
    assert [x for x in r.stderr.splitlines() if x.startswith("snapshotter:")] == [f"snapshotter: error: {f.parent}/{says}"]
    assert row_counts(engine) == before
