"""Corporate actions, the valuation half: quantity as of the day (splits) and ticker changes, on
both backends, exact stored rows against hand-computed values across the ex-date; every path
(nightly, backfill, refresh --force, the invalidation recompute, the market-value pass); a split
learned late; the symbols the batch asks for; a split with --max-price-age.

Split and ticker-change rows are written directly, as another application (the ingestion) does.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction
from math import floor

import pytest
import sqlalchemy as sa

from snapshotter.core.bars import Split, SymbolChange
from snapshotter.core.valuation import Step, price_symbols_between, priced_by, quantity_steps
from snapshotter.data import steps_sql, invalidation_sql, planning_sql, schema
from snapshotter.ops import status
from snapshotter.data.dialect import Money, dquot
from snapshotter.jobs import snapshots as job
from snapshotter.jobs import symbol_batch
from tests.factories import (
    NOW, D, add_cash, add_close, add_closes, add_lot, add_portfolio, add_split, add_symbol_change, snapshots,
)

DAYS = ["2026-09-08", "2026-09-09", "2026-09-10", "2026-09-11", "2026-09-14", "2026-09-15"]
EX = "2026-09-10"  # every split's ex-date, and the ticker change's effective date
T = D("2026-09-15")
Q6 = Decimal("0.000001")
EXACT = Context(prec=80)  # enough digits that nothing below is rounded before the last step
SKIP = {"id", "created_at", "updated_at"}


def opts(**kw):
    return job.Options(**{"progress": False, "wait_for_batch": False, **kw})


def refresh(engine, now=NOW, **kw):
    r = job.portfolio_refresh(engine, T, opts(**kw), now=now)
    assert r.exit_code == 0, r.stats
    return r


def row(holdings, cost, n, priced=None, missing=None, stale=None, cash="1000"):
    """A stored snapshot from its hand-computed exact holdings and cost (total, P&L and percent
    follow, each rounded half-even to 6 decimals from the exact values)."""
    h, c, m = Decimal(holdings), Decimal(cost), Decimal(cash)
    pct = Decimal(0) if c == 0 else EXACT.divide(EXACT.multiply(EXACT.subtract(h, c), 100), c)
    priced = n if priced is None else priced
    r6 = lambda x: x.quantize(Q6, ROUND_HALF_EVEN)  # noqa: E731
    return (r6(h), m, r6(EXACT.add(h, m)), c, r6(EXACT.subtract(h, c)), r6(pct), n, priced, missing is not None, missing, stale)


def third(x: str) -> Decimal:
    """x / 3 as the engine carries it: rounded to 30 decimals (valuation.lot_value; never a tie)."""
    return EXACT.divide(Decimal(x), 3).quantize(Decimal(1).scaleb(-30), ROUND_HALF_EVEN, EXACT)


def stored(engine, pid) -> dict:
    keys = ("holdings_value", "cash_balance", "total_value", "total_cost", "total_pnl", "pnl_percent", "position_count",
            "priced_position_count", "is_partial", "missing_symbols", "stale_symbols")
    return {r["snapshot_date"].isoformat(): tuple(r[k] for k in keys) for r in snapshots(engine, pid)}


def all_rows(engine) -> dict:
    return {(r["portfolio_id"], r["snapshot_date"]): {k: v for k, v in r.items() if k not in SKIP} for r in snapshots(engine)}


def market_values(engine, pid) -> dict:
    p = schema.positions
    with engine.connect() as c:
        rows = c.execute(sa.select(p.c.entry_date, p.c.quantity, p.c.last_price, p.c.market_value, p.c.market_value_date)
                         .where(p.c.portfolio_id == pid))
        return sorted((r.entry_date.isoformat(), r.quantity, r.last_price, r.market_value,
                       r.market_value_date and r.market_value_date.isoformat()) for r in rows)


# --- the pure rule ---------------------------------------------------------------------------


def test_steps_multiply_exactly_and_follow_ticker_chains():
    splits = [Split("FWD", D(EX), Decimal("1"), Decimal("10")), Split("FWD", D("2026-10-01"), Decimal("2"), Decimal("3")),
              Split("B", D("2026-09-01"), Decimal("1"), Decimal("2")), Split("B", D("2026-11-02"), Decimal("20"), Decimal("1")),
              Split("A", D("2026-09-01"), Decimal("1"), Decimal("4"))]
    changes = [SymbolChange("A", "B", D("2026-10-01")), SymbolChange("B", "C", D("2026-12-01"))]
    steps = quantity_steps(splits, changes)
    FIRST, LAST = date(1, 1, 1), date(9999, 12, 31)
    assert [s for s in steps if s.symbol == "FWD"] == [
        Step("FWD", FIRST, D(EX), "FWD", 1, 1), Step("FWD", D(EX), D("2026-10-01"), "FWD", 10, 1),
        Step("FWD", D("2026-10-01"), LAST, "FWD", 15, 1),
    ]
    # A: its own split before the change (x4), B's from the change on (B's 09-01 split does not count), then C.
    assert [s for s in steps if s.symbol == "A"] == [
        Step("A", FIRST, D("2026-09-01"), "A", 1, 1), Step("A", D("2026-09-01"), D("2026-10-01"), "A", 4, 1),
        Step("A", D("2026-10-01"), D("2026-11-02"), "B", 4, 1), Step("A", D("2026-11-02"), D("2026-12-01"), "B", 1, 5),
        Step("A", D("2026-12-01"), LAST, "C", 1, 5),
    ]
    assert price_symbols_between(steps, D("2026-09-15"), D("2026-10-15")) == {"A": {"A", "B"}, "B": {"B"}}
    assert price_symbols_between(steps, D("2026-12-04"), D("2026-12-04")) == {"A": {"C"}, "B": {"C"}}
    assert priced_by(steps) == [("B", "A", D("2026-10-01")), ("C", "A", D("2026-12-01")), ("C", "B", D("2026-12-01"))]


def test_a_rename_back_ends_the_walk():
    changes = [SymbolChange("A", "B", D("2026-09-01")), SymbolChange("B", "A", D("2026-10-01"))]
    assert [(s.valid_from, s.price_symbol) for s in quantity_steps([], changes) if s.symbol == "A"] == [
        (date(1, 1, 1), "A"), (D("2026-09-01"), "B"), (D("2026-10-01"), "A"),
    ]


# --- splits on both backends -------------------------------------------------------------------

FWD = dict(zip(DAYS, ["100", "102", "10.4", "10.5", "10.7", "10.8"]))  # 10-for-1 on 09-10
REV = dict(zip(DAYS, ["2", "2.1", "41", "42.3", "40.5", "44"]))  # 1-for-20 on 09-10
THR = dict(zip(DAYS, ["5", "5.1", "15.1", "15.2", "15.35", "15.4"]))  # 1-for-3 on 09-10
OTH = dict(zip(DAYS, ["7", "7", "7", "7", "7", "7"]))


@pytest.fixture
def world(engine):
    """Lots entered before, on and after the ex-date and one exited before it, per split kind;
    ``other`` holds a symbol without corporate actions."""
    with engine.begin() as c:
        for sym, closes in (("FWD", FWD), ("REV", REV), ("THR", THR), ("OTH", OTH)):
            add_closes(c, sym, {D(d): Decimal(v) for d, v in closes.items()})
        p = {n: add_portfolio(c, n) for n in ("fwd", "rev", "thr", "other")}
        for pid in p.values():
            add_cash(c, pid, "2026-09-08", "1000")
        add_lot(c, p["fwd"], "FWD", "3", "100", "2026-09-08")
        add_lot(c, p["fwd"], "FWD", "20", "10.5", EX)
        add_lot(c, p["fwd"], "FWD", "5", "10.6", "2026-09-14")
        add_lot(c, p["fwd"], "FWD", "2", "99", "2026-09-08", exit_date="2026-09-09")
        add_lot(c, p["rev"], "REV", "100", "2", "2026-09-08")
        add_lot(c, p["rev"], "REV", "7", "41", EX)
        add_lot(c, p["rev"], "REV", "3", "40", "2026-09-14")
        add_lot(c, p["rev"], "REV", "30", "2.1", "2026-09-08", exit_date="2026-09-09")
        add_lot(c, p["thr"], "THR", "10", "5", "2026-09-08")
        add_lot(c, p["thr"], "THR", "1", "15", EX)
        add_lot(c, p["other"], "OTH", "4", "6", "2026-09-08")
    return p


def add_splits(engine):
    with engine.begin() as c:
        add_split(c, "FWD", EX, "1", "10")
        add_split(c, "REV", EX, "20", "1")
        add_split(c, "THR", EX, "3", "1")


# Hand-computed: quantity as of the day x close; cost as entered.
EXPECTED = {
    "fwd": {  # 3 from 09-08 (30 from 09-10), 20 from 09-10, 5 from 09-14, 2 on 09-08 only
        "2026-09-08": row("500", "498", 2),  # 3 x 100 + 2 x 100
        "2026-09-09": row("306", "300", 1),  # 3 x 102
        "2026-09-10": row("520", "510", 2),  # 30 x 10.4 + 20 x 10.4
        "2026-09-11": row("525", "510", 2),  # 30 x 10.5 + 20 x 10.5
        "2026-09-14": row("588.5", "563", 3),  # 30 x 10.7 + 20 x 10.7 + 5 x 10.7
        "2026-09-15": row("594", "563", 3),
    },
    "rev": {  # 100 from 09-08 (5 from 09-10), 7 from 09-10, 3 from 09-14, 30 on 09-08 only
        "2026-09-08": row("260", "263", 2),  # 100 x 2 + 30 x 2
        "2026-09-09": row("210", "200", 1),
        "2026-09-10": row("492", "487", 2),  # 5 x 41 + 7 x 41
        "2026-09-11": row("507.6", "487", 2),
        "2026-09-14": row("607.5", "607", 3),  # 5 x 40.5 + 7 x 40.5 + 3 x 40.5
        "2026-09-15": row("660", "607", 3),
    },
    "thr": {  # 10 from 09-08 (10/3 from 09-10: q x close x 1 / 3 to 30 decimals, then 6), 1 from 09-10
        "2026-09-08": row("50", "50", 1),
        "2026-09-09": row("51", "50", 1),
        "2026-09-10": row(EXACT.add(third("151"), Decimal("15.1")), "65", 2),  # 65.433333..
        "2026-09-11": row(EXACT.add(third("152"), Decimal("15.2")), "65", 2),  # 65.866666..67
        "2026-09-14": row(EXACT.add(third("153.5"), Decimal("15.35")), "65", 2),  # 66.516666..67
        "2026-09-15": row(EXACT.add(third("154"), Decimal("15.4")), "65", 2),  # 66.733333..
    },
    "other": {d: row("28", "24", 1) for d in DAYS},
}
MARKET_VALUES = {  # (entry date, quantity as entered, last price, market value, date) after a run to 09-15
    "fwd": [("2026-09-08", Decimal("2"), None, None, None), ("2026-09-08", Decimal("3"), Decimal("10.8"), Decimal("324"), "2026-09-15"),
            ("2026-09-10", Decimal("20"), Decimal("10.8"), Decimal("216"), "2026-09-15"),
            ("2026-09-14", Decimal("5"), Decimal("10.8"), Decimal("54"), "2026-09-15")],
    "rev": [("2026-09-08", Decimal("30"), None, None, None), ("2026-09-08", Decimal("100"), Decimal("44"), Decimal("220"), "2026-09-15"),
            ("2026-09-10", Decimal("7"), Decimal("44"), Decimal("308"), "2026-09-15"),
            ("2026-09-14", Decimal("3"), Decimal("44"), Decimal("132"), "2026-09-15")],
    "thr": [("2026-09-08", Decimal("10"), Decimal("15.4"), Decimal("51.333333"), "2026-09-15"),
            ("2026-09-10", Decimal("1"), Decimal("15.4"), Decimal("15.4"), "2026-09-15")],
}


def test_nightly_values_the_quantity_as_of_the_day_and_market_values(engine, world):
    add_splits(engine)
    r = refresh(engine)
    assert r.stats["snapshots_created"] == 24
    for name, expected in EXPECTED.items():
        assert stored(engine, world[name]) == expected, name
    for name, expected in MARKET_VALUES.items():
        assert market_values(engine, world[name]) == expected, name
    # A rerun changes nothing: the split lots' market values are already right.
    r = refresh(engine)
    assert (r.stats["snapshots_created"], r.stats["snapshots_recomputed"], r.stats["positions_valued"]) == (0, 0, 0)


def test_backfill_and_refresh_force_agree_with_the_nightly(engine, world):
    add_splits(engine)
    refresh(engine)
    nightly = all_rows(engine)
    for pid in world.values():
        r = job.backfill(engine, str(pid), D(DAYS[0]), T, force=True, opts=opts(), now=NOW)
        assert r.exit_code == 0 and r.stats["snapshots_recomputed"] == 6
    assert all_rows(engine) == nightly
    for d in DAYS:
        r = job.refresh_date(engine, D(d), force=True, opts=opts(), now=NOW)
        assert r.exit_code == 0
    assert all_rows(engine) == nightly


def test_a_split_learned_late_recomputes_exactly_its_holders_from_the_ex_date(engine, world):
    refresh(engine)
    before = {(r["portfolio_id"], r["snapshot_date"]): r for r in snapshots(engine)}
    assert stored(engine, world["fwd"])["2026-09-10"] == row("239.2", "510", 2)  # 3 x 10.4 + 20 x 10.4: the split not known yet
    with engine.begin() as c:
        add_split(c, "FWD", EX, "1", "10")  # the trigger records a symbol row from the ex-date
    r = refresh(engine, now=NOW + timedelta(hours=1))  # a later run: what it rewrites gets a new updated_at
    assert r.stats["portfolios_invalidated"] == 1
    assert r.stats["snapshots_recomputed_by_invalidation"] == 4  # 09-10, 09-11, 09-14, 09-15 of "fwd"
    assert (r.stats["snapshots_created_by_invalidation"], r.stats["snapshots_deleted_by_invalidation"]) == (0, 0)
    assert stored(engine, world["fwd"]) == EXPECTED["fwd"]
    after = {(r["portfolio_id"], r["snapshot_date"]): r for r in snapshots(engine)}
    changed = {k for k in after if after[k]["updated_at"] != before[k]["updated_at"]}
    assert changed == {(world["fwd"], D(d)) for d in DAYS[2:]}  # nothing before the ex-date, no other portfolio
    assert market_values(engine, world["fwd"]) == MARKET_VALUES["fwd"]


def test_a_split_with_max_price_age_never_prices_the_new_quantity_at_a_pre_split_close(engine):
    """SPL 2-for-1 on 09-10 and no close that day: the newest close within 3 days is 09-09's,
    pre-split, so 09-10 is missing; 09-14 (no close) takes 09-11's, post-split: stale."""
    with engine.begin() as c:
        pid = add_portfolio(c, "spl")
        add_cash(c, pid, "2026-09-08", "1000")
        add_lot(c, pid, "SPL", "4", "50", "2026-09-08")
        add_closes(c, "SPL", {D("2026-09-08"): Decimal("50"), D("2026-09-09"): Decimal("52"),
                              D("2026-09-11"): Decimal("26.5"), D("2026-09-15"): Decimal("27")})
        add_closes(c, "OTH", {D(d): Decimal("7") for d in DAYS})  # the days have closes
        add_split(c, "SPL", EX, "1", "2")
    refresh(engine, max_price_age=3)
    assert stored(engine, pid) == {
        "2026-09-08": row("200", "200", 1),
        "2026-09-09": row("208", "200", 1),
        "2026-09-10": row("0", "0", 1, priced=0, missing="SPL"),
        "2026-09-11": row("212", "200", 1),  # 8 x 26.5
        "2026-09-14": row("212", "200", 1, stale="SPL"),
        "2026-09-15": row("216", "200", 1),
    }


# --- ticker changes --------------------------------------------------------------------------


@pytest.fixture
def renamed(engine):
    """OLD trades as NEW from 09-10 (OLD's closes stop); NEW has no close on 09-14 yet; NEW
    splits 2-for-1 on 09-14. A lot of 10 OLD at 20 from 09-08, another of 4 OLD from 09-11."""
    with engine.begin() as c:
        pid = add_portfolio(c, "renamed")
        add_cash(c, pid, "2026-09-08", "1000")
        add_lot(c, pid, "OLD", "10", "20", "2026-09-08")
        add_lot(c, pid, "OLD", "4", "25", "2026-09-11")
        add_closes(c, "OLD", {D("2026-09-08"): Decimal("20"), D("2026-09-09"): Decimal("21")})
        add_closes(c, "NEW", {D("2026-09-10"): Decimal("24"), D("2026-09-11"): Decimal("25"), D("2026-09-15"): Decimal("13")})
        add_closes(c, "OTH", {D(d): Decimal("7") for d in DAYS})
        add_symbol_change(c, "OLD", "NEW", EX)
        add_split(c, "NEW", "2026-09-14", "1", "2")
    return pid


RENAMED = {
    "2026-09-08": row("200", "200", 1),
    "2026-09-09": row("210", "200", 1),
    "2026-09-10": row("240", "200", 1),  # NEW's close
    "2026-09-11": row("350", "300", 2),  # 10 x 25 + 4 x 25
    "2026-09-14": row("0", "0", 2, priced=0, missing="OLD"),  # listed as held
    "2026-09-15": row("364", "300", 2),  # (10 + 4) x 2 x 13
}


def test_a_ticker_change_takes_the_new_symbols_closes_and_splits(engine, renamed):
    refresh(engine)
    assert stored(engine, renamed) == RENAMED
    assert [mv[2:] for mv in market_values(engine, renamed)] == [(Decimal("13"), Decimal("260"), "2026-09-15"),
                                                                  (Decimal("13"), Decimal("104"), "2026-09-15")]


def test_a_late_close_of_the_new_symbol_recomputes_the_old_symbols_holders(engine, renamed):
    refresh(engine)
    with engine.begin() as c:
        add_close(c, "NEW", "2026-09-14", "12.5")  # a day with snapshots: a symbol row for NEW
    r = refresh(engine)
    assert r.stats["snapshots_recomputed_by_invalidation"] == 2  # 09-14 and 09-15 of the OLD holder
    assert stored(engine, renamed)["2026-09-14"] == row("350", "300", 2)  # 28 x 12.5


def test_symbols_needed_asks_for_the_new_symbol_and_stops_asking_for_the_old(engine, renamed):
    def needed(day, until=None):
        with engine.connect() as c:
            return symbol_batch.symbols_needed(c, D(day), D(until) if until else None)

    assert needed("2026-09-09") == ["OLD"]
    assert needed("2026-09-15") == ["NEW"]
    assert needed("2026-09-08", "2026-09-15") == ["NEW", "OLD"]  # a range across the change: both
    with engine.connect() as c:
        needed = planning_sql.read_symbols_needed(c, D("2026-09-14"), steps_sql.renamed(c, D("2026-09-14")))
        assert status.missing_closes(c, D("2026-09-14"), needed)["symbols"] == ["NEW"]


def test_a_ticker_change_learned_late_recomputes_the_old_symbols_holders_from_its_date(engine, renamed):
    with engine.begin() as c:
        c.execute(schema.symbol_changes.delete())  # not known yet (nothing to recompute: no snapshots)
    refresh(engine)
    assert stored(engine, renamed)["2026-09-11"] == row("0", "0", 2, priced=0, missing="OLD")  # OLD has no close
    with engine.begin() as c:
        add_symbol_change(c, "OLD", "NEW", EX)  # the trigger records OLD from the effective date
    r = refresh(engine)
    assert (r.stats["portfolios_invalidated"], r.stats["snapshots_recomputed_by_invalidation"]) == (1, 4)
    assert stored(engine, renamed) == RENAMED


QUOTIENTS = [("10", "3"), ("-10", "3"), ("2", "3"), ("1", "20"), ("3", "2000000000000000000000000000000"),
             ("123456789012.1234567890123456", "99999999999999999999999999999999999999"), ("7.5", "1")]


def test_the_split_division_gives_the_same_digits_on_both_backends(engine):
    """dquot: a / b correctly rounded to 30 decimals, ties away from zero, checked against Fractions."""
    def expected(a, b):
        q = Fraction(Decimal(a)) * 10**30 / Fraction(Decimal(b))
        n = floor(abs(q) + Fraction(1, 2))
        return Decimal(-n if q < 0 else n).scaleb(-30, EXACT)

    with engine.connect() as c:
        for a, b in QUOTIENTS:
            got = c.execute(sa.select(dquot(sa.literal(Decimal(a), Money(60, 30)), sa.literal(Decimal(b), Money(40, 0))))).scalar_one()
            assert got == expected(a, b), (a, b)


def test_status_counts_the_old_symbols_holders_of_a_new_symbols_change(engine, renamed):
    refresh(engine)
    with engine.begin() as c:
        add_close(c, "NEW", "2026-09-14", "12.5")
        steps = steps_sql.load_steps(c)
        assert c.execute(invalidation_sql.affected_portfolios(priced_by(steps))).scalar_one() == 1
        assert c.execute(invalidation_sql.affected_portfolios()).scalar_one() == 0  # NEW itself is held by nobody
