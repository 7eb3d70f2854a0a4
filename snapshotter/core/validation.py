"""Which prices and symbols may be stored: the one home of price-row validity. Pure: no I/O, no clock.

A bar is stored only when its close is a finite positive decimal that fits
NUMERIC(20, 6), its date parses, is an NYSE trading day and is not in the
future, and no other bar of the same symbol has the same date (both copies are
rejected: nothing says which one is right). Open/high/low, when present, follow
the same rule as the close; volume must be a non-negative whole number. Bars
outside the requested range are not errors (Alpha Vantage ``compact`` always
sends 100 bars), they are just not this run's business. ``snapshotter load --prices``
checks each row with the same :func:`check_bar`.

Splits and ticker changes (every source: providers, ``splits.csv``, ``load --splits`` and
``load --symbol-changes``) are checked here too: positive ratios that fit NUMERIC(20, 10),
an ex-date at most ``SPLIT_HORIZON_DAYS`` after today, no (symbol, ex_date) listed twice
with different ratios.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

from snapshotter.core.bars import Bar, Split, SymbolChange
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


MAX_SYMBOL = 20


def fit_numeric(value: Decimal, precision: int, scale: int, name: str = "value") -> Decimal:
    """``value`` as NUMERIC(precision, scale) stores it, or ValueError: never a silent rounding
    (PostgreSQL would round, SQLite's exact text would not) nor a database overflow."""
    if not value.is_finite():
        raise ValueError(f"{name} is not a finite number ({value})")
    if value == 0:
        return value
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > scale:
        raise ValueError(f"{name} has more than {scale} decimals ({value})")
    if value.adjusted() + 1 > precision - scale:
        raise ValueError(f"{name} is too large: at most {precision - scale} digits before the point ({value})")
    return value


def symbol(raw: str) -> str:
    """A ticker as stored: stripped, upper case, 1-20 characters, no whitespace, comma or slash."""
    s = raw.strip().upper()
    if not s or len(s) > MAX_SYMBOL or any(c.isspace() or c in "/\\," for c in s):
        raise ValueError(f"bad symbol {raw!r}")
    return s


def check_bar(b: Bar, today: date) -> dict:
    """One bar as a storable row (prices quantized half-even to 6 decimals), or ValueError with the reason.

    ``today`` is the New York date of the command's instant: a later date is in the future.
    """
    _check_date(b.price_date, today)
    return _row(b)


def _check_date(d: date | None, today: date) -> None:
    if d is None:
        raise ValueError("date is missing or not a date")
    if d > today:
        raise ValueError(f"date {d} is in the future")
    if not is_trading_day(d):
        raise ValueError(f"{d} is not an NYSE trading day")


def _row(b: Bar) -> dict:
    return {
        "symbol": b.symbol,
        "price_date": b.price_date,
        "close": _price(b.close, "close", True),
        "open": _price(b.open, "open", False),
        "high": _price(b.high, "high", False),
        "low": _price(b.low, "low", False),
        "volume": _volume(b.volume),
    }


def validate(bars: list[Bar], start: date, end: date, today: date) -> tuple[list[dict], list[Rejected]]:
    """Split ``bars`` (one symbol's, or one grouped day's) into storable rows and rejects.

    Rows are dicts with the ``symbol_prices_daily`` columns except source/fetched_at.
    """
    rejected: list[Rejected] = []
    dup = Counter((b.symbol, b.price_date) for b in bars if b.price_date is not None)
    rows: list[dict] = []
    for b in bars:
        try:
            if b.price_date is not None and b.price_date <= today and not start <= b.price_date <= end:
                continue
            _check_date(b.price_date, today)
            if dup[(b.symbol, b.price_date)] > 1:
                raise ValueError(f"date {b.price_date} appears {dup[(b.symbol, b.price_date)]} times")
            rows.append(_row(b))
        except ValueError as exc:
            rejected.append(Rejected(b.symbol, b.price_date, str(exc)))
    rows.sort(key=lambda r: (r["symbol"], r["price_date"]))
    return rows, rejected


# --- corporate actions ------------------------------------------------------------------

# How far ahead a split may be announced: providers list upcoming splits, but an ex-date
# further out than this is a typo (2062 for 2026) or a proposal, not an event.
SPLIT_HORIZON_DAYS = 90


def _ratio_side(value: Decimal | None, name: str) -> Decimal:
    if value is None:
        raise ValueError(f"{name} is missing")
    if not value.is_finite():
        raise ValueError(f"{name} is not a finite number ({value})")
    if value <= 0:
        raise ValueError(f"{name} must be positive ({value})")
    return fit_numeric(value, 20, 10, name)  # symbol_splits: NUMERIC(20, 10)


def _not_beyond_horizon(d: date | None, today: date, name: str) -> date:
    if d is None:
        raise ValueError(f"{name} is missing or not a date")
    if (d - today).days > SPLIT_HORIZON_DAYS:
        raise ValueError(f"{name} {d} is more than {SPLIT_HORIZON_DAYS} days after today ({today})")
    return d


def check_split(s: Split, today: date) -> dict:
    """One split as a storable row (symbol, ex_date, split_from, split_to), or ValueError with the reason.

    ``today`` is the New York date of the command's instant; an ex-date may be up to
    ``SPLIT_HORIZON_DAYS`` after it (announced splits).
    """
    return {
        "symbol": symbol(s.symbol or ""),
        "ex_date": _not_beyond_horizon(s.ex_date, today, "ex_date"),
        "split_from": _ratio_side(s.split_from, "split_from"),
        "split_to": _ratio_side(s.split_to, "split_to"),
    }


def same_ratio(a: dict, b: dict) -> bool:
    """Two split rows describe the same event when their ratios are equal (2-for-20 is 1-for-10)."""
    return a["split_to"] * b["split_from"] == b["split_to"] * a["split_from"]


def same_change(a: dict, b: dict) -> bool:
    """Two ticker-change rows for one (old_symbol, effective_date) describe the same change when they name the same new symbol."""
    return a["new_symbol"] == b["new_symbol"]


def validate_splits(splits: list[Split], today: date) -> tuple[list[dict], list[Rejected]]:
    """Split ``splits`` into storable rows and rejects (``Rejected.price_date`` is the ex-date).

    The same (symbol, ex_date) twice with the same ratio is one split; with different
    ratios nothing says which is right, so every copy is rejected.
    """
    rows: dict[tuple, dict] = {}
    rejected: list[Rejected] = []
    conflicting: set[tuple] = set()
    for s in splits:
        try:
            row = check_split(s, today)
        except ValueError as exc:
            rejected.append(Rejected(s.symbol, s.ex_date, str(exc)))
            continue
        key = (row["symbol"], row["ex_date"])
        if key in rows and not same_ratio(rows[key], row):
            conflicting.add(key)
        rows.setdefault(key, row)
    for key in sorted(conflicting):
        del rows[key]
        rejected.append(Rejected(key[0], key[1], f"ex_date {key[1]} is listed more than once with different ratios"))
    return [rows[k] for k in sorted(rows)], rejected


def check_symbol_change(c: SymbolChange, today: date) -> dict:
    """One ticker change as a storable row, or ValueError: two different valid symbols, a date within the horizon."""
    old, new = symbol(c.old_symbol or ""), symbol(c.new_symbol or "")
    if old == new:
        raise ValueError(f"old_symbol and new_symbol are both {old}")
    return {"old_symbol": old, "new_symbol": new, "effective_date": _not_beyond_horizon(c.effective_date, today, "effective_date")}
