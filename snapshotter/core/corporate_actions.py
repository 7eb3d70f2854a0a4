"""Corporate-action rules of the ingestion side. Pure: no I/O, no clock.

* When to ask a provider about splits (:func:`splits_due`, :func:`splits_since`): a
  symbol at most once every ``Capabilities.splits_every_days`` days, remembered per
  provider and symbol; a symbol checked before is asked again from ``RECHECK_DAYS``
  before its last check (a provider may publish a split late, or correct it), one never
  checked from ``FIRST_LOOKBACK_DAYS`` back.
* Which close moves look like a split nobody recorded (:func:`suspected_split`): two
  consecutive closes whose ratio is within ``TOLERANCE`` of a common split ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

FIRST_LOOKBACK_DAYS = 730  # a symbol never asked about: its splits of the last two years
RECHECK_DAYS = 30  # a symbol asked before: from this long before its last check

COMMON_RATIOS = tuple(Decimal(r) for r in (2, 3, 4, 5, 10, 20))
TOLERANCE = Decimal("0.02")  # a move within 2% of a common ratio is suspicious


def splits_due(symbols: list[str], last_checked: dict[str, date], today: date, every_days: int) -> list[str]:
    """The symbols whose last split check is ``every_days`` or more days before ``today`` (or never)."""
    return sorted(s for s in symbols if s not in last_checked or (today - last_checked[s]).days >= every_days)


def splits_since(due: list[str], last_checked: dict[str, date], today: date) -> date:
    """The earliest ex-date worth asking for so that every due symbol is covered."""
    starts = [
        last_checked[s] - timedelta(days=RECHECK_DAYS) if s in last_checked else today - timedelta(days=FIRST_LOOKBACK_DAYS)
        for s in due
    ]
    return min(starts, default=today - timedelta(days=RECHECK_DAYS))


@dataclass(frozen=True)
class SuspectedSplit:
    """Consecutive closes ``prev_close`` (``prev_date``) then ``close`` (``day``) that moved like a split."""

    symbol: str
    day: date
    prev_date: date
    prev_close: Decimal
    close: Decimal
    split_from: Decimal
    split_to: Decimal

    @property
    def ratio(self) -> str:
        """As an operator says it: ``10-for-1`` (the close fell tenfold), ``1-for-10`` (a reverse split)."""
        return f"{self.split_to.normalize():f}-for-{self.split_from.normalize():f}"

    def describe(self) -> str:
        return f"{self.symbol} {self.day} ({self.ratio}: {self.prev_close.normalize():f} on {self.prev_date} -> {self.close.normalize():f})"

    def as_dict(self) -> dict:
        return {"symbol": self.symbol, "day": self.day.isoformat(), "prev_date": self.prev_date.isoformat(),
                "prev_close": str(self.prev_close), "close": str(self.close), "ratio": self.ratio}


def suspected_split(symbol: str, prev_date: date, prev_close: Decimal, day: date, close: Decimal) -> SuspectedSplit | None:
    """The split these two consecutive closes look like, or None.

    The factor prev_close / close is compared with every common ratio r and 1/r: within
    ``TOLERANCE`` (relative) of r = 10 the close fell tenfold, as on the ex-date of a
    10-for-1 split (from 1, to 10); of 1/10, it rose tenfold (1-for-10, from 10 to 1).
    """
    if prev_close <= 0 or close <= 0:
        return None
    factor = prev_close / close
    for r in COMMON_RATIOS:
        if abs(factor / r - 1) <= TOLERANCE:
            return SuspectedSplit(symbol, day, prev_date, prev_close, close, Decimal(1), r)
        if abs(factor * r - 1) <= TOLERANCE:
            return SuspectedSplit(symbol, day, prev_date, prev_close, close, r, Decimal(1))
    return None


# The widest move suspected_split can match (1.5 is safely below 2 x 0.98): the SQL's coarse filter.
COARSE_FACTOR = Decimal("1.5")
