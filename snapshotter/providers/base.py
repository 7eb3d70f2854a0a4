"""The small interface every price provider implements, and the registry.

Like beanprice's sources, a provider only knows how to ask one service for
closes and how to turn its answer into :class:`Bar` objects or a classified
error (errors.py: transient, rate-limited, quota exhausted, refused, not found,
bad data). Planning, rate limiting, retries, validation and storage live in the
batch, so adding a provider is one module and one registry line.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from snapshotter.config import Settings
from snapshotter.core.bars import Bar, Capabilities
from snapshotter.errors import BadProviderData, ConfigError
from snapshotter.core.rate_limit import RateLimit

DEFAULT_TIMEOUT = 30.0  # seconds per HTTP request (SNAPSHOTTER_PROVIDER_TIMEOUT)


class Provider(ABC):
    name: str = "provider"
    capabilities: Capabilities = Capabilities()
    default_limit: RateLimit = RateLimit()

    @abstractmethod
    def daily_closes(self, symbol: str, start: date, end: date, *, size: str | None = None) -> list[Bar]:
        """Bars for ``symbol`` with ``start <= date <= end``, one provider call.

        ``size`` is a hint from the planner ("compact"/"full"); providers without
        such modes ignore it. An empty list means the provider has no data.
        """

    def grouped_closes(self, day: date) -> list[Bar]:
        """Every symbol's bar for ``day`` in one call (only if capabilities.supports_grouped).

        A list rather than a dict keyed by symbol, so that a symbol listed twice
        reaches validation (and is rejected) instead of one copy silently winning.
        """
        raise NotImplementedError(f"{self.name} has no grouped-by-date endpoint")

    def close(self) -> None:
        """Release connections."""


# --- parsing helpers shared by the providers ----------------------------------


def to_decimal(value: Any) -> Decimal | None:
    """None stays None; anything that is not a decimal number becomes NaN (rejected later).

    JSON is parsed with ``parse_float=Decimal`` so a float never appears here;
    should one arrive anyway it goes through ``str`` (never ``Decimal(float)``).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return Decimal("NaN")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return Decimal(text)
        except InvalidOperation:
            return Decimal("NaN")
    return Decimal("NaN")


def to_date(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        return None


class PairsDict(dict):
    """A JSON object that remembers every (key, value) pair, duplicates included.

    ``json.loads`` silently keeps the last of two equal keys; a time series keyed
    by date with a duplicated date must be seen, so parsers read ``.pairs``.
    """

    def __init__(self, pairs):
        super().__init__(pairs)
        self.pairs = list(pairs)


def parse_json(text: str, what: str) -> Any:
    """JSON with exact decimals (never floats); unusable text is BadProviderData."""
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=Decimal, object_pairs_hook=PairsDict)
    except (ValueError, RecursionError):
        head = " ".join(text[:60].split())
        kind = "an HTML page" if head.lstrip().lower().startswith(("<!doctype", "<html")) else "not valid JSON"
        raise BadProviderData(f"{what}: response is {kind} ({len(text)} bytes, starts {head!r})") from None


# --- configuration -------------------------------------------------------------


def _number(raw, name: str, cast: Callable, allow_none_words: bool = False):
    if raw is None:
        return None
    text = str(raw).strip().lower()
    if allow_none_words and text in ("0", "none", "unlimited"):
        return None
    try:
        value = cast(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def provider_timeout(settings: Settings) -> float:
    t = _number(settings.provider_timeout, "SNAPSHOTTER_PROVIDER_TIMEOUT", float)
    return DEFAULT_TIMEOUT if t is None else t


def rate_limit_for(provider: Provider, settings: Settings) -> RateLimit:
    """The provider's free-tier defaults, overridden by SNAPSHOTTER_CALLS_PER_MINUTE/_PER_DAY."""
    limit = provider.default_limit
    per_minute = _number(settings.calls_per_minute, "SNAPSHOTTER_CALLS_PER_MINUTE", float, allow_none_words=True)
    if settings.calls_per_minute is not None:
        limit = RateLimit(per_second=None if per_minute is None else per_minute / 60.0, burst=limit.burst, per_day=limit.per_day)
    if settings.calls_per_day is not None:
        per_day = _number(settings.calls_per_day, "SNAPSHOTTER_CALLS_PER_DAY", int, allow_none_words=True)
        limit = RateLimit(per_second=limit.per_second, burst=limit.burst, per_day=per_day)
    return limit


PROVIDERS = ("csv", "alphavantage", "polygon")


def get_provider(name: str | None, settings: Settings) -> Provider:
    """Build the named provider; a missing key or an unknown name is a ConfigError (exit 78)."""
    from snapshotter.ops import logs

    name = (name or settings.provider or "csv").strip().lower()
    if name == "csv":
        from snapshotter.providers.csv_dir import CsvDirProvider

        return CsvDirProvider(settings.prices_dir)
    if name == "alphavantage":
        from snapshotter.providers.alphavantage import AlphaVantageProvider

        if not settings.alphavantage_api_key:
            raise ConfigError("provider alphavantage needs ALPHAVANTAGE_API_KEY")
        logs.register_secrets([settings.alphavantage_api_key])
        return AlphaVantageProvider(settings.alphavantage_api_key, settings.alphavantage_base_url, provider_timeout(settings))
    if name == "polygon":
        from snapshotter.providers.polygon import PolygonProvider

        if not settings.polygon_api_key:
            raise ConfigError("provider polygon needs POLYGON_API_KEY")
        logs.register_secrets([settings.polygon_api_key])
        return PolygonProvider(settings.polygon_api_key, settings.polygon_base_url, provider_timeout(settings))
    raise ConfigError(f"unknown provider {name!r}: use one of {', '.join(PROVIDERS)}")
