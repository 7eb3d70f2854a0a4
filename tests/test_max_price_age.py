"""--max-price-age N: a lot without a close on D valued at its symbol's latest close within the
N trading days before D (stale, not partial), on both backends: exact stored rows, healing when
the real close arrives, every path (nightly, refresh --date, --force, backfill), the option and
the variable."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshotter.core.calendar import trading_days_between
from snapshotter.core.valuation import price_window_start, price_window_starts
from snapshotter.data import schema
from snapshotter.jobs import snapshots as job
from tests.conftest import invoke
from tests.factories import NOW, D, add_cash, add_close, add_closes, add_lot, add_portfolio, snapshots, values

NOW_ARG = ("--now", NOW.isoformat())


def opts(**kw):
    return job.Options(**{"progress": False, "wait_for_batch": False, **kw})


def by_day(engine, pid) -> dict:
    return {r["snapshot_date"].isoformat(): r for r in snapshots(engine, pid)}


def row(holdings, total, cost, pnl, pct, n, priced, missing=None, stale=None, cash="1000"):
    """The stored values of one snapshot (VALUE_KEYS, then stale_symbols)."""
    return (Decimal(holdings), Decimal(cash), Decimal(total), Decimal(cost), Decimal(pnl), Decimal(pct), n, priced,
            missing is not None, missing, stale)


def stored(r: dict) -> tuple:
    return (*values(r), r["stale_symbols"])


# Trading days from 2026-08-31: Mon 09-07 is Labor Day, so 09-08 is three trading days after 09-02.
SEPT = trading_days_between(D("2026-08-31"), D("2026-09-18"))


@pytest.fixture
def delisted(engine):
    """AAA closes every day at 100, 101, ...; DLS's closes stop after 2026-09-02 (delisted).
    One portfolio: 10 AAA at 100 and 3 DLS at 50 (cost 1150), cash 1000, all from 08-31."""
    with engine.begin() as c:
        pid = add_portfolio(c, "delisted")
        add_lot(c, pid, "AAA", "10", "100", "2026-08-31")
        add_lot(c, pid, "DLS", "3", "50", "2026-08-31")
        add_cash(c, pid, "2026-08-31", "1000")
        add_closes(c, "AAA", {d: Decimal(100 + i) for i, d in enumerate(SEPT)})
        add_closes(c, "DLS", {D("2026-08-31"): Decimal("52"), D("2026-09-01"): Decimal("51.25"), D("2026-09-02"): Decimal("50.333333")})
    return pid


# The delisted portfolio with --max-price-age 3: 09-03, 09-04 and 09-08 (1, 2 and 3 trading days
# after DLS's last close) valued at 3 x 50.333333 = 150.999999; 09-09 (4 days after) partial.
DELISTED_N3 = {
    "2026-08-31": row("1156.000000", "2156.000000", "1150", "6", "0.521739", 2, 2),
    "2026-09-01": row("1163.750000", "2163.750000", "1150", "13.75", "1.195652", 2, 2),
    "2026-09-02": row("1170.999999", "2170.999999", "1150", "20.999999", "1.826087", 2, 2),
    "2026-09-03": row("1180.999999", "2180.999999", "1150", "30.999999", "2.695652", 2, 2, stale="DLS"),
    "2026-09-04": row("1190.999999", "2190.999999", "1150", "40.999999", "3.565217", 2, 2, stale="DLS"),
    "2026-09-08": row("1200.999999", "2200.999999", "1150", "50.999999", "4.434783", 2, 2, stale="DLS"),
    "2026-09-09": row("1060", "2060", "1000", "60", "6", 2, 1, missing="DLS"),
    "2026-09-10": row("1070", "2070", "1000", "70", "7", 2, 1, missing="DLS"),
}


def test_the_window_counts_trading_days():
    assert price_window_start(D("2026-09-08"), 3) == D("2026-09-02")  # 09-04, 09-03, 09-02 (09-07 Labor Day)
    assert price_window_start(D("2026-09-08"), 0) == D("2026-09-08")
    assert price_window_starts(SEPT, 3) == {d: price_window_start(d, 3) for d in SEPT}


def test_max_price_age_0_keeps_a_missing_close_partial(engine, delisted):
    r = job.portfolio_refresh(engine, D("2026-09-03"), opts(), now=NOW)
    assert r.exit_code == 0 and (r.stats["max_price_age"], r.stats["snapshots_stale"]) == (0, 0)
    assert stored(by_day(engine, delisted)["2026-09-03"]) == row("1030", "2030", "1000", "30", "3", 2, 1, missing="DLS")


def test_delisted_symbol_is_valued_at_its_last_close_for_n_trading_days_then_missing(engine, delisted):
    r = job.portfolio_refresh(engine, D("2026-09-10"), opts(max_price_age=3), now=NOW)
    assert r.exit_code == 0
    assert (r.stats["snapshots_created"], r.stats["snapshots_stale"], r.stats["max_price_age"]) == (8, 3, 3)
    assert {d: stored(x) for d, x in by_day(engine, delisted).items()} == DELISTED_N3
    # Nothing new: a rerun rewrites nothing (the stale days are recomputed, and are no better).
    r = job.portfolio_refresh(engine, D("2026-09-10"), opts(max_price_age=3), now=NOW)
    assert (r.stats["snapshots_created"], r.stats["snapshots_recomputed"], r.stats["snapshots_stale"]) == (0, 0, 0)
    # A run without --max-price-age leaves stale snapshots alone (a recompute would price fewer lots).
    r = job.portfolio_refresh(engine, D("2026-09-10"), opts(), now=NOW)
    assert (r.stats["snapshots_created"], r.stats["snapshots_recomputed"]) == (0, 0)
    assert {d: stored(x) for d, x in by_day(engine, delisted).items()} == DELISTED_N3


def test_dry_run_previews_the_stale_symbols_and_counts_them(engine, delisted):
    r = job.portfolio_refresh(engine, D("2026-09-10"), opts(max_price_age=3, dry_run=True), now=NOW)
    assert (r.stats["snapshots_created"], r.stats["snapshots_stale"]) == (8, 3)
    assert {p["snapshot_date"].isoformat(): p["stale_symbols"] for p in r.preview} == {
        d: v[-1] for d, v in DELISTED_N3.items()
    }
    assert snapshots(engine) == []


def test_nightly_recomputes_stale_days_when_the_real_close_arrives(engine, delisted):
    job.portfolio_refresh(engine, D("2026-09-10"), opts(max_price_age=3), now=NOW)
    before = by_day(engine, delisted)
    with engine.begin() as c:
        add_close(c, "DLS", "2026-09-03", "49.5")  # a late close: DLS traded once more
    r = job.portfolio_refresh(engine, D("2026-09-10"), opts(max_price_age=3), now=NOW)
    assert r.exit_code == 0
    # 09-03 its own close; 09-04 and 09-08 the newer stale close; 09-09 now within 3 days of it (was partial).
    # the late close lands on a day with snapshots: recorded as invalidated history, and that pass recomputes
    # every snapshot of its holders from 09-03 (5 days: the 4 stale ones and the last, which was already right)
    recomputed = r.stats["snapshots_recomputed"] + r.stats["snapshots_recomputed_by_invalidation"]
    assert (r.stats["snapshots_created"], recomputed, r.stats["snapshots_stale"]) == (0, 5, 3)
    after = by_day(engine, delisted)
    assert {d: stored(x) for d, x in after.items()} == {
        **DELISTED_N3,
        "2026-09-03": row("1178.500000", "2178.500000", "1150", "28.5", "2.478261", 2, 2),
        "2026-09-04": row("1188.500000", "2188.500000", "1150", "38.5", "3.347826", 2, 2, stale="DLS"),
        "2026-09-08": row("1198.500000", "2198.500000", "1150", "48.5", "4.217391", 2, 2, stale="DLS"),
        "2026-09-09": row("1208.500000", "2208.500000", "1150", "58.5", "5.086957", 2, 2, stale="DLS"),
    }
    assert after["2026-09-03"]["created_at"] == before["2026-09-03"]["created_at"]
    r = job.portfolio_refresh(engine, D("2026-09-10"), opts(max_price_age=3), now=NOW)
    assert (r.stats["snapshots_recomputed"], r.stats["snapshots_stale"]) == (0, 0)


def test_refresh_date_recomputes_a_stale_day_whose_close_arrived(db_url, engine, delisted):
    job.portfolio_refresh(engine, D("2026-09-10"), opts(max_price_age=3), now=NOW)
    with engine.begin() as c:
        add_close(c, "DLS", "2026-09-04", "49")
    r = invoke(*NOW_ARG, "refresh", "--date", "2026-09-04", "--max-price-age", "3", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    recomputed = summary["snapshots_recomputed"] + summary["snapshots_recomputed_by_invalidation"]  # the late close: invalidated history
    assert (summary["snapshots_created"], recomputed, summary["snapshots_stale"]) == (0, 1, 0)
    # Only D: 09-08 still shows 09-02's close (a nightly run would pick up 09-04's).
    assert {d: stored(x) for d, x in by_day(engine, delisted).items()} == {
        **DELISTED_N3, "2026-09-04": row("1187.000000", "2187.000000", "1150", "37", "3.217391", 2, 2),
    }


def test_refresh_force_applies_the_age_given(engine, delisted):
    job.portfolio_refresh(engine, D("2026-09-04"), opts(), now=NOW)
    assert by_day(engine, delisted)["2026-09-04"]["is_partial"] is True
    r = job.refresh_date(engine, D("2026-09-04"), force=True, opts=opts(max_price_age=3), now=NOW)
    assert (r.stats["snapshots_recomputed"], r.stats["snapshots_stale"]) == (1, 1)
    assert stored(by_day(engine, delisted)["2026-09-04"]) == DELISTED_N3["2026-09-04"]
    r = job.refresh_date(engine, D("2026-09-04"), force=True, opts=opts(), now=NOW)  # forced back to today's rule
    assert (r.stats["snapshots_recomputed"], r.stats["snapshots_stale"]) == (1, 0)
    assert stored(by_day(engine, delisted)["2026-09-04"]) == row("1040", "2040", "1000", "40", "4", 2, 1, missing="DLS")


def test_heal_turns_a_partial_snapshot_stale_when_run_with_an_age(engine, delisted):
    job.portfolio_refresh(engine, D("2026-09-10"), opts(), now=NOW)  # 09-03 .. 09-10 partial
    r = job.portfolio_refresh(engine, D("2026-09-10"), opts(max_price_age=3), now=NOW)
    assert (r.stats["snapshots_created"], r.stats["snapshots_recomputed"], r.stats["snapshots_stale"]) == (0, 3, 3)
    assert {d: stored(x) for d, x in by_day(engine, delisted).items()} == DELISTED_N3


def test_backfill_over_a_long_gap(engine):
    """XYZ has no close from 08-31 to 09-11 (nine trading days); with --max-price-age 2 the first
    two are valued at 08-28's close, the other seven are partial."""
    days = trading_days_between(D("2026-08-24"), D("2026-09-18"))
    gap = trading_days_between(D("2026-08-31"), D("2026-09-11"))
    with engine.begin() as c:
        pid = add_portfolio(c, "gap")
        add_lot(c, pid, "XYZ", "5", "20", "2026-08-24")
        add_closes(c, "AAA", {d: Decimal("1") for d in days})  # every day has a close
        add_closes(c, "XYZ", {d: Decimal("20.5") + i for i, d in enumerate(d for d in days if d not in gap)})
    r = job.backfill(engine, str(pid), D("2026-08-24"), D("2026-09-18"), opts=opts(max_price_age=2), now=NOW)
    assert r.exit_code == 0
    assert (r.stats["snapshots_created"], r.stats["snapshots_stale"]) == (19, 2)
    got = {d: stored(x) for d, x in by_day(engine, pid).items()}

    def complete(close, stale=None):  # 5 XYZ at cost 100, no cash
        h = Decimal(5) * Decimal(close)
        return row(h, h, "100", h - 100, h - 100, 1, 1, stale=stale, cash="0")

    partial = row("0", "0", "0", "0", "0", 1, 0, missing="XYZ", cash="0")
    assert got == {
        "2026-08-24": complete("20.5"), "2026-08-25": complete("21.5"), "2026-08-26": complete("22.5"),
        "2026-08-27": complete("23.5"), "2026-08-28": complete("24.5"),
        "2026-08-31": complete("24.5", stale="XYZ"), "2026-09-01": complete("24.5", stale="XYZ"),
        **{d.isoformat(): partial for d in gap[2:]},
        "2026-09-14": complete("25.5"), "2026-09-15": complete("26.5"), "2026-09-16": complete("27.5"),
        "2026-09-17": complete("28.5"), "2026-09-18": complete("29.5"),
    }
    assert got["2026-08-31"][:6] == (Decimal("122.5"), 0, Decimal("122.5"), 100, Decimal("22.5"), Decimal("22.5"))


def test_a_lot_entered_after_its_symbols_last_close_is_valued_stale(engine):
    with engine.begin() as c:
        pid = add_portfolio(c, "late entry")
        add_lot(c, pid, "OLD", "2", "10", "2026-09-09")  # OLD's last closes: 09-03 and 09-04
        add_cash(c, pid, "2026-09-09", "5")
        add_closes(c, "OLD", {D("2026-09-03"): Decimal("11"), D("2026-09-04"): Decimal("12.125")})
        add_closes(c, "AAA", {d: Decimal("1") for d in SEPT})
    r = job.portfolio_refresh(engine, D("2026-09-11"), opts(max_price_age=3), now=NOW)
    assert (r.stats["snapshots_created"], r.stats["snapshots_stale"]) == (3, 2)
    stale = row("24.250000", "29.250000", "20", "4.25", "21.25", 1, 1, stale="OLD", cash="5")
    assert {d: stored(x) for d, x in by_day(engine, pid).items()} == {
        "2026-09-09": stale,  # window 09-03 .. 09-09: 09-04's close
        "2026-09-10": stale,  # window 09-04 .. 09-10: still 09-04's
        "2026-09-11": row("0", "5", "0", "0", "0", 1, 0, missing="OLD", cash="5"),  # window from 09-08
    }


def test_the_option_wins_over_the_variable_and_the_summary_counts_stale_snapshots(db_url, engine, delisted):
    env = {"SNAPSHOTTER_MAX_PRICE_AGE": "3"}
    r = invoke(*NOW_ARG, "portfolio-refresh", "--date", "2026-09-04", "--no-wait", "--max-price-age", "0", "--json",
                db_url=db_url, env=env)
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)["max_price_age"], json.loads(r.stdout)["snapshots_stale"]) == (0, 0)
    assert by_day(engine, delisted)["2026-09-04"]["is_partial"] is True
    r = invoke(*NOW_ARG, "portfolio-refresh", "--date", "2026-09-10", "--no-wait", "--json", db_url=db_url, env=env)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["max_price_age"], summary["snapshots_created"], summary["snapshots_recomputed"], summary["snapshots_stale"]) == (3, 3, 2, 3)
    assert {d: stored(x) for d, x in by_day(engine, delisted).items()} == DELISTED_N3
    pid = str(delisted)
    r = invoke(*NOW_ARG, "backfill", "--portfolio", pid, "--from", "2026-09-01", "--to", "2026-09-10", "--force",
                "--max-price-age", "1", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["snapshots_stale"] == 1  # 09-03 only
    r = invoke("history", "--portfolio", pid, "--from", "2026-09-01", "--to", "2026-09-10", db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert "stale: DLS" in r.stdout and "partial: DLS" in r.stdout


@pytest.mark.parametrize("value", ["-1", "three", "1.5", "10001"])
def test_a_bad_option_exits_64(db_url, value):
    r = invoke("portfolio-refresh", "--no-wait", "--max-price-age", value, db_url=db_url)
    assert r.returncode == 64, r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith("snapshotter: error:")]
    assert len(errors) == 1 and errors[0].startswith("snapshotter: error: Invalid value for '--max-price-age'"), r.stderr


@pytest.mark.parametrize("command", [("portfolio-refresh", "--no-wait"), ("refresh", "--date", "2026-09-04")])
@pytest.mark.parametrize("value", ["-1", "three", "10001"])
def test_a_bad_variable_exits_78_with_one_line(db_url, engine, command, value):
    r = invoke(*NOW_ARG, *command, db_url=db_url, env={"SNAPSHOTTER_MAX_PRICE_AGE": value})
    assert r.returncode == 78, r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith("snapshotter: error:")]
    assert errors == [f"snapshotter: error: SNAPSHOTTER_MAX_PRICE_AGE must be a whole number of trading days from 0 to 10000, got {value!r}"]
    assert snapshots(engine) == []


def test_without_an_age_the_statements_are_todays(db_url, engine, delisted):
    """N = 0 reads the day's own close from symbol_prices_daily and heals partial snapshots only;
    N > 0 adds the window table and the stale heal."""
    def explained(*extra):
        r = invoke(*NOW_ARG, "portfolio-refresh", "--date", "2026-09-10", "--no-wait", "--explain", "sql", "--json", *extra, db_url=db_url)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["steps"]

    steps = explained()
    today = ["the chunk's portfolios", "days after each portfolio's last snapshot", "partial snapshots to heal",
             "value the new snapshots", "the frontier status reads", "market values of the first slice"]
    assert [s["step"] for s in steps] == today
    assert not any("_snap_stale_closes" in s["sql"] or "stale_symbols IS NOT NULL" in s["sql"] for s in steps)
    assert "LEFT OUTER JOIN symbol_prices_daily" in steps[3]["sql"]
    steps = explained("--max-price-age", "3")
    assert [s["step"] for s in steps] == ["older closes within --max-price-age 3 (once per connection)", *today[:3],
                                          "stale snapshots to heal", *today[3:]]
    assert "LEFT OUTER JOIN symbol_prices_daily" in steps[5]["sql"] and "LEFT OUTER JOIN _snap_stale_closes" in steps[5]["sql"]


# --- property: every stored row against an independent Decimal computation ---------------------

PROP_DAYS = trading_days_between(D("2026-10-01"), D("2026-10-16"))  # 12 trading days
PROP_SYMBOLS = ["AAA", "BBB", "CCC"]
Q6 = Decimal("0.000001")
_money = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("99999.999999"), places=6, allow_nan=False, allow_infinity=False)
_qty = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("5000"), places=4, allow_nan=False, allow_infinity=False)
_day = st.integers(min_value=0, max_value=len(PROP_DAYS) - 1)


def _expected(lots, cash, closes, i: int, n: int):
    """--max-price-age n on PROP_DAYS[i], written independently of the engine: the day's own close,
    else the close of the latest of the n trading days before it that has one."""
    r6 = lambda x: x.quantize(Q6, rounding=ROUND_HALF_EVEN)  # noqa: E731
    d = PROP_DAYS[i]
    with localcontext() as ctx:
        ctx.prec = 100
        held = [l for l in lots if l[3] <= i and (l[4] is None or l[4] > i)]
        holdings = cost = Decimal(0)
        priced, missing, stale = 0, set(), set()
        for sym, q, price, _e, _x in held:
            j = next((j for j in range(i, max(0, i - n) - 1, -1) if (sym, j) in closes), None)
            if j is None:
                missing.add(sym)
                continue
            if j < i:
                stale.add(sym)
            priced += 1
            holdings += q * closes[(sym, j)]
            cost += q * price
        cash_bal = sum((a for t, a in cash if t <= i), Decimal(0))
        pnl = holdings - cost
        pct = Decimal(0) if cost == 0 else pnl * 100 / cost
        return (r6(holdings), r6(cash_bal), r6(holdings + cash_bal), r6(cost), r6(pnl), r6(pct), len(held), priced,
                len(held) > priced, ",".join(sorted(missing)) or None, ",".join(sorted(stale)) or None), d


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    n=st.integers(min_value=0, max_value=4),
    lots=st.lists(st.tuples(st.sampled_from(PROP_SYMBOLS), _qty, _money, _day, st.one_of(st.none(), _day)), max_size=6),
    cash=st.lists(st.tuples(_day, st.decimals(min_value=-5000, max_value=5000, places=2, allow_nan=False, allow_infinity=False)), max_size=3),
    closes=st.dictionaries(st.tuples(st.sampled_from(PROP_SYMBOLS), _day), _money, min_size=1, max_size=20),
)
def test_every_row_matches_an_independent_computation(engine, n, lots, cash, closes):
    lots = [(s, q, p, e, x if x is not None and x > e else None) for s, q, p, e, x in lots]
    with engine.begin() as c:
        for t in ("portfolio_snapshots", "positions", "cash_transactions", "portfolios", "symbol_prices_daily", "batch_run_tracking"):
            c.execute(schema.metadata.tables[t].delete())
        pid = add_portfolio(c)
        for s, q, p, e, x in lots:
            add_lot(c, pid, s, q, p, PROP_DAYS[e], PROP_DAYS[x] if x is not None else None)
        for t, a in cash:
            add_cash(c, pid, PROP_DAYS[t], a)
        for (s, j), close in closes.items():
            add_close(c, s, PROP_DAYS[j], close)
    r = job.backfill(engine, str(pid), PROP_DAYS[0], PROP_DAYS[-1], opts=opts(max_price_age=n), now=NOW)
    assert r.exit_code == 0
    got = {x["snapshot_date"]: stored(x) for x in snapshots(engine, pid)}
    first = min([e for _, _, _, e, _ in lots] + [t for t, _ in cash], default=None)
    priced_days = {j for _, j in closes}
    want = dict(_expected(lots, cash, closes, i, n)[::-1] for i in range(len(PROP_DAYS))
                if i in priced_days and first is not None and i >= first)
    assert got == want
    assert r.stats["snapshots_stale"] == sum(1 for v in want.values() if v[-1] is not None)
