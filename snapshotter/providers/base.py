"""The small interface every price provider implements, and how a provider is found by name.

Like beanprice's sources, a provider only knows how to ask one service for
closes and how to turn its answer into :class:`~snapshotter.core.bars.Bar`
objects or a classified error (errors.py: transient, rate-limited, quota
exhausted, refused, not found, bad data). Planning, rate limiting, retries,
validation and storage live in the batch.

Providers are found through the ``snapshotter.providers`` entry point group
(pyproject.toml): :func:`get_provider` looks the name up there, loads the class
and builds it with :meth:`Provider.from_settings`. This module imports no
concrete provider, so a new one, built in or from another package, is one
module and one entry point (README "Adding a price source").
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from importlib.metadata import EntryPoint, entry_points
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from snapshotter.config import Settings
from snapshotter.core.bars import Bar, Capabilities, SplitsPage
from snapshotter.errors import BadProviderData, ConfigError, SnapshotterError
from snapshotter.core.rate_limit import RateLimit

DEFAULT_TIMEOUT = 30.0  # seconds per HTTP request (SNAPSHOTTER_PROVIDER_TIMEOUT)
ENTRY_POINT_GROUP = "snapshotter.providers"


class Provider(ABC):
    """One price source. ``name`` is stored as ``source`` and keys the daily call budget."""

    name: str = "provider"
    capabilities: Capabilities = Capabilities()
    default_limit: RateLimit = RateLimit()

    @classmethod
    def from_settings(cls, settings: Settings) -> "Provider":
        """Build the provider from the settings read at start-up (:func:`get_provider` calls this).

        Raise ConfigError (exit 78) for missing or bad configuration. The default
        takes no configuration: ``cls()``.
        """
        return cls()

    @classmethod
    def setting(cls, settings: Settings, key: str, *, required: bool = False, secret: bool = False) -> str | None:
        """This provider's ``SNAPSHOTTER_<NAME>_<KEY>`` environment variable, as read at start-up.

        ``required``: missing or empty is a ConfigError naming the variable.
        ``secret``: the value is redacted from every log line and message.
        """
        var = env_name(cls.name, key)
        value = settings.extra.get(var) or None
        if value is None and required:
            raise ConfigError(f"provider {cls.name} needs {var}")
        if value is not None and secret:
            from snapshotter.ops import logs

            logs.register_secrets([value])
        return value

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

    def splits(self, symbols: list[str], since: date, cursor: str | None = None) -> SplitsPage:
        """One call's worth of splits of ``symbols`` with an ex-date on or after ``since``
        (only if ``capabilities.splits_every_days``). The batch calls again with ``page.next``
        until it is None, each call through the rate limiter; ``cursor`` is None the first time.
        Splits of other symbols may be left in (the batch ignores them)."""
        raise NotImplementedError(f"{self.name} has no splits endpoint")

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


def env_name(provider: str, key: str) -> str:
    """``SNAPSHOTTER_<NAME>_<KEY>``: upper case, anything but letters and digits as ``_``."""
    return re.sub(r"[^A-Z0-9]+", "_", f"SNAPSHOTTER_{provider}_{key}".upper())


def _one_line(exc: BaseException) -> str:
    from snapshotter.ops import logs

    text = " ".join(str(exc).split())
    return logs.redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


def provider_entry_points() -> dict[str, EntryPoint]:
    """The registered providers by (lower-case) name, without importing any of them.

    When two installed distributions register the same name, the first one on
    ``sys.path`` wins (importlib.metadata's order).
    """
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name.strip().lower(), ep)
    return found


def available_providers() -> list[str]:
    return sorted(provider_entry_points())


def get_provider(name: str | None, settings: Settings) -> Provider:
    """Find the named provider's entry point, load its class and build it with ``from_settings``.

    An unknown name, an entry point that does not import, or a missing key is a
    ConfigError (exit 78), raised before the database is touched.
    """
    name = (name or settings.provider or "csv").strip().lower()
    found = provider_entry_points()
    ep = found.get(name)
    if ep is None:
        known = ", ".join(sorted(found)) or "none (no provider is registered: is snapshotter installed? pip install -e .)"
        raise ConfigError(f"unknown provider {name!r}: use one of {known}")
    try:
        cls = ep.load()
    except Exception as exc:  # noqa: BLE001 - a plugin can fail to import in any way
        raise ConfigError(f"provider {name!r} ({ep.value}) cannot be loaded: {_one_line(exc)}") from None
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(f"provider {name!r} ({ep.value}) is not a snapshotter Provider class")
    try:
        provider = cls.from_settings(settings)
    except SnapshotterError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"provider {name!r} cannot be configured: {_one_line(exc)}") from None
    if not isinstance(provider, Provider):
        raise ConfigError(f"provider {name!r}: {cls.__name__}.from_settings did not return a Provider")
    if provider.name == Provider.name:  # the class did not name itself: the entry point names it
        provider.name = name
    return provider
