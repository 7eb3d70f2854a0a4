"""Settings, read once from the environment (the CLI's global options override them), and secret handling."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from snapshotter.core.durations import parse_duration
from snapshotter.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///snapshotter.db"
SAMPLE_DIR = Path(__file__).parent / "sample_data"
SAMPLE_PRICES_DIR = SAMPLE_DIR / "prices"
PRODUCTION = "production"
# PostgreSQL session limits (README "Maximum run time"): generous, so only a statement or a
# lock wait that is stuck hits them; SNAPSHOTTER_PG_STATEMENT_TIMEOUT / _LOCK_TIMEOUT change them.
PG_STATEMENT_TIMEOUT_S = 30 * 60.0
PG_LOCK_TIMEOUT_S = 60.0
OFF = ("off", "0", "none")


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
    pushgateway_url: str | None = None  # PUSHGATEWAY_URL: last-run metrics for Prometheus (ops/metrics.py)
    # symbol-batch tuning (README "symbol-batch"); raw text, parsed by snapshotter.providers.base
    # so a bad value is a ConfigError (exit 78) raised inside a command, not at start-up.
    provider_timeout: str | float | None = None
    calls_per_minute: str | float | None = None
    calls_per_day: str | int | None = None
    # --max-price-age of portfolio-refresh, refresh and backfill; raw text, parsed by
    # :meth:`price_age` when a snapshot command needs it (a bad value exits 78 there).
    max_price_age: str | int | None = None
    # --max-backfill-days of portfolio-refresh, backfill, recompute and prune: one value for every job,
    # so the nightly's window and the prune's safety check agree; raw text, parsed by :meth:`backfill_days`.
    max_backfill_days: str | int | None = None
    # deployment (README "Deployment"): raw text, parsed where used so a bad value is a ConfigError
    environment: str | None = None  # SNAPSHOTTER_ENV; "production" means --no-migrate by default
    max_runtime: str | None = None  # SNAPSHOTTER_MAX_RUNTIME: replaces every job command's default
    pg_statement_timeout: str | None = None
    pg_lock_timeout: str | None = None
    migration_database_url: str | None = None  # SNAPSHOTTER_MIGRATION_DATABASE_URL: only `db upgrade` uses it
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
            pushgateway_url=env.get("PUSHGATEWAY_URL") or None,
            provider_timeout=env.get("SNAPSHOTTER_PROVIDER_TIMEOUT") or None,
            calls_per_minute=env.get("SNAPSHOTTER_CALLS_PER_MINUTE") or None,
            calls_per_day=env.get("SNAPSHOTTER_CALLS_PER_DAY") or None,
            max_price_age=env.get("SNAPSHOTTER_MAX_PRICE_AGE") or None,
            max_backfill_days=env.get("SNAPSHOTTER_MAX_BACKFILL_DAYS") or None,
            environment=(env.get("SNAPSHOTTER_ENV") or "").strip().lower() or None,
            max_runtime=env.get("SNAPSHOTTER_MAX_RUNTIME") or None,
            pg_statement_timeout=env.get("SNAPSHOTTER_PG_STATEMENT_TIMEOUT") or None,
            pg_lock_timeout=env.get("SNAPSHOTTER_PG_LOCK_TIMEOUT") or None,
            migration_database_url=normalize_database_url(env["SNAPSHOTTER_MIGRATION_DATABASE_URL"])
            if env.get("SNAPSHOTTER_MIGRATION_DATABASE_URL") else None,
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

    def backfill_days(self, default: int) -> int:
        """SNAPSHOTTER_MAX_BACKFILL_DAYS as calendar days (``default`` when unset; a bad value exits 78)."""
        raw = self.max_backfill_days
        if raw is None:
            return default
        text = str(raw).strip()
        if not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise ConfigError(f"SNAPSHOTTER_MAX_BACKFILL_DAYS must be a whole number of calendar days from 1, got {raw!r}")
        return int(text)

    @property
    def production(self) -> bool:
        return self.environment == PRODUCTION

    def max_runtime_s(self, default: float) -> float:
        """A job command's maximum run time: SNAPSHOTTER_MAX_RUNTIME, else the command's ``default``; 0 = none."""
        return duration_setting("SNAPSHOTTER_MAX_RUNTIME", self.max_runtime, default) or 0.0

    def pg_timeouts(self) -> dict[str, float | None]:
        """statement_timeout and lock_timeout (seconds, None = the server's own) for PostgreSQL sessions."""
        return {
            "statement_timeout_s": duration_setting("SNAPSHOTTER_PG_STATEMENT_TIMEOUT", self.pg_statement_timeout, PG_STATEMENT_TIMEOUT_S),
            "lock_timeout_s": duration_setting("SNAPSHOTTER_PG_LOCK_TIMEOUT", self.pg_lock_timeout, PG_LOCK_TIMEOUT_S),
        }

    def secrets(self) -> list[str]:
        """The strings to redact everywhere: API keys, webhook and ping URLs, the DB passwords."""
        found = [v for v in (self.alphavantage_api_key, self.polygon_api_key, self.alert_webhook_url, self.healthcheck_url,
                             self.pushgateway_url) if v]
        for url in (self.database_url, self.migration_database_url):
            try:
                password = make_url(url).password if url else None
            except Exception:
                password = None
            if password:
                found.append(str(password))
        return [s for s in found if len(s) >= 4]


def duration_setting(name: str, raw: str | None, default: float | None) -> float | None:
    """A duration from the environment: ``default`` when unset, None for off/0/none, else seconds
    (a bad value is a ConfigError naming the variable: exit 78)."""
    if raw is None:
        return default
    if raw.strip().lower() in OFF:
        return None
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
