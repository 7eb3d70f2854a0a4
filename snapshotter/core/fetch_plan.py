"""Which provider calls a batch makes. Pure: no I/O, no clock.

Two steps:

1. :func:`nightly_needs` / :func:`range_needs` work out, per symbol, the trading
   days missing from the cache and the span a range call should cover. Nightly
   (a target date): every trading day after the symbol's last cached close, up
   to the target, within the last ``NIGHTLY_LOOKBACK`` trading days; the span
   starts ``OVERLAP`` trading days before the first missing day, so that closes
   the provider corrected after we cached them are replaced. Backfill (--from
   --to): the trading days of the range not cached yet, no overlap.
2. :func:`plan` chooses between one range call per symbol (never one call per
   day) and one grouped call per date for all symbols (providers that have
   one, e.g. Polygon). It picks the set of grouped dates that minimises the total
   number of calls, and prefers range calls on a tie (they carry the overlap).
   Alpha Vantage's cheaper ``compact`` size (latest 100 bars) is chosen when the
   span starts within the bars it returns, else ``full``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

from snapshotter.core.bars import Capabilities
from snapshotter.core.calendar import latest_trading_day_on_or_before, trading_days_back, trading_days_between

OVERLAP = 5  # trading days re-fetched before the first missing day
# Nightly runs look back at most this many trading days (~4.5 months): with the
# overlap a span stays inside Alpha Vantage's free ``compact`` answer. Older
# gaps are filled with an explicit --from/--to backfill.
NIGHTLY_LOOKBACK = 90


@dataclass(frozen=True)
class Need:
    symbol: str
    missing: tuple[date, ...]  # trading days to fetch, ascending, non-empty
    span_start: date  # first day a range call asks for (includes the overlap)

    @property
    def span_end(self) -> date:
        return self.missing[-1]


@dataclass(frozen=True)
class RangeCall:
    symbol: str
    start: date
    end: date
    size: str | None = None  # "compact"/"full" for providers with sizes
    missing: tuple[date, ...] = ()


@dataclass(frozen=True)
class GroupedCall:
    day: date
    symbols: tuple[str, ...]


@dataclass(frozen=True)
class FetchPlan:
    range_calls: tuple[RangeCall, ...] = ()
    grouped_calls: tuple[GroupedCall, ...] = ()
    up_to_date: tuple[str, ...] = ()  # symbols that need nothing
    grouped_symbols: frozenset[str] = field(default_factory=frozenset)

    @property
    def calls(self) -> int:
        return len(self.range_calls) + len(self.grouped_calls)


def nightly_needs(
    symbols: list[str], last_cached: dict[str, date | None], target: date, lookback: int = NIGHTLY_LOOKBACK, overlap: int = OVERLAP
) -> dict[str, Need | None]:
    """Per symbol, the days after its last cached close up to ``target`` (None: up to date)."""
    window = trading_days_between(trading_days_back(latest_trading_day_on_or_before(target), max(0, lookback - 1)), target)
    out: dict[str, Need | None] = {}
    for s in symbols:
        last = last_cached.get(s)
        missing = tuple(d for d in window if last is None or d > last)
        if not missing:
            out[s] = None
            continue
        start = trading_days_back(missing[0], overlap) if last is not None and overlap > 0 else missing[0]
        out[s] = Need(s, missing, start)
    return out


def range_needs(symbols: list[str], cached: dict[str, set[date]], date_from: date, date_to: date) -> dict[str, Need | None]:
    """Per symbol, the trading days of [date_from, date_to] not cached yet."""
    days = trading_days_between(date_from, date_to)
    out: dict[str, Need | None] = {}
    for s in symbols:
        have = cached.get(s, set())
        missing = tuple(d for d in days if d not in have)
        out[s] = Need(s, missing, missing[0]) if missing else None
    return out


def size_for(start: date, latest: date, caps: Capabilities) -> str | None:
    """``compact`` when the latest ``compact_bars`` bars (as of ``latest``) reach back to ``start``.

    One bar of margin: before the close the provider may already list today's
    partial bar, which pushes the oldest compact bar one day later.
    """
    if caps.compact_bars is None:
        return None
    if start > latest:
        return "compact"
    return "compact" if len(trading_days_between(start, latest)) <= caps.compact_bars - 1 else "full"


def plan(needs: dict[str, Need | None], caps: Capabilities, latest: date) -> FetchPlan:
    """The cheapest set of calls covering every need (see module docstring)."""
    up_to_date = tuple(sorted(s for s, n in needs.items() if n is None))
    todo = sorted((n for n in needs.values() if n is not None), key=lambda n: (len(n.missing), n.symbol))
    grouped_days: set[date] = set()
    covered: set[str] = set()
    if caps.supports_grouped and todo:
        grouped_days, covered = _best_grouped(todo)
    range_calls = tuple(
        RangeCall(n.symbol, n.span_start, n.span_end, size_for(n.span_start, latest, caps), n.missing)
        for n in sorted(todo, key=lambda n: n.symbol)
        if n.symbol not in covered
    )
    by_day: dict[date, list[str]] = defaultdict(list)
    for n in todo:
        if n.symbol in covered:
            for d in n.missing:
                by_day[d].append(n.symbol)
    grouped = tuple(GroupedCall(d, tuple(sorted(by_day[d]))) for d in sorted(grouped_days))
    return FetchPlan(range_calls, grouped, up_to_date, frozenset(covered))


def _best_grouped(todo: list[Need]) -> tuple[set[date], set[str]]:
    """Grow the grouped-date set by the needs with the fewest missing days first.

    After adding the k smallest needs' days, every need whose days are all in the
    set is covered; cost = dates + uncovered symbols. Keep the strictly cheapest
    (so a tie stays with range calls). Incremental: each need tracks how many of
    its days are still outside the set, so the whole search is linear in the
    total number of missing days.
    """
    outside = {n.symbol: len(set(n.missing)) for n in todo}
    needing: dict[date, list[str]] = defaultdict(list)
    for n in todo:
        for d in set(n.missing):
            needing[d].append(n.symbol)
    days: set[date] = set()
    covered: set[str] = set()
    best_cost, best_k = len(todo), 0
    for k, n in enumerate(todo, start=1):
        for d in n.missing:
            if d not in days:
                days.add(d)
                for s in needing[d]:
                    outside[s] -= 1
                    if outside[s] == 0:
                        covered.add(s)
        cost = len(days) + len(todo) - len(covered)
        if cost < best_cost:
            best_cost, best_k = cost, k
    if best_k == 0:
        return set(), set()
    days = set()
    for n in todo[:best_k]:
        days.update(n.missing)
    return days, {n.symbol for n in todo if set(n.missing) <= days}
