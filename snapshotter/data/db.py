"""Database adapter: engine creation, connection retries and Alembic migrations."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from tenacity import Retrying, stop_after_attempt, wait_exponential

from snapshotter.config import PG_LOCK_TIMEOUT_S, PG_STATEMENT_TIMEOUT_S, mask_url
from snapshotter.data.dialect import register_sqlite_functions
from snapshotter.data.locks import advisory_key
from snapshotter.errors import CantCreate, ConfigError, DatabaseUnavailable, UsageError
from snapshotter.ops.logs import get_logger, redact

log = get_logger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
CONNECT_ATTEMPTS = 3
MIGRATION_LOCK = "snapshotter.migrations"


def session_options(statement_timeout_s: float | None, lock_timeout_s: float | None, given: str | None = None) -> str | None:
    """libpq ``options`` setting the session's timeouts; ``options`` already in the URL come last, so they win."""
    parts = [f"-c {name}={int(round(s * 1000))}" for name, s in (("statement_timeout", statement_timeout_s),
                                                                  ("lock_timeout", lock_timeout_s)) if s]
    if given:
        parts.append(given)
    return " ".join(parts) or None


def make_engine(url: str, *, statement_timeout_s: float | None = PG_STATEMENT_TIMEOUT_S,
                lock_timeout_s: float | None = PG_LOCK_TIMEOUT_S) -> sa.Engine:
    """An engine for ``url``. On PostgreSQL every session gets ``statement_timeout`` and
    ``lock_timeout`` (None: the server's own; README "Maximum run time"): a statement that runs
    30 minutes, or a lock waited for a minute, is stuck rather than slow."""
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
                try:
                    cur.execute("PRAGMA journal_mode = WAL")
                except sqlite3.OperationalError:  # a read-only database keeps its mode; readers still work
                    pass
            cur.execute("PRAGMA busy_timeout = 30000")
            cur.close()

        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql+psycopg")
    # prepare_threshold None: no server-side prepared statements. psycopg prepares a statement
    # after its 5th execution and PostgreSQL then may settle on a generic plan for it; the same
    # statement here runs with very different values (a chunk's id range, a day, an IN list of
    # symbols), and such a generic plan was measured 10-20x slower (status's split question,
    # 0.11 s -> 1.2-2.5 s). Planning costs a millisecond against statements of 0.01-1 s.
    connect_args: dict = {"connect_timeout": 10, "prepare_threshold": None}
    options = session_options(statement_timeout_s, lock_timeout_s, parsed.query.get("options"))
    if options:  # sent in the startup packet: every connection of the pool, before any statement
        connect_args["options"] = options
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


# Connection failures that no retry can fix: the server says the database or the role
# does not exist, or refuses the credentials (psycopg gives no SQLSTATE for these).
PERMANENT = re.compile(
    r'database ".*" does not exist|role ".*" does not exist|password authentication failed|no pg_hba\.conf entry'
    r"|unable to open database file|file is not a database"
)


def _permanent(exc: BaseException) -> bool:
    return isinstance(exc, sa.exc.DBAPIError) and bool(PERMANENT.search(str(exc.orig)))


def connect(url: str, wait_multiplier: float = 0.5, **session) -> sa.Engine:
    """An engine whose first connection succeeded, retried with exponential backoff.

    A missing database or role, refused credentials, or a file that is not a SQLite
    database is a configuration error at once (exit 78): retrying cannot fix it.
    ``session``: make_engine's ``statement_timeout_s`` and ``lock_timeout_s``.
    """
    engine = make_engine(url, **session)
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(CONNECT_ATTEMPTS),
            wait=wait_exponential(multiplier=wait_multiplier, max=10),
            retry=lambda rs: rs.outcome.failed and isinstance(rs.outcome.exception(), sa.exc.OperationalError)
            and not _permanent(rs.outcome.exception()),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    log.warning("db.connect_retry", attempt=attempt.retry_state.attempt_number)
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        lines = str(exc.orig).strip().splitlines() or ["unknown"]
        fatal = [line.split("FATAL:", 1)[1].strip() for line in lines if "FATAL:" in line]
        reason = redact(fatal[0] if fatal else lines[0])
        if _permanent(exc):
            raise ConfigError(f"database {mask_url(url)}: {reason}") from None
        if isinstance(exc, sa.exc.OperationalError):
            raise DatabaseUnavailable(f"database unreachable after {CONNECT_ATTEMPTS} attempts: {mask_url(url)}: {reason}") from None
        raise
    return engine


def check_writable(engine: sa.Engine) -> None:
    """A job that writes refuses a read-only SQLite database up front, naming the file (exit 73)."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return
    with engine.connect() as conn:
        read_only = conn.exec_driver_sql("PRAGMA query_only").scalar() or _readonly_uri(engine)
    path = engine.url.database.removeprefix("file:").split("?")[0]
    if read_only or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise CantCreate(f"{path}: the SQLite database is read-only; this command writes to it")


def _readonly_uri(engine: sa.Engine) -> bool:
    return "mode=ro" in str(engine.url) or engine.url.query.get("mode") == "ro"


# Alembic is imported where it is used: it is a tenth of a second of start-up that `check` and
# `status`, polled by monitoring systems, do not need (they read the revision with one query).


def _alembic_config(conn: sa.Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def _scripts():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config())


# The revision this version of snapshotter runs on, the head of migrations/versions, written
# down: finding it through Alembic loads every migration module (0.09-0.12 s of `status` and of
# every job's schema check). tests/test_migrations.py holds it equal to Alembic's head, so a new
# migration without this line changed fails the suite.
HEAD_REVISION = "0010"


def head_revision() -> str:
    return HEAD_REVISION


def alembic_head() -> str:
    """The head as Alembic finds it from the migration scripts (what HEAD_REVISION must equal)."""
    return _scripts().get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    """The revision stamped in ``alembic_version`` (None: no schema), as Alembic reads it."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:
        raise ConfigError(f"the database is stamped with several revisions ({', '.join(sorted(rows))}); this version has one line of migrations")
    return rows[0] if rows else None


def known_revisions() -> list[str]:
    return sorted(rev.revision for rev in _scripts().walk_revisions())


def check_revision(revision: str) -> None:
    if revision not in ("head", "heads") and revision not in known_revisions():
        raise UsageError(f"unknown revision {revision!r}: known revisions {', '.join(known_revisions())} (head {head_revision()})")


def upgrade(engine: sa.Engine, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade to ``revision`` (an unknown one is a usage error naming the known ones) in one
    transaction. On PostgreSQL two upgrades at once (two services' pre-deploy commands) take
    turns on an advisory lock: the second finds the schema at head and does nothing."""
    check_revision(revision)
    before = current_revision(engine)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Waiting for the other upgrade is not what lock_timeout is for (table locks behind a
            # running job are): no limit for the advisory lock, the session's own afterwards.
            conn.execute(sa.text("SET LOCAL lock_timeout = 0"))
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key(MIGRATION_LOCK)})
            conn.execute(sa.text("SET LOCAL lock_timeout TO DEFAULT"))
        from alembic import command

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
            "run `snapshotter db upgrade` (or pass --migrate)"
        )
    upgrade(engine)
