"""Corporate actions, the ingestion half: the pure rules (validation, when to ask, what looks
like an unrecorded split), ``load --splits`` / ``--symbol-changes``, the batch's split fetching
and suspected-split alert on both backends, and ``prices refetch``."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from snapshotter.core import corporate_actions as ca
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
