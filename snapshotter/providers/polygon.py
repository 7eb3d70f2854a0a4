"""Polygon.io (now Massive) aggregates: grouped daily (all US stocks, one date) and per-ticker ranges.

The grouped endpoint is what makes a nightly run cost one call whatever the
number of symbols; the range endpoint serves symbols whose gaps make grouped
calls the dearer option (the planner decides). Unlike Alpha Vantage, Polygon
uses real HTTP status codes (429, 401, 403 NOT_AUTHORIZED), classified in
:mod:`snapshotter.providers.http`; a 200 is data only with status OK/DELAYED
and a ``results`` list (absent = no data, e.g. an unknown ticker or a holiday).

Closes are asked for as traded (``adjusted=false``): Polygon's default rewrites every
close before a split, which would mix two price bases in one cache (README "One price
basis"). An answer that says it is adjusted anyway is unusable data, not a close.

Bars carry ``t``, the bar's epoch milliseconds; the trading date is that instant
in New York (daily bars start at 00:00 or end at 16:00 New York time).
The key goes in an ``Authorization: Bearer`` header, never in a URL.

Splits come from ``/v3/reference/splits`` (ticker, execution_date, split_from, split_to):
one query for every US ticker with an execution date on or after ``since``, 1000 a page,
paged by ``next_url``. Only the ``cursor`` of a ``next_url`` is used: the next call goes to
the configured base URL with the Bearer header, so the key never follows a URL the
response chose. (Massive also offers ``/stocks/v1/splits`` with the same fields; this
uses the v3 endpoint documented for the Polygon plans.)
"""

from __future__ import annotations

from datetime import date, datetime
from urllib.parse import parse_qs, urlsplit
from decimal import Decimal
from urllib.parse import quote

from snapshotter.config import Settings
from snapshotter.errors import BadProviderData, ConfigError, ProviderRefused
from snapshotter.ops.logs import redact, register_secrets
from snapshotter.core.bars import Bar, Capabilities, Split, SplitsPage
from snapshotter.providers.base import Provider, parse_json, provider_timeout, to_date, to_decimal
from snapshotter.providers.http import HttpGetter
from snapshotter.core.rate_limit import RateLimit
from snapshotter.core.calendar import NEW_YORK

DATA_STATUSES = ("OK", "DELAYED")
AS_TRADED = {"adjusted": "false"}  # every aggregates call: closes as they traded that day
SPLITS_PATH = "/v3/reference/splits"
SPLITS_PAGE = 1000  # the endpoint's maximum page size


def epoch_ms_to_date(value) -> date | None:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=NEW_YORK).date()
    except (OverflowError, OSError, ValueError):
        return None


def _bar(symbol: str, item) -> Bar:
    if not isinstance(item, dict):
        return Bar(symbol, None, to_decimal("not-an-object"))
    return Bar(
        symbol=symbol,
        price_date=epoch_ms_to_date(item.get("t")),
        open=to_decimal(item.get("o")),
        high=to_decimal(item.get("h")),
        low=to_decimal(item.get("l")),
        close=to_decimal(item.get("c")),
        volume=to_decimal(item.get("v")),
    )


def results_of(body, what: str) -> list:
    """The ``results`` list of a data response ([] when absent), or a classified error."""
    if not isinstance(body, dict) or "status" not in body:
        raise BadProviderData(f"polygon: {what}: not an aggregates response")
    status = str(body.get("status"))
    if status not in DATA_STATUSES:
        message = redact(" ".join(str(body.get("message") or body.get("error") or "").split()))[:300]
        if status == "NOT_AUTHORIZED":
            raise ProviderRefused(f"polygon: {what}: refused: {message}")
        raise BadProviderData(f"polygon: {what}: status {status}: {message}")
    if body.get("adjusted") is True:
        raise BadProviderData(f"polygon: {what}: the response is split-adjusted; closes are stored as traded")
    results = body.get("results")
    if results is None:
        return []
    if not isinstance(results, list):
        raise BadProviderData(f"polygon: {what}: results is not a list")
    return results


class PolygonProvider(Provider):
    name = "polygon"
    capabilities = Capabilities(supports_grouped=True, splits_every_days=1)
    # Free tier: 5 calls a minute, spaced evenly (a burst of 5 could exceed a rolling minute).
    default_limit = RateLimit(per_second=5 / 60.0, burst=1, per_day=None)

    def __init__(self, api_key: str, base_url: str, timeout: float):
        self._http = HttpGetter(self.name, base_url, timeout, headers={"Authorization": f"Bearer {api_key}"})

    @classmethod
    def from_settings(cls, settings: Settings) -> "PolygonProvider":
        if not settings.polygon_api_key:
            raise ConfigError("provider polygon needs POLYGON_API_KEY")
        register_secrets([settings.polygon_api_key])
        return cls(settings.polygon_api_key, settings.polygon_base_url, provider_timeout(settings))

    def daily_closes(self, symbol: str, start: date, end: date, *, size: str | None = None) -> list[Bar]:
        what = f"{symbol} {start}..{end}"
        path = f"/v2/aggs/ticker/{quote(symbol, safe='')}/range/1/day/{start.isoformat()}/{end.isoformat()}"
        body = parse_json(self._http.get(path, {**AS_TRADED, "sort": "asc", "limit": 50000}, what), f"polygon: {what}")
        results = results_of(body, what)
        ticker = body.get("ticker")
        if ticker is not None and str(ticker).upper() != symbol.upper():
            raise BadProviderData(f"polygon: {what}: response is for {ticker!r}, not {symbol!r}")
        return [_bar(symbol, item) for item in results]

    def grouped_closes(self, day: date) -> list[Bar]:
        """Every US stock's bar for ``day`` (a list: a duplicated ticker must reach validation)."""
        what = f"grouped {day}"
        path = f"/v2/aggs/grouped/locale/us/market/stocks/{day.isoformat()}"
        body = parse_json(self._http.get(path, dict(AS_TRADED), what), f"polygon: {what}")
        bars = []
        for item in results_of(body, what):
            ticker = item.get("T") if isinstance(item, dict) else None
            if isinstance(ticker, str) and ticker:
                bars.append(_bar(ticker.upper(), item))
        return bars

    def splits(self, symbols: list[str], since: date, cursor: str | None = None) -> SplitsPage:
        """One page of every ticker's splits since ``since``; ``symbols`` are covered on the last page."""
        what = f"splits since {since}"
        params = {"cursor": cursor} if cursor else {
            "execution_date.gte": since.isoformat(), "sort": "execution_date", "order": "asc", "limit": SPLITS_PAGE}
        body = parse_json(self._http.get(SPLITS_PATH, params, what), f"polygon: {what}")
        wanted = {s.upper() for s in symbols}
        out = []
        for item in results_of(body, what):
            ticker = item.get("ticker") if isinstance(item, dict) else None
            if isinstance(ticker, str) and ticker.upper() in wanted:
                out.append(Split(ticker.upper(), to_date(item.get("execution_date")), to_decimal(item.get("split_from")),
                                 to_decimal(item.get("split_to"))))
        nxt = next_cursor(body.get("next_url"), what)
        return SplitsPage(out, nxt, () if nxt else tuple(sorted(wanted)))

    def close(self) -> None:
        self._http.close()


def next_cursor(next_url, what: str) -> str | None:
    """The ``cursor`` of a ``next_url`` (None when there is no next page)."""
    if not next_url:
        return None
    cursor = parse_qs(urlsplit(str(next_url)).query).get("cursor")
    if not cursor or not cursor[0]:
        raise BadProviderData(f"polygon: {what}: next_url without a cursor")
    return cursor[0]
