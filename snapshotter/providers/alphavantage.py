"""Alpha Vantage TIME_SERIES_DAILY: one symbol per call, ``compact`` (last 100 bars) or ``full``.

Alpha Vantage answers nearly everything with HTTP 200, so the body decides: a
response is data only when it has a ``Time Series (Daily)`` object; otherwise
the message is classified, never stored:

* ``Note`` (the old per-minute throttle) and ``Information`` about spreading
  requests out / per-second bursts: RateLimited (retried with backoff);
* ``Information`` about the daily limit ("25 requests per day"): QuotaExhausted;
* ``Information`` about a premium feature (``outputsize=full`` on a free key) or
  an invalid/demo key: ProviderRefused (the run aborts, exit 78);
* ``Error Message``: SymbolNotFound (unknown symbol or bad call), or
  ProviderRefused when it is about the apikey;
* anything else: BadProviderData.

Splits come from the ``SPLITS`` function (one symbol a call: ``{"symbol": ..., "data":
[{"effective_date": ..., "split_factor": ...}]}``, a factor of 4 being a 4-for-1 split,
from 1 to 4), classified like the time series. Each call spends one of the key's daily
calls, so a symbol is asked at most once a week (``splits_every_days=7``), after the
closes of the night; an unknown symbol (``Error Message``) or an empty object is a
symbol without splits.

The key travels as ``apikey=`` in the query string (the only way Alpha Vantage
takes it); it is registered for redaction and no message here contains a URL.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from snapshotter.config import Settings
from snapshotter.errors import BadProviderData, ConfigError, ProviderRefused, QuotaExhausted, RateLimited, SymbolNotFound
from snapshotter.ops.logs import redact, register_secrets
from snapshotter.core.bars import Bar, Capabilities, Split, SplitsPage
from snapshotter.providers.base import PairsDict, Provider, parse_json, provider_timeout, to_date, to_decimal
from snapshotter.providers.http import HttpGetter
from snapshotter.core.rate_limit import RateLimit

SERIES_KEY = "Time Series (Daily)"
COMPACT_BARS = 100


def _message(body: dict, key: str) -> str:
    return redact(" ".join(str(body.get(key, "")).split()))[:300]


def classify(body, what: str, key: str = SERIES_KEY, kind: type = dict):
    """Return the data part (``key``, of type ``kind``) of a data response, or raise the classified error."""
    if not isinstance(body, dict):
        raise BadProviderData(f"alphavantage: {what}: expected a JSON object, got {type(body).__name__}")
    series = body.get(key)
    if isinstance(series, kind):
        return series
    if "Note" in body:
        raise RateLimited(f"alphavantage: {what}: throttled: {_message(body, 'Note')}")
    if "Information" in body:
        text = _message(body, "Information")
        low = text.lower()
        if "per second" in low or "sparingly" in low or "burst" in low:
            raise RateLimited(f"alphavantage: {what}: throttled: {text}", retry_after=1.0)
        if "per day" in low or "rate limit" in low:
            raise QuotaExhausted(f"alphavantage: {what}: daily quota exhausted: {text}")
        if "premium" in low or "api key" in low or "apikey" in low:
            raise ProviderRefused(f"alphavantage: {what}: refused: {text}")
        raise BadProviderData(f"alphavantage: {what}: unexpected Information: {text}")
    if "Error Message" in body:
        text = _message(body, "Error Message")
        if "apikey" in text.lower() or "api key" in text.lower():
            raise ProviderRefused(f"alphavantage: {what}: refused: {text}")
        raise SymbolNotFound(f"alphavantage: {what}: {text}")
    keys = ", ".join(sorted(map(str, body))[:5]) or "none"
    raise BadProviderData(f"alphavantage: {what}: no {key!r} in the response (keys: {keys})")


def parse_series(symbol: str, body, what: str) -> list[Bar]:
    series = classify(body, what)
    meta = body.get("Meta Data")
    if isinstance(meta, dict):
        said = str(meta.get("2. Symbol", symbol)).strip().upper()
        if said and said != symbol.upper():
            raise BadProviderData(f"alphavantage: {what}: response is for {said!r}, not {symbol!r}")
    pairs = series.pairs if isinstance(series, PairsDict) else list(series.items())
    bars = []
    for key, row in pairs:
        if not isinstance(row, dict):
            bars.append(Bar(symbol, to_date(key), to_decimal("not-an-object")))
            continue
        bars.append(
            Bar(
                symbol=symbol,
                price_date=to_date(key),
                open=to_decimal(row.get("1. open")),
                high=to_decimal(row.get("2. high")),
                low=to_decimal(row.get("3. low")),
                close=to_decimal(row.get("4. close")),
                volume=to_decimal(row.get("5. volume")),
            )
        )
    return bars


class AlphaVantageProvider(Provider):
    name = "alphavantage"
    capabilities = Capabilities(supports_grouped=False, compact_bars=COMPACT_BARS, splits_every_days=7)
    # Free key: 25 calls a day, at most 1 a second.
    default_limit = RateLimit(per_second=1.0, burst=1, per_day=25)

    def __init__(self, api_key: str, base_url: str, timeout: float):
        self._key = api_key
        self._http = HttpGetter(self.name, base_url, timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> "AlphaVantageProvider":
        if not settings.alphavantage_api_key:
            raise ConfigError("provider alphavantage needs ALPHAVANTAGE_API_KEY")
        register_secrets([settings.alphavantage_api_key])
        return cls(settings.alphavantage_api_key, settings.alphavantage_base_url, provider_timeout(settings))

    def daily_closes(self, symbol: str, start: date, end: date, *, size: str | None = None) -> list[Bar]:
        size = size if size in ("compact", "full") else "full"
        what = f"{symbol} {start}..{end} ({size})"
        params = {"function": "TIME_SERIES_DAILY", "symbol": symbol, "outputsize": size, "apikey": self._key}
        text = self._http.get("", params, what)
        return parse_series(symbol, parse_json(text, f"alphavantage: {what}"), what)

    def splits(self, symbols: list[str], since: date, cursor: str | None = None) -> SplitsPage:
        """One symbol per call: ``cursor`` is the index of the symbol to ask about."""
        i = int(cursor or 0)
        symbol = symbols[i]
        nxt = str(i + 1) if i + 1 < len(symbols) else None
        what = f"{symbol} splits"
        text = self._http.get("", {"function": "SPLITS", "symbol": symbol, "apikey": self._key}, what)
        body = parse_json(text, f"alphavantage: {what}")
        if body == {}:
            return SplitsPage([], nxt, (symbol,))
        try:
            data = classify(body, what, "data", list)
        except SymbolNotFound:
            return SplitsPage([], nxt, (symbol,))  # an unknown symbol has no splits
        said = str(body.get("symbol", symbol)).strip().upper()
        if said != symbol.upper():
            raise BadProviderData(f"alphavantage: {what}: response is for {said!r}, not {symbol!r}")
        out = []
        for row in data:
            row = row if isinstance(row, dict) else {}
            s = Split(symbol, to_date(row.get("effective_date")), Decimal(1), to_decimal(row.get("split_factor", "NaN")))
            if s.ex_date is None or s.ex_date >= since:
                out.append(s)
        return SplitsPage(out, nxt, (symbol,))

    def close(self) -> None:
        self._http.close()
