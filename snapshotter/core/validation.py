"""Which provider bars may be stored. Pure: no I/O.

A bar is stored only when its close is a finite positive decimal that fits
NUMERIC(20, 6), its date parses, is an NYSE trading day and is not in the
future, and no other bar of the same symbol has the same date (both copies are
rejected: nothing says which one is right). Open/high/low, when present, follow
the same rule as the close; volume must be a non-negative whole number. Bars
outside the requested range are not errors (Alpha Vantage ``compact`` always
sends 100 bars), they are just not this run's business.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

from snapshotter.core.bars import Bar
from snapshotter.core.calendar import is_trading_day

SCALE = Decimal("0.000001")  # NUMERIC(20, 6)
MAX_PRICE = Decimal("1e14")  # 14 integer digits
MAX_VOLUME = 2**63 - 1  # BIGINT


@dataclass(frozen=True)
class Rejected:
    symbol: str
    price_date: date | None
    reason: str


def _price(value: Decimal | None, name: str, required: bool) -> Decimal | None:
    if value is None:
        if required:
            raise ValueError(f"{name} is missing")
        return None
    if not value.is_finite():
        raise ValueError(f"{name} is not a finite number ({value})")
    if value <= 0:
        raise ValueError(f"{name} is not positive ({value})")
    q = value.quantize(SCALE, rounding=ROUND_HALF_EVEN)
    if q >= MAX_PRICE or q <= 0:
        raise ValueError(f"{name} is out of range ({value})")
    return q


def _volume(value: Decimal | None) -> int | None:
    if value is None:
        return None
    if not value.is_finite() or value < 0 or value != value.to_integral_value() or value > MAX_VOLUME:
        raise ValueError(f"volume is not a non-negative whole number ({value})")
    return int(value)


def validate(bars: list[Bar], start: date, end: date, today: date) -> tuple[list[dict], list[Rejected]]:
    """Split ``bars`` (one symbol's, or one grouped day's) into storable rows and rejects.

    Rows are dicts with the ``symbol_prices_daily`` columns except source/fetched_at,
    prices quantized half-even to 6 decimals so both backends store the same value.
    """
    rejected: list[Rejected] = []
    dup = Counter((b.symbol, b.price_date) for b in bars if b.price_date is not None)
    rows: list[dict] = []
    for b in bars:
        try:
            if b.price_date is None:
                raise ValueError("date is missing or not a date")
            if b.price_date > today:
                raise ValueError(f"date {b.price_date} is in the future")
            if not start <= b.price_date <= end:
                continue
            if not is_trading_day(b.price_date):
                raise ValueError(f"{b.price_date} is not an NYSE trading day")
            if dup[(b.symbol, b.price_date)] > 1:
                raise ValueError(f"date {b.price_date} appears {dup[(b.symbol, b.price_date)]} times")
            rows.append(
                {
                    "symbol": b.symbol,
                    "price_date": b.price_date,
                    "close": _price(b.close, "close", True),
                    "open": _price(b.open, "open", False),
                    "high": _price(b.high, "high", False),
                    "low": _price(b.low, "low", False),
                    "volume": _volume(b.volume),
                }
            )
        except ValueError as exc:
            rejected.append(Rejected(b.symbol, b.price_date, str(exc)))
    rows.sort(key=lambda r: (r["symbol"], r["price_date"]))
    return rows, rejected
