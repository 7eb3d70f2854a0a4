"""Property test: every stored snapshot equals an independent Decimal computation."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshotter.data import schema
from snapshotter.jobs import snapshots as job
from snapshotter.core.calendar import trading_days_between
from tests.factories import NOW, add_cash, add_close, add_lot, add_portfolio, snapshots

DAYS = trading_days_between(date(2026, 10, 1), date(2026, 10, 16))  # 12 trading days
SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]
Q6 = Decimal("0.000001")

money = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("99999.999999"), places=6, allow_nan=False, allow_infinity=False)
qty = st.decimals(min_value=Decimal("0.0000000001"), max_value=Decimal("50000"), places=10, allow_nan=False, allow_infinity=False)
day_ix = st.integers(min_value=0, max_value=len(DAYS) - 1)

lot_st = st.tuples(st.sampled_from(SYMBOLS), qty, money, day_ix, st.one_of(st.none(), day_ix), st.booleans())
cash_st = st.tuples(st.integers(min_value=-5, max_value=len(DAYS) - 1),
                    st.decimals(min_value=Decimal("-50000"), max_value=Decimal("50000"), places=6, allow_nan=False, allow_infinity=False))
# closes: for every (symbol, day) either a price or missing
closes_st = st.dictionaries(st.tuples(st.sampled_from(SYMBOLS), day_ix), money, min_size=1, max_size=len(SYMBOLS) * len(DAYS))


def r6(x: Decimal) -> Decimal:
    return x.quantize(Q6, rounding=ROUND_HALF_EVEN)


def expected_snapshot(lots, cash, closes, d: date):
    """The SPEC rules, written independently of the engine."""
    with localcontext() as ctx:
        ctx.prec = 100
        held = [l for l in lots if not l["deleted"] and l["entry"] <= d and (l["exit"] is None or l["exit"] > d)]
        holdings = cost = Decimal(0)
        priced = 0
        missing = set()
        for l in held:
            close = closes.get((l["symbol"], d))
            if close is None:
                missing.add(l["symbol"])
                continue
            priced += 1
            holdings += l["qty"] * close
            cost += l["qty"] * l["price"]
        cash_bal = sum((a for t, a in cash if t <= d), Decimal(0))
        pnl = holdings - cost
        pct = Decimal(0) if cost == 0 else pnl * 100 / cost
        return (r6(holdings), r6(cash_bal), r6(holdings + cash_bal), r6(cost), r6(pnl), r6(pct),
                len(held), priced, len(held) > priced, ",".join(sorted(missing)) or None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lots=st.lists(lot_st, min_size=0, max_size=8), cash=st.lists(cash_st, max_size=4), closes=closes_st)
def test_every_snapshot_matches_an_independent_decimal_computation(engine, lots, cash, closes):
    with engine.begin() as c:
        for t in ("portfolio_snapshots", "positions", "cash_transactions", "portfolios", "symbol_prices_daily", "batch_run_tracking"):
            c.execute(schema.metadata.tables[t].delete())
        pid = add_portfolio(c)
        # A neighbour with earlier activity: nothing of it may leak into pid's snapshots.
        other = add_portfolio(c, "neighbour")
        add_lot(c, other, "AAA", "7", "3", DAYS[0] - timedelta(days=20))
        add_cash(c, other, DAYS[0] - timedelta(days=30), "1234.5")
        lot_rows = []
        for sym, q, price, e, x, deleted in lots:
            entry = DAYS[e]
            exit_ = DAYS[x] if x is not None and x > e else None
            add_lot(c, pid, sym, q, price, entry, exit_, deleted)
            lot_rows.append({"symbol": sym, "qty": q, "price": price, "entry": entry, "exit": exit_, "deleted": deleted})
        cash_rows = []
        for i, amount in cash:
            t = DAYS[i] if i >= 0 else DAYS[0] - timedelta(days=-i)
            add_cash(c, pid, t, amount)
            cash_rows.append((t, amount))
        price_map = {}
        for (sym, i), close in closes.items():
            add_close(c, sym, DAYS[i], close)
            price_map[(sym, DAYS[i])] = close
    result = job.backfill(engine, str(pid), DAYS[0], DAYS[-1], opts=job.Options(progress=False), now=NOW)
    assert result.exit_code == 0
    rows = {r["snapshot_date"]: r for r in snapshots(engine, pid)}
    priced_days = {d for (_, d) in price_map}
    first_activity = min([l["entry"] for l in lot_rows if not l["deleted"]] + [t for t, _ in cash_rows], default=None)
    want_days = [d for d in DAYS if d in priced_days and first_activity is not None and d >= first_activity]
    assert sorted(rows) == want_days
    for d in want_days:
        got = rows[d]
        assert (got["holdings_value"], got["cash_balance"], got["total_value"], got["total_cost"], got["total_pnl"],
                got["pnl_percent"], got["position_count"], got["priced_position_count"], got["is_partial"],
                got["missing_symbols"]) == expected_snapshot(lot_rows, cash_rows, price_map, d), d
