"""The pure planner: missing days, the overlap, range vs grouped calls, Alpha Vantage sizes."""

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from snapshotter.core import fetch_plan as fp
from snapshotter.providers.alphavantage import AlphaVantageProvider
from snapshotter.core.bars import Capabilities
from snapshotter.providers.csv_dir import CsvDirProvider
from snapshotter.providers.polygon import PolygonProvider
from snapshotter.core.calendar import trading_days_between

AV = AlphaVantageProvider.capabilities
POLY = PolygonProvider.capabilities
CSV = CsvDirProvider.capabilities
TUE = date(2026, 11, 24)  # the sample data's last day
D = date


def test_three_day_gap_is_one_range_call_with_a_five_day_overlap():
    needs = fp.nightly_needs(["AAPL"], {"AAPL": D(2026, 11, 19)}, TUE)
    n = needs["AAPL"]
    assert n.missing == (D(2026, 11, 20), D(2026, 11, 23), D(2026, 11, 24))
    assert n.span_start == D(2026, 11, 13)  # Fri 13 .. Thu 19: the 5 cached trading days re-fetched
    plan = fp.plan(needs, AV, TUE)
    assert plan.range_calls == (fp.RangeCall("AAPL", D(2026, 11, 13), TUE, "compact", n.missing),)
    assert plan.calls == 1 and plan.grouped_calls == ()


def test_up_to_date_symbols_cost_nothing():
    needs = fp.nightly_needs(["AAPL", "MSFT"], {"AAPL": TUE, "MSFT": TUE}, TUE)
    plan = fp.plan(needs, POLY, TUE)
    assert plan.calls == 0 and plan.up_to_date == ("AAPL", "MSFT")


def test_gap_over_thanksgiving_and_a_weekend_counts_trading_days_only():
    needs = fp.nightly_needs(["KO"], {"KO": D(2026, 11, 25)}, D(2026, 11, 30))
    assert needs["KO"].missing == (D(2026, 11, 27), D(2026, 11, 30))  # Thu 26 is closed, Sat/Sun skipped


def test_target_on_a_weekend_fetches_up_to_friday():
    needs = fp.nightly_needs(["KO"], {"KO": D(2026, 11, 19)}, D(2026, 11, 22))
    assert needs["KO"].missing == (D(2026, 11, 20),)
    assert fp.nightly_needs(["KO"], {"KO": D(2026, 11, 20)}, D(2026, 11, 22))["KO"] is None


def test_new_symbol_gets_the_nightly_lookback_without_overlap():
    n = fp.nightly_needs(["NEW"], {}, TUE)["NEW"]
    assert len(n.missing) == fp.NIGHTLY_LOOKBACK and n.missing[-1] == TUE
    assert n.span_start == n.missing[0]
    assert fp.plan({"NEW": n}, AV, TUE).range_calls[0].size == "compact"


def test_a_stale_symbol_is_capped_to_the_lookback_so_free_keys_stay_on_compact():
    n = fp.nightly_needs(["OLD"], {"OLD": D(2025, 1, 2)}, TUE)["OLD"]
    assert len(n.missing) == fp.NIGHTLY_LOOKBACK
    call = fp.plan({"OLD": n}, AV, TUE).range_calls[0]
    assert call.size == "compact"
    assert len(trading_days_between(call.start, TUE)) == fp.NIGHTLY_LOOKBACK + fp.OVERLAP <= 99


def test_alphavantage_size_compact_within_99_bars_of_the_latest_day_else_full():
    days = trading_days_between(D(2026, 1, 2), TUE)
    assert fp.size_for(days[-99], TUE, AV) == "compact"
    assert fp.size_for(days[-100], TUE, AV) == "full"
    assert fp.size_for(days[-100], TUE, CSV) is None


def test_range_needs_skip_cached_days_and_have_no_overlap():
    cached = {"AAPL": {D(2026, 11, 2), D(2026, 11, 3)}, "MSFT": set(trading_days_between(D(2026, 11, 2), D(2026, 11, 6)))}
    needs = fp.range_needs(["AAPL", "MSFT", "SPY"], cached, D(2026, 11, 2), D(2026, 11, 6))
    assert needs["AAPL"].missing == (D(2026, 11, 4), D(2026, 11, 5), D(2026, 11, 6))
    assert needs["AAPL"].span_start == D(2026, 11, 4)
    assert needs["MSFT"] is None
    assert len(needs["SPY"].missing) == 5
    plan = fp.plan(needs, AV, TUE)
    assert [(c.symbol, c.start, c.end) for c in plan.range_calls] == [
        ("AAPL", D(2026, 11, 4), D(2026, 11, 6)),
        ("SPY", D(2026, 11, 2), D(2026, 11, 6)),
    ]


def test_polygon_prefers_one_grouped_call_per_day_when_cheaper():
    symbols = ["A", "B", "C", "D"]
    needs = fp.nightly_needs(symbols, {s: D(2026, 11, 19) for s in symbols}, TUE)
    plan = fp.plan(needs, POLY, TUE)
    assert plan.range_calls == ()
    assert [(g.day, g.symbols) for g in plan.grouped_calls] == [
        (D(2026, 11, 20), ("A", "B", "C", "D")),
        (D(2026, 11, 23), ("A", "B", "C", "D")),
        (D(2026, 11, 24), ("A", "B", "C", "D")),
    ]


def test_nightly_with_polygon_is_one_call_whatever_the_number_of_symbols():
    symbols = [f"S{i}" for i in range(300)]
    plan = fp.plan(fp.nightly_needs(symbols, {s: D(2026, 11, 23) for s in symbols}, TUE), POLY, TUE)
    assert plan.calls == 1 and plan.grouped_calls[0].day == TUE


def test_a_tie_keeps_range_calls_and_a_stale_symbol_gets_its_own_range():
    three = ["A", "B", "C"]
    plan = fp.plan(fp.nightly_needs(three, {s: D(2026, 11, 19) for s in three}, TUE), POLY, TUE)
    assert plan.grouped_calls == () and len(plan.range_calls) == 3
    many = [f"S{i}" for i in range(10)]
    cached = {s: D(2026, 11, 23) for s in many} | {"NEW": None}
    plan = fp.plan(fp.nightly_needs(many + ["NEW"], cached, TUE), POLY, TUE)
    assert [g.day for g in plan.grouped_calls] == [TUE]
    assert [c.symbol for c in plan.range_calls] == ["NEW"]
    assert plan.calls == 2


def test_range_providers_never_make_one_call_per_day():
    symbols = ["A", "B"]
    plan = fp.plan(fp.range_needs(symbols, {}, D(2026, 1, 2), TUE), CSV, TUE)
    assert plan.calls == 2


def test_one_year_backfill_of_500_symbols():
    symbols = [f"S{i:03d}" for i in range(500)]
    needs = fp.range_needs(symbols, {}, D(2025, 11, 25), TUE)
    av = fp.plan(needs, AV, TUE)
    assert av.calls == 500 and {c.size for c in av.range_calls} == {"full"}
    poly = fp.plan(needs, POLY, TUE)
    assert poly.calls == len(trading_days_between(D(2025, 11, 25), TUE)) == 251
    assert poly.range_calls == ()


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([f"S{i}" for i in range(12)]),
        st.one_of(st.none(), st.integers(min_value=0, max_value=130)),
        min_size=1,
    ),
    st.booleans(),
)
def test_every_missing_day_is_covered_and_never_more_calls_than_symbols(ages, grouped):
    days = trading_days_between(D(2026, 4, 1), TUE)
    cached = {s: (None if age is None else days[-1 - min(age, len(days) - 1)]) for s, age in ages.items()}
    needs = fp.nightly_needs(sorted(ages), cached, TUE)
    caps = Capabilities(supports_grouped=grouped)
    plan = fp.plan(needs, caps, TUE)
    todo = {s: n for s, n in needs.items() if n is not None}
    assert plan.calls <= len(todo)
    by_range = {c.symbol: c for c in plan.range_calls}
    grouped_days: dict[str, set] = {}
    for g in plan.grouped_calls:
        for s in g.symbols:
            grouped_days.setdefault(s, set()).add(g.day)
    for s, n in todo.items():
        if s in by_range:
            c = by_range[s]
            assert c.start <= n.missing[0] and c.end == n.missing[-1] and s not in grouped_days
        else:
            assert set(n.missing) <= grouped_days[s]
    assert set(plan.up_to_date) == {s for s, n in needs.items() if n is None}
