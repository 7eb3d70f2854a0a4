"""The types the pure core and the providers share: a daily bar and what a provider can do. Pure: no I/O.

Providers build :class:`Bar` objects; :mod:`snapshotter.core.validation` decides
which of them may be stored and :mod:`snapshotter.core.fetch_plan` plans calls
from a provider's :class:`Capabilities`. Living here, the core needs nothing
from :mod:`snapshotter.providers`; the providers import these from the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal


@dataclass(frozen=True)
class Bar:
    """One daily bar as the provider sent it; :mod:`snapshotter.core.validation` decides if it is usable.

    ``price_date`` is None when the provider's date could not be parsed; numbers
    that could not be parsed are ``Decimal('NaN')`` so validation rejects them
    with a reason instead of the parser dropping them silently.
    """

    symbol: str
    price_date: date | None
    close: Decimal | None
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    volume: Decimal | None = None


@dataclass(frozen=True)
class Capabilities:
    """What the planner needs to know to spend as few calls as possible."""

    supports_grouped: bool = False  # one call returns every symbol for one date
    compact_bars: int | None = None  # a cheaper "latest N bars" mode exists (Alpha Vantage compact)
