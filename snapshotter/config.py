"""Settings, read once from the environment (the CLI's global options override them), and secret handling."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from snapshotter.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///snapshotter.db"
SAMPLE_DIR = Path(__file__).parent / "sample_data"
SAMPLE_PRICES_DIR = SAMPLE_DIR / "prices"



def normalize_database_url(url: str) -> str:
    """Accept the ``postgres://`` / ``postgresql://`` forms hosting platforms hand out."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def mask_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database url>"


@dataclass
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    provider: str = "csv"
    prices_dir: Path = SAMPLE_PRICES_DIR
    alphavantage_api_key: str | None = None
    alphavantage_base_url: str = "https://www.alphavantage.co/query"
    polygon_api_key: str | None = None
    polygon_base_url: str = "https://api.polygon.io"
    alert_webhook_url: str | None = None
    healthcheck_url: str | None = None
    # symbol-batch tuning (README "symbol-batch"); raw text, parsed by snapshotter.providers.base
    # so a bad value is a ConfigError (exit 78) raised inside a command, not at start-up.
    provider_timeout: str | float | None = None
    calls_per_minute: str | float | None = None
    calls_per_day: str | int | None = None
    # --max-price-age of portfolio-refresh, refresh and backfill; raw text, parsed by
    # :meth:`price_age` when a snapshot command needs it (a bad value exits 78 there).
    max_price_age: str | int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        env = dict(os.environ) if env is None else env
        if "DATABASE_URL" in env and not env["DATABASE_URL"].strip() and not overrides.get("database_url"):
            # An unresolved deployment variable, not "use the default": never create ./snapshotter.db by accident.
            raise ConfigError("DATABASE_URL is set but empty; unset it to use the default sqlite:///snapshotter.db")
        s = cls(
            database_url=normalize_database_url(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL),
            provider=env.get("SNAPSHOTTER_PROVIDER") or "csv",
            prices_dir=Path(env["SNAPSHOTTER_PRICES_DIR"]) if env.get("SNAPSHOTTER_PRICES_DIR") else SAMPLE_PRICES_DIR,
            alphavantage_api_key=env.get("ALPHAVANTAGE_API_KEY") or None,
            alphavantage_base_url=env.get("ALPHAVANTAGE_BASE_URL") or cls.alphavantage_base_url,
            polygon_api_key=env.get("POLYGON_API_KEY") or None,
            polygon_base_url=env.get("POLYGON_BASE_URL") or cls.polygon_base_url,
            alert_webhook_url=env.get("ALERT_WEBHOOK_URL") or None,
            healthcheck_url=env.get("HEALTHCHECK_URL") or None,
            provider_timeout=env.get("SNAPSHOTTER_PROVIDER_TIMEOUT") or None,
            calls_per_minute=env.get("SNAPSHOTTER_CALLS_PER_MINUTE") or None,
            calls_per_day=env.get("SNAPSHOTTER_CALLS_PER_DAY") or None,
            max_price_age=env.get("SNAPSHOTTER_MAX_PRICE_AGE") or None,
            extra={k: v for k, v in env.items() if k.startswith("SNAPSHOTTER_") and v},  # provider plugins' settings
        )
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, normalize_database_url(v) if k == "database_url" else v)
        return s

    def price_age(self) -> int:
        """SNAPSHOTTER_MAX_PRICE_AGE as trading days (default 0: a lot is valued at its day's own close only)."""
        from snapshotter.core.valuation import MAX_PRICE_AGE

        raw = self.max_price_age
        if raw is None:
            return 0
        text = str(raw).strip()
        if not (text.isascii() and text.isdigit()) or int(text) > MAX_PRICE_AGE:
            raise ConfigError(f"SNAPSHOTTER_MAX_PRICE_AGE must be a whole number of trading days from 0 to {MAX_PRICE_AGE}, got {raw!r}")
        return int(text)

    def secrets(self) -> list[str]:
        """The strings to redact everywhere: API keys, webhook and ping URLs, the DB password."""
        found = [v for v in (self.alphavantage_api_key, self.polygon_api_key, self.alert_webhook_url, self.healthcheck_url) if v]
        try:
            password = make_url(self.database_url).password
        except Exception:
            password = None
        if password:
            found.append(str(password))
        return [s for s in found if len(s) >= 4]
