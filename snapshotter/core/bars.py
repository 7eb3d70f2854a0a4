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
class Split:
    """One split as a source reported it; :func:`snapshotter.core.validation.validate_splits` decides.

    From ``ex_date`` on, one share held before it is ``split_to / split_from`` shares
    (10-for-1: from 1, to 10). Unparsable values are ``Decimal('NaN')`` / None, as for bars.
    """

    symbol: str
    ex_date: date | None
    split_from: Decimal | None
    split_to: Decimal | None


@dataclass(frozen=True)
class SymbolChange:
    """A ticker change: from ``effective_date`` on, ``old_symbol`` trades as ``new_symbol``."""

    old_symbol: str
    new_symbol: str
    effective_date: date | None


@dataclass(frozen=True)
class SplitsPage:
    """One provider call's answer about splits: what it said, and how to go on.

    ``next`` is the provider's cursor for the next call (None: this was the last);
    ``covered`` are the symbols fully answered once this page is stored (a provider that
    answers all symbols at once lists them on its last page), so a stop between pages
    records a check only for what was really asked.
    """

    splits: list[Split]
    next: str | None = None
    covered: tuple[str, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """What the planner needs to know to spend as few calls as possible."""

    supports_grouped: bool = False  # one call returns every symbol for one date
    compact_bars: int | None = None  # a cheaper "latest N bars" mode exists (Alpha Vantage compact)
    # Provider.splits exists: ask it about a symbol at most once every this many days (None: no splits endpoint).
    splits_every_days: int | None = None
