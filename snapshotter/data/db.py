"""Database adapter: engine creation, connection retries and Alembic migrations."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from snapshotter.config import mask_url
from snapshotter.data.dialect import register_sqlite_functions
from snapshotter.errors import ConfigError, DatabaseUnavailable
from snapshotter.ops.logs import get_logger, redact

log = get_logger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
CONNECT_ATTEMPTS = 3


def make_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.engine.make_url(url)
    except Exception as exc:
        raise ConfigError(f"invalid DATABASE_URL: {redact(str(exc))}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_setup(dbapi_conn, _record):
            register_sqlite_functions(dbapi_conn)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys = ON")
            if parsed.database and parsed.database != ":memory:":
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA busy_timeout = 30000")
            cur.close()

        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql+psycopg")
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})


def connect(url: str, wait_multiplier: float = 0.5) -> sa.Engine:
    """An engine whose first connection succeeded, retried with exponential backoff."""
    engine = make_engine(url)
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(CONNECT_ATTEMPTS),
            wait=wait_exponential(multiplier=wait_multiplier, max=10),
            retry=retry_if_exception_type(sa.exc.OperationalError),
            reraise=False,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    log.warning("db.connect_retry", attempt=attempt.retry_state.attempt_number)
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        reason = str(getattr(cause, "orig", cause)).strip().splitlines()[0] if cause else "unknown"
        raise DatabaseUnavailable(
            f"database unreachable after {CONNECT_ATTEMPTS} attempts: {mask_url(url)}: {redact(reason)}"
        ) from None
    return engine


def _alembic_config(conn: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> tuple[str | None, str]:
    before = current_revision(engine)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), revision)
    after = current_revision(engine)
    if before != after:
        log.info("db.upgraded", from_revision=before, to_revision=after)
    return before, after


def ensure_schema(engine: sa.Engine, migrate: bool = True) -> None:
    """Bring the schema to head, or refuse to run against an old one."""
    current = current_revision(engine)
    if current == head_revision():
        return
    if not migrate:
        raise ConfigError(
            f"database schema is at {current or 'nothing'}, this version needs {head_revision()}: "
            "run `snapshotter db upgrade` or drop --no-migrate"
        )
    upgrade(engine)
