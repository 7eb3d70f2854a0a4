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
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from urllib.parse import quote

from snapshotter.config import Settings
from snapshotter.errors import BadProviderData, ConfigError, ProviderRefused
from snapshotter.ops.logs import redact, register_secrets
from snapshotter.core.bars import Bar, Capabilities
from snapshotter.providers.base import Provider, parse_json, provider_timeout, to_decimal
from snapshotter.providers.http import HttpGetter
from snapshotter.core.rate_limit import RateLimit
from snapshotter.core.calendar import NEW_YORK

DATA_STATUSES = ("OK", "DELAYED")
AS_TRADED = {"adjusted": "false"}  # every aggregates call: closes as they traded that day


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
    capabilities = Capabilities(supports_grouped=True)
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

    def close(self) -> None:
        self._http.close()
