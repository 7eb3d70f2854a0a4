"""Regenerate the sample data shipped in snapshotter/sample_data (deterministic).

A year of daily bars ending SAMPLE_END for a handful of symbols (a seeded random
walk in Decimal), five portfolios with lots opened and closed through the year,
and cash deposits and withdrawals. Run: python scripts/make_sample_data.py
"""

from __future__ import annotations

import csv
import random
import uuid
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from snapshotter.core.calendar import trading_days_between

OUT = Path(__file__).resolve().parent.parent / "snapshotter" / "sample_data"
SAMPLE_END = date(2026, 11, 24)
START = SAMPLE_END - timedelta(days=365)
SYMBOLS = {"AAPL": 230, "MSFT": 420, "GOOGL": 170, "AMZN": 185, "NVDA": 130, "JPM": 210, "XOM": 115, "KO": 62, "SPY": 560, "TSLA": 240}
NS = uuid.UUID("6f1c1b7e-3a53-4c1e-9d55-5b1d6f0b2a10")
CENT = Decimal("0.01")


def q(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_EVEN)


def main() -> None:
    rng = random.Random(42)
    days = trading_days_between(START, SAMPLE_END)
    closes: dict[str, dict[date, Decimal]] = {}
    (OUT / "prices").mkdir(parents=True, exist_ok=True)
    for sym, start in SYMBOLS.items():
        price = Decimal(start)
        closes[sym] = {}
        with (OUT / "prices" / f"{sym}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["date", "open", "high", "low", "close", "volume"])
            for d in days:
                open_ = price
                price = q(price * (1 + Decimal(rng.gauss(0.0004, 0.017)).quantize(Decimal("0.0001"))))
                hi = q(max(open_, price) * Decimal("1.006"))
                lo = q(min(open_, price) * Decimal("0.994"))
                closes[sym][d] = price
                w.writerow([d.isoformat(), q(open_), hi, lo, price, rng.randint(1_000_000, 90_000_000)])

    names = ["Retirement", "Growth", "Dividend", "Tech tilt", "Cash heavy"]
    pids = [uuid.uuid5(NS, n) for n in names]
    with (OUT / "portfolios.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "name", "owner_id", "base_currency", "created_at", "deleted_at"])
        for pid, n in zip(pids, names):
            w.writerow([pid, n, "demo-user", "USD", f"{START.isoformat()}T12:00:00+00:00", ""])

    syms = list(SYMBOLS)
    with (OUT / "positions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "portfolio_id", "symbol", "quantity", "entry_price", "entry_date", "exit_date", "exit_price"])
        n = 0
        for i, pid in enumerate(pids):
            for _ in range(3 + i):
                sym = rng.choice(syms)
                entry = rng.choice(days[: len(days) // 2])
                exit_ = ""
                exit_price = ""
                if rng.random() < 0.3:
                    ex = rng.choice([d for d in days if d > entry])
                    exit_, exit_price = ex.isoformat(), closes[sym][ex]
                qty = Decimal(rng.randint(1, 400)) / (4 if rng.random() < 0.2 else 1)
                w.writerow([uuid.uuid5(NS, f"lot{n}"), pid, sym, qty, closes[sym][entry], entry.isoformat(), exit_, exit_price])
                n += 1

    with (OUT / "cash.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "portfolio_id", "txn_date", "amount"])
        n = 0
        for pid in pids:
            for _ in range(rng.randint(1, 4)):
                amt = q(Decimal(rng.randint(-2000, 20000)) + Decimal(rng.randint(0, 99)) / 100)
                w.writerow([uuid.uuid5(NS, f"cash{n}"), pid, rng.choice(days).isoformat(), amt])
                n += 1

    with (OUT / "watchlist.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["symbol"])
        w.writerow(["SPY"])


if __name__ == "__main__":
    main()
