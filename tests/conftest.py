"""Every fixture of the suite, and the ways to run the CLI.

Databases: every data-layer test runs on SQLite and on a real PostgreSQL server.
The PostgreSQL side creates one uniquely named database per test session and drops
it afterwards (the server is shared). Without a reachable server those cases skip,
unless SNAPSHOTTER_REQUIRE_POSTGRES=1, where they fail.

HTTP: one threaded pytest-httpserver on 127.0.0.1 for the session (``http_server``),
emptied for each test (``server``); the provider fakes (``av``, ``poly``) and the
webhook/ping ``receiver`` are mounted on it.

Every fixture used by more than one module lives here, and no fixture is ever
imported from another module (a module keeps only fixtures of its own). Plain
helpers live in modules: tests/factories.py, tests/fake_providers.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import logging
import subprocess
import sys
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

from snapshotter.core.calendar import trading_days_between
from snapshotter.data import db, schema
from snapshotter.ops import logs, signals
from tests.factories import D, add_cash, add_closes, add_lot, add_portfolio
from tests.fake_providers import FakeAlphaVantage, FakePolygon, Receiver


def quiet_logging() -> None:
    """The logging of the whole suite: in-process jobs log JSON at warning and above. The test
    receivers' access log (werkzeug, at info) is the suite's, not a command's: the standard
    library's records go through the commands' log handler, so it is kept below its level."""
    logs.configure("json", "warning")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


quiet_logging()

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


def drop_database(conn, name: str) -> None:
    """Drop a scratch database (on an AUTOCOMMIT admin connection), ending its sessions first."""
    conn.execute(
        sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"),
        {"n": name},
    )
    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))


@contextmanager
def scratch_database(admin: sa.Engine, prefix: str):
    """A uniquely named empty database on the shared server (its URL), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            drop_database(c, name)


@pytest.fixture(scope="session")
def pg_server_url():
    """URL of a fresh, uniquely named database on the PostgreSQL server (migrated)."""
    admin, why = _admin_engine()
    if admin is None:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required but unreachable: {why}")
        pytest.skip(f"PostgreSQL unreachable: {why}")
    try:
        with scratch_database(admin, "snapshotter_test") as url:
            eng = db.connect(url)
            db.upgrade(eng)
            eng.dispose()
            yield url
    finally:
        admin.dispose()


# Every table of the schema, children first (a new table is emptied between tests without being listed here).
TABLES_IN_DELETE_ORDER = [t.name for t in reversed(schema.metadata.sorted_tables)]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    return request.param


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A SQLite file migrated once for the session; each test gets a copy of it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    eng = db.connect(f"sqlite:///{path}")
    db.upgrade(eng)
    eng.dispose()  # the last connection closed: the WAL is checkpointed into the file
    return path


@pytest.fixture(scope="session")
def pg_cleaner(pg_server_url):
    """One connection pool for the session that empties the PostgreSQL database between tests."""
    eng = sa.create_engine(pg_server_url)
    with eng.connect() as c:
        sequences = list(c.execute(sa.text(
            "SELECT quote_ident(sequence_schema) || '.' || quote_ident(sequence_name) FROM information_schema.sequences"
        )).scalars())
    yield eng, sequences
    eng.dispose()


@pytest.fixture
def db_url(backend, tmp_path, request):
    """A migrated, empty database of the parametrised backend."""
    if backend == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_server_url")
    eng, sequences = request.getfixturevalue("pg_cleaner")
    # DELETE, not TRUNCATE: a handful of rows go in milliseconds, TRUNCATE takes ~150 ms a test.
    with eng.begin() as c:
        for name in TABLES_IN_DELETE_ORDER:
            c.execute(schema.metadata.tables[name].delete())
        for seq in sequences:  # ids start at 1 again, as in a new database
            c.execute(sa.text(f"ALTER SEQUENCE {seq} RESTART"))
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
    server.expect_request(re.compile(r"^/v[23]/")).respond_with_handler(fake.handle)
    fake.url = server.url_for("/").rstrip("/")
    return fake


@pytest.fixture
def fast_notify_retries(monkeypatch):
    """Alerts and pings retried as often as in production (3 attempts), without the real backoff waits."""
    from snapshotter.ops import notify

    monkeypatch.setattr(notify, "POLICY", notify.Policy(timeout=0.5, attempts=3, backoff=0.01, budget=5.0))


@pytest.fixture
def receiver(server):
    """The alert webhook and the ping endpoint; ``receiver.env`` points the CLI at them."""
    return Receiver(server)


# --- the CLI --------------------------------------------------------------------------


# Three ways to run it:
#   invoke(...)      in this process, through Typer's CliRunner: the default (no interpreter start-up)
#   run_cli(...)     a real `python -m snapshotter` run to its end: an exit code exactly as cron sees it
#   CliProcess(...)  a real process in the background, its stderr read as it comes: signals, SIGKILL,
#                    two runs at once, a run waiting on another process


SETTING_PREFIXES = ("ALPHAVANTAGE", "POLYGON", "ALERT_", "HEALTHCHECK", "SNAPSHOTTER_")


def _is_setting(key: str) -> bool:
    return key.startswith(SETTING_PREFIXES) or key == "DATABASE_URL"


def cli_env(db_url: str | None = None, env: dict | None = None) -> dict:
    """A real CLI process's environment: this one's without any snapshotter setting, then ``db_url`` and ``env``."""
    full = {k: v for k, v in os.environ.items() if not _is_setting(k)}
    if db_url:
        full["DATABASE_URL"] = db_url
    full.update(env or {})
    return full


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    secrets: frozenset = frozenset()  # invoke: what the run had registered for redaction when it ended


class _Engines:
    """Engines a command creates in-process, disposed after it (a real process closes its connections on exit)."""

    def __enter__(self):
        self.seen: set = set()

        def remember(conn):
            self.seen.add(conn.engine)

        self._listener = remember
        sa.event.listen(sa.engine.Engine, "engine_connect", remember)
        return self

    def __exit__(self, *exc):
        sa.event.remove(sa.engine.Engine, "engine_connect", self._listener)
        for engine in self.seen:
            engine.dispose()


class _ProcessState:
    """What a command changes for the whole process, saved before it and put back after it."""

    def __init__(self):
        in_main = threading.current_thread() is threading.main_thread()
        self.handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
        self.excepthook = sys.excepthook  # Typer's app() installs its own
        self.secrets = set(logs._SECRETS)

    def restore(self) -> None:
        for signum, handler in self.handlers.items():  # job commands install SIGTERM/SIGINT handlers
            signal.signal(signum, handler)
        sys.excepthook = self.excepthook
        logs._SECRETS.clear()  # the root callback registers the run's secrets
        logs._SECRETS.update(self.secrets)
        # The handlers set this flag and the jobs take it as a default argument, so it cannot be
        # replaced, only made new again in place (StopFlag has no public reset).
        signals.STOP.__init__()
        quiet_logging()  # the root callback bound structlog to CliRunner's stderr, which is gone now


_RUNNER = CliRunner()


def invoke(*args: str, db_url: str | None = None, env: dict | None = None) -> CliResult:
    """Run ``snapshotter ARGS`` in this process, as ``python -m snapshotter ARGS`` would.

    Inside CliRunner's isolation (stdout and stderr captured apart, the environment
    overridden) it calls ``snapshotter.cli.main()`` with ``sys.argv`` set, so the exit
    code is the one main() itself maps (Click's usage error 2 -> 64, an interrupt -> 130):
    nothing of that mapping is copied here. The environment is clean like run_cli's:
    every snapshotter setting of this process is hidden, then ``db_url`` and ``env`` set.
    Log lines land in ``.stderr`` as JSON (not a TTY), as they do from a real process.

    Afterwards the process is as it was: signal handlers, the stop flag, sys.excepthook,
    the redaction secrets and logging (see _ProcessState); engines the command made are
    disposed. An exception escaping main() is printed to ``.stderr`` with exit code 1,
    as the interpreter would.
    """
    from snapshotter import cli

    overrides: dict = {k: None for k in os.environ if _is_setting(k)}
    if db_url:
        overrides["DATABASE_URL"] = db_url
    overrides.update(env or {})
    saved = _ProcessState()
    code = 0
    try:
        with _Engines(), _RUNNER.isolation(env=overrides) as (out, err, _mixed):
            argv, sys.argv = sys.argv, ["snapshotter", *args]
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, (int, type(None))):
                    print(exc.code, file=sys.stderr)
            except Exception:  # noqa: BLE001 - what the interpreter would print
                traceback.print_exc()
                code = 1
            finally:
                sys.argv = argv
                sys.stdout.flush()
                sys.stderr.flush()
                stdout, stderr = out.getvalue(), err.getvalue()
        secrets = frozenset(logs._SECRETS)
    finally:
        saved.restore()
    return CliResult(code, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"), secrets)


def run_cli(*args: str, db_url: str | None = None, env: dict | None = None, timeout: float = 120) -> CliResult:
    """Run ``python -m snapshotter ARGS`` as a real process to its end: the exit code as cron sees it."""
    r = subprocess.run(
        [sys.executable, "-m", "snapshotter", *args], capture_output=True, text=True, env=cli_env(db_url, env),
        timeout=timeout, cwd=ROOT,
    )
    return CliResult(r.returncode, r.stdout, r.stderr)


def log_event(line: str) -> dict | None:
    """The JSON log event on one stderr line, or None for any other line."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class CliProcess:
    """A real ``python -m snapshotter ARGS`` in the background; its stderr read line by line as it comes.

    ``wait_for(name)`` returns once the child has logged that JSON event (debug events
    need ``--log-level debug``); it fails loudly if the child exits first or a generous
    deadline passes, never sooner. ``hold_after=(name, n)`` stops reading the child's
    stderr right after its n-th ``name`` event; its stderr pipe is one page, so the
    child blocks in its next log writes a few lines later and cannot go on until
    ``resume()``: a point mid-run that no timing can miss. Use it as a context manager:
    a child still running at the end is killed.
    """

    PIPE_BYTES = 4096

    def __init__(self, *args: str, db_url: str | None = None, env: dict | None = None, hold_after: tuple[str, int] | None = None):
        err_r, err_w = os.pipe()
        if hold_after is not None:  # one page: the child gets at most this far past the hold point
            fcntl.fcntl(err_w, fcntl.F_SETPIPE_SZ, self.PIPE_BYTES)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "snapshotter", *args], cwd=ROOT, env=cli_env(db_url, env),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_w,
            )
        except BaseException:
            os.close(err_r)
            raise
        finally:
            os.close(err_w)
        self.pid = self.proc.pid
        self._hold = hold_after
        self._cond = threading.Condition()
        self._err = bytearray()
        self._events: list[dict] = []
        self._held = False
        self._eof = False
        self._resume = threading.Event()
        self._out = b""
        self._readers = [
            threading.Thread(target=self._read_stderr, args=(err_r,), daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for t in self._readers:
            t.start()

    # -- readers (threads) --

    def _read_stdout(self) -> None:
        self._out = self.proc.stdout.read()

    def _read_stderr(self, fd: int) -> None:
        pending = b""
        try:
            while chunk := os.read(fd, self.PIPE_BYTES):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                with self._cond:
                    self._err += chunk
                    for line in lines:
                        if (event := log_event(line.decode("utf-8", "replace"))) is not None:
                            self._events.append(event)
                    hold = self._hold is not None and not self._held and self._count(self._hold[0]) >= self._hold[1]
                    self._held = self._held or hold
                    self._cond.notify_all()
                if hold:
                    self._resume.wait()
        finally:
            os.close(fd)
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _count(self, name: str) -> int:
        return sum(1 for e in self._events if e.get("event") == name)

    # -- the test's side --

    @property
    def stderr(self) -> str:
        with self._cond:
            return self._err.decode("utf-8", "replace")

    def events(self, name: str | None = None) -> list[dict]:
        with self._cond:
            return [e for e in self._events if name is None or e.get("event") == name]

    def _wait(self, done, what: str, timeout: float):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (result := done()):
                if self._eof:
                    raise AssertionError(f"the child ended before {what}; exit {self.proc.wait(30)}; stderr:\n{self._err.decode()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {what} within {timeout}s; stderr so far:\n{self._err.decode()}")
                self._cond.wait(remaining)
            return result

    def wait_for(self, name: str, n: int = 1, timeout: float = 60) -> dict:
        """The child's n-th ``name`` log event, once it has been logged."""
        def nth():
            found = [e for e in self._events if e.get("event") == name]
            return found[n - 1] if len(found) >= n else None

        return self._wait(nth, f"{n} {name!r} event(s)", timeout)

    def wait_held(self, timeout: float = 60) -> dict:
        """Once stderr reading stopped at ``hold_after``: the event it stopped after."""
        name, n = self._hold
        self._wait(lambda: self._held, f"{n} {name!r} event(s)", timeout)
        return self.wait_for(name, n)

    def resume(self) -> None:
        self._resume.set()

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.proc.kill()

    def finish(self, timeout: float = 60) -> CliResult:
        """Let the child run to its end (reading all its output) and return what it did."""
        self.resume()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the child did not end within {timeout}s; stderr so far:\n{self.stderr}") from None
        for t in self._readers:
            t.join(timeout)
        return CliResult(code, self._out.decode("utf-8", "replace"), self.stderr)

    def __enter__(self) -> "CliProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.resume()
        self.proc.wait(30)
        for t in self._readers:
            t.join(30)


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` until it is true; fail only if a generous deadline passes."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return value


@contextmanager
def in_background(step, timeout: float = 120.0):
    """Run ``step()`` in a thread during the block (say, while the main thread runs the CLI);
    at the end of the block wait for it, and raise whatever it raised."""
    errors: list[BaseException] = []

    def run():
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    t = threading.Thread(target=run, name="background-step", daemon=True)
    t.start()
    yield t
    t.join(timeout)
    if t.is_alive():
        raise AssertionError(f"the background step did not end within {timeout}s")
    if errors:
        raise errors[0]


@pytest.fixture
def stop_flag_sleeps(monkeypatch) -> threading.Event:
    """Set once any job in this process waits through StopFlag.sleep: how a job waits for the
    lock (--wait-for-lock) and for the symbol batch, so that a stop request wakes it."""
    waiting = threading.Event()
    original = signals.StopFlag.sleep

    def sleep(self, seconds: float) -> None:
        waiting.set()
        original(self, seconds)

    monkeypatch.setattr(signals.StopFlag, "sleep", sleep)
    return waiting


def table_rows(engine, table: sa.Table, order_by=None) -> list[dict]:
    with engine.connect() as c:
        q = sa.select(table)
        if order_by is not None:
            q = q.order_by(*order_by)
        return [dict(r._mapping) for r in c.execute(q)]


def row_counts(engine) -> dict[str, int]:
    with engine.connect() as c:
        return {t: c.execute(sa.select(sa.func.count()).select_from(schema.metadata.tables[t])).scalar_one() for t in TABLES_IN_DELETE_ORDER}
