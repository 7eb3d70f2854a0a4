"""Every fixture of the suite, and the ways to run the CLI.

Databases: every data-layer test runs on SQLite and on a real PostgreSQL server.
The PostgreSQL side creates one uniquely named database per test session and drops
it afterwards (the server is shared). Without a reachable server those cases skip,
unless SNAPSHOTTER_REQUIRE_POSTGRES=1, where they fail.

HTTP: one threaded pytest-httpserver on 127.0.0.1 for the session (``http_server``),
emptied for each test (``server``); the provider fakes (``av``, ``poly``) and the
webhook/ping ``receiver`` are mounted on it.

Fixtures are never imported from another module: they all live here. Plain helpers
do live in modules (tests/factories.py, tests/fake_providers.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from pytest_httpserver import HTTPServer

from snapshotter.core.calendar import trading_days_between
from snapshotter.data import db, schema
from snapshotter.ops import logs
from tests.factories import D, add_cash, add_closes, add_lot, add_portfolio
from tests.fake_providers import FakeAlphaVantage, FakePolygon, Receiver

logs.configure("json", "warning")  # in-process jobs log quietly; CLI subprocesses configure their own

PG_ADMIN_URLS = [
    os.environ.get("SNAPSHOTTER_TEST_PG_URL", ""),
    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "postgresql+psycopg://root@127.0.0.1:5432/postgres",
]
REQUIRE_PG = os.environ.get("SNAPSHOTTER_REQUIRE_POSTGRES") == "1"
ROOT = Path(__file__).resolve().parent.parent


def _admin_engine():
    errors = []
    for url in filter(None, PG_ADMIN_URLS):
        eng = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        try:
            with eng.connect() as c:
                c.execute(sa.text("SELECT 1"))
            return eng, None
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{url}: {str(exc).splitlines()[0]}")
            eng.dispose()
    return None, "; ".join(errors)


@pytest.fixture(scope="session")
def pg_server_url():
    """URL of a fresh, uniquely named database on the PostgreSQL server (migrated)."""
    admin, why = _admin_engine()
    if admin is None:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required but unreachable: {why}")
        pytest.skip(f"PostgreSQL unreachable: {why}")
    name = f"snapshotter_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    eng = db.connect(url)
    db.upgrade(eng)
    eng.dispose()
    yield url
    with admin.connect() as c:
        c.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"),
            {"n": name},
        )
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


# Every table of the schema, children first (a new table is emptied between tests without being listed here).
TABLES_IN_DELETE_ORDER = [t.name for t in reversed(schema.metadata.sorted_tables)]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    return request.param


@pytest.fixture
def db_url(backend, tmp_path, request):
    """A migrated, empty database of the parametrised backend."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        eng = db.connect(url)
        db.upgrade(eng)
        eng.dispose()
        return url
    url = request.getfixturevalue("pg_server_url")
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text("TRUNCATE " + ", ".join(TABLES_IN_DELETE_ORDER) + " RESTART IDENTITY CASCADE"))
    eng.dispose()
    return url


@pytest.fixture
def engine(db_url):
    eng = db.connect(db_url)
    yield eng
    eng.dispose()


# --- data ----------------------------------------------------------------------------


@pytest.fixture
def four_week_portfolio(engine):
    """(portfolio id, its trading days): one lot of 10 AAA at 100 and 500.50 cash from 2026-08-24;
    AAA closes 100, 101, ... on every trading day 2026-08-24..2026-09-18 (19 days, Labor Day off)."""
    days = trading_days_between(D("2026-08-24"), D("2026-09-18"))
    with engine.begin() as c:
        pid = add_portfolio(c, "sept")
        add_lot(c, pid, "AAA", "10", "100", "2026-08-24")
        add_cash(c, pid, "2026-08-24", "500.50")
        add_closes(c, "AAA", {d: Decimal(100 + i) for i, d in enumerate(days)})
    return pid, days


@pytest.fixture
def one_week_portfolio(engine):
    """Portfolio id: one lot of 10 AAA at 100 and 500 cash from 2026-09-14;
    AAA closes 100..104 on the five trading days 2026-09-14..18."""
    days = trading_days_between(D("2026-09-14"), D("2026-09-18"))
    with engine.begin() as c:
        pid = add_portfolio(c, "sept")
        add_lot(c, pid, "AAA", "10", "100", "2026-09-14")
        add_cash(c, pid, "2026-09-14", "500")
        add_closes(c, "AAA", {d: Decimal(100 + i) for i, d in enumerate(days)})
    return pid


# --- HTTP on 127.0.0.1 ------------------------------------------------------------------


@pytest.fixture(scope="session")
def http_server():
    """One threaded server for the session: a slow answer must not block the retry behind it."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def server(http_server):
    """The session's server, emptied for each test. ``server.release`` lets a handler that
    holds its answer go at teardown, so no server thread outlives the test."""
    http_server.clear()
    http_server.release = threading.Event()
    yield http_server
    http_server.release.set()
    http_server.clear()


@pytest.fixture
def av(server):
    fake = FakeAlphaVantage()
    server.expect_request("/query").respond_with_handler(fake.handle)
    fake.url = server.url_for("/query")
    return fake


@pytest.fixture
def poly(server):
    fake = FakePolygon()
    server.expect_request(re.compile(r"^/v2/")).respond_with_handler(fake.handle)
    fake.url = server.url_for("/").rstrip("/")
    return fake


@pytest.fixture
def receiver(server):
    """The alert webhook and the ping endpoint; ``receiver.env`` points the CLI at them."""
    return Receiver(server)


# --- the CLI --------------------------------------------------------------------------


def run_cli(*args: str, db_url: str | None = None, env: dict | None = None, timeout: float = 120, **kw):
    """Run ``python -m snapshotter`` as a real subprocess (exit codes as cron sees them)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHAVANTAGE", "POLYGON", "ALERT_", "HEALTHCHECK", "SNAPSHOTTER_"))}
    full_env.pop("DATABASE_URL", None)
    if db_url:
        full_env["DATABASE_URL"] = db_url
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "snapshotter", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=kw.pop("cwd", ROOT),
        **kw,
    )


def table_rows(engine, table: sa.Table, order_by=None) -> list[dict]:
    with engine.connect() as c:
        q = sa.select(table)
        if order_by is not None:
            q = q.order_by(*order_by)
        return [dict(r._mapping) for r in c.execute(q)]


def row_counts(engine) -> dict[str, int]:
    with engine.connect() as c:
        return {t: c.execute(sa.select(sa.func.count()).select_from(schema.metadata.tables[t])).scalar_one() for t in TABLES_IN_DELETE_ORDER}
