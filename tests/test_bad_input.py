"""Every bad input and fault gets one line, its exit code, no traceback, and leaves the database unchanged.

The table below is walked through the CLI on both backends: for each case the exit code,
exactly one ``snapshotter:`` line on stderr carrying the expected words, no traceback
anywhere, and every table's row count as before.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from snapshotter.data.locks import run_lock
from tests.conftest import invoke, row_counts
from tests.factories import add_closes, add_lot, add_portfolio

PID = uuid.UUID("11111111-2222-3333-4444-555555555555")
NOW = ("--now", "2026-12-07T12:00:00Z")


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    code: int
    says: str
    env: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)  # name -> bytes, written to tmp_path; "{tmp}" in args/env is replaced
    url: str | None = None  # a database URL instead of the test's ("{tmp}" replaced)
    backend: str | None = None  # only on this backend


U = str(uuid.uuid4())
POS_HEADER = "id,portfolio_id,symbol,quantity,entry_price,entry_date,exit_date\n"


def pos(quantity="1", price="10", entry="2026-09-01", exit_="", pid=PID) -> bytes:
    return (POS_HEADER + f"{uuid.uuid4()},{pid},AAA,{quantity},{price},{entry},{exit_}\n").encode()


CASES = [
    # dates and ranges
    Case("malformed date", ("refresh", "--date", "2026-13-01"), 64, "is not a date"),
    Case("future date", ("refresh", "--date", "2099-01-02"), 64, "in the future"),
    Case("holiday", ("refresh", "--date", "2026-09-07"), 64, "not an NYSE trading day"),
    Case("refresh on a Saturday", ("portfolio-refresh", "--date", "2026-09-05"), 64, "not an NYSE trading day"),
    Case("symbol-batch on a Saturday", ("symbol-batch", "--date", "2026-09-05"), 64, "not an NYSE trading day"),
    Case("reversed range", ("symbol-batch", "--from", "2026-09-10", "--to", "2026-09-01"), 64, "is after --to"),
    Case("from without to", ("symbol-batch", "--from", "2026-09-10"), 64, "--from and --to go together"),
    Case("date and range", ("symbol-batch", "--date", "2026-09-18", "--from", "2026-09-01", "--to", "2026-09-18"), 64, "either --date"),
    Case("empty symbols", ("symbol-batch", "--symbols", " , "), 64, "no symbols given"),
    Case("bad symbol", ("symbol-batch", "--symbols", "A/B"), 64, "bad symbol"),
    Case("portfolio not a UUID", ("backfill", "--portfolio", "nope"), 64, "not a UUID"),
    Case("unknown portfolio", ("backfill", "--portfolio", U), 64, "unknown portfolio"),
    Case("holiday-only range", ("backfill", "--portfolio", str(PID), "--from", "2026-09-05", "--to", "2026-09-07"), 64,
         "no trading day in 2026-09-05..2026-09-07"),
    Case("range over the cap", ("backfill", "--portfolio", str(PID), "--from", "2024-01-02", "--to", "2026-09-01"), 64,
         "over --max-backfill-days"),
    Case("backfill into the future", ("backfill", "--portfolio", str(PID), "--to", "2099-01-01"), 64, "in the future"),
    Case("history reversed", ("history", "--portfolio", str(PID), "--from", "2026-09-10", "--to", "2026-09-01"), 64, "is after --to"),
    Case("history not a UUID", ("history", "--portfolio", "x"), 64, "not a UUID"),
    # options
    Case("duration", ("portfolio-refresh", "--wait-timeout", "soon"), 64, "not a duration"),
    Case("huge duration", ("portfolio-refresh", "--wait-timeout", "99999999999h"), 64, "longer than a week"),
    Case("workers 0", ("portfolio-refresh", "--workers", "0"), 64, "--workers"),
    Case("chunk size 0", ("refresh", "--date", "2026-09-18", "--chunk-size", "0"), 64, "--chunk-size"),
    Case("failure ratio 2", ("portfolio-refresh", "--alert-failure-ratio", "2"), 64, "--alert-failure-ratio"),
    Case("log level", ("--log-level", "verbose", "status"), 64, "'verbose' is not one of"),
    Case("log format", ("--log-format", "xml", "status"), 64, "--log-format"),
    Case("negative limit", ("snapshots", "--limit", "-1"), 64, "--limit"),
    Case("negative max lag", ("check", "--max-lag", "-1"), 64, "--max-lag"),
    Case("unknown revision", ("db", "upgrade", "9999"), 64, "unknown revision '9999'"),
    Case("unknown command", ("nosuchcommand",), 64, "No such command"),
    Case("unknown option", ("portfolio-refresh", "--bogus"), 64, "--bogus"),
    Case("missing required option", ("refresh",), 64, "--date"),
    Case("explain mode", ("portfolio-refresh", "--explain", "everything"), 64, "--explain"),
    Case("prune horizon", ("prune", "--keep-daily", "abc", "--then", "monthly"), 64, "'abc' is not a horizon"),
    Case("prune policy", ("prune", "--keep-daily", "2y", "--then", "weekly"), 64, "--then"),
    Case("prune inside the nightly window", ("prune", "--keep-daily", "6m", "--then", "monthly"), 64,
         "reaches into the nightly backfill window"),
    # files
    Case("nothing to load", ("load",), 64, "nothing to load"),
    Case("missing file", ("load", "--portfolios", "{tmp}/none.csv"), 64, "cannot read"),
    Case("not UTF-8", ("load", "--portfolios", "{tmp}/p.csv"), 64, "p.csv:2: not UTF-8",
         files={"p.csv": b"id,name\n" + str(uuid.uuid4()).encode() + b",caf\xe9\n"}),
    Case("quantity overflow", ("load", "--positions", "{tmp}/pos.csv"), 64, "pos.csv:2: 1e400 is too large",
         files={"pos.csv": pos(quantity="1e400")}),
    Case("too many decimals", ("load", "--positions", "{tmp}/pos.csv"), 64, "more than 6 decimals", files={"pos.csv": pos(price="1.0000001")}),
    Case("exit before entry", ("load", "--positions", "{tmp}/pos.csv"), 64, "exit_date before entry_date",
         files={"pos.csv": pos(entry="2026-09-10", exit_="2026-09-01")}),
    Case("lot of an unknown portfolio", ("load", "--positions", "{tmp}/pos.csv"), 64, "unknown portfolio_id",
         files={"pos.csv": pos(pid=uuid.uuid4())}),
    Case("price on a Saturday", ("load", "--prices", "{tmp}/px.csv"), 64, "not an NYSE trading day",
         files={"px.csv": b"symbol,price_date,close\nAAA,2026-09-05,10\n"}),
    Case("price in the future", ("load", "--prices", "{tmp}/px.csv"), 64, "is in the future",
         files={"px.csv": b"symbol,price_date,close\nAAA,2099-01-02,10\n"}),
    Case("cash not a number", ("load", "--cash", "{tmp}/c.csv"), 64, "not a decimal",
         files={"c.csv": f"id,portfolio_id,txn_date,amount\n{uuid.uuid4()},{PID},2026-09-01,abc\n".encode()}),
    Case("missing column", ("load", "--positions", "{tmp}/pos.csv"), 64, "missing column(s)", files={"pos.csv": b"id,symbol\n"}),
    # configuration
    Case("empty DATABASE_URL", ("status",), 78, "DATABASE_URL is set but empty", env={"DATABASE_URL": ""}, url=""),
    Case("unsupported database", ("status",), 78, "unsupported database 'mysql'", url="mysql://u@h/db"),
    Case("unknown provider", ("symbol-batch", "--provider", "nope"), 78, "unknown provider 'nope'"),
    Case("provider without its key", ("symbol-batch", "--provider", "alphavantage"), 78, "needs ALPHAVANTAGE_API_KEY"),
    Case("prices dir missing", ("--prices-dir", "{tmp}/none", "symbol-batch"), 78, "prices directory"),
    Case("bad rate setting", ("symbol-batch",), 78, "SNAPSHOTTER_CALLS_PER_MINUTE must be a number",
         env={"SNAPSHOTTER_CALLS_PER_MINUTE": "fast"}),
    Case("not a SQLite database", ("status",), 78, "file is not a database", files={"x.db": b"not a database" * 64},
         url="sqlite:///{tmp}/x.db", backend="sqlite"),
    Case("schema behind with --no-migrate", ("--no-migrate", "portfolio-refresh", "--no-wait"), 78, "run `snapshotter db upgrade`",
         url="sqlite:///{tmp}/fresh.db", backend="sqlite"),
    Case("database that does not exist", ("status",), 78, "does not exist",
         url="postgresql+psycopg://postgres@127.0.0.1:5432/snapshotter_no_such_db", backend="postgresql"),
    Case("role that does not exist", ("status",), 78, "does not exist",
         url="postgresql+psycopg://snapshotter_no_such_role@127.0.0.1:5432/postgres", backend="postgresql"),
    # faults
    Case("read-only SQLite database", ("portfolio-refresh", "--no-wait"), 73, "read-only", url="ro", backend="sqlite"),
    Case("unreachable database", ("status",), 69, "database unreachable after 3 attempts",
         url="postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/db", backend="postgresql"),
]


@pytest.fixture
def world(engine):
    with engine.begin() as c:
        add_portfolio(c, "p", pid=PID)
        add_lot(c, PID, "AAA", "1", "10", "2026-09-01")
        add_closes(c, "AAA", {"2026-09-18": "11"})


RUNS = [(b, c) for c in CASES for b in ([c.backend] if c.backend else ["sqlite", "postgresql"])]


@pytest.mark.parametrize("backend,case", RUNS, ids=[f"{c.name}-{b}" for b, c in RUNS])
def test_bad_input_is_one_line_its_code_and_changes_nothing(case, backend, db_url, engine, world, tmp_path: Path):
    for name, data in case.files.items():
        (tmp_path / name).write_bytes(data)
    fill = lambda text: text.replace("{tmp}", str(tmp_path))  # noqa: E731
    url = db_url if case.url is None else fill(case.url)
    if case.url == "ro":
        url = f"sqlite:///file:{engine.url.database}?mode=ro&uri=true"
    env = {k: fill(v) for k, v in case.env.items()}
    if case.url == "":
        url = None
    before = row_counts(engine)
    r = invoke(*NOW, *(fill(a) for a in case.args), db_url=url, env=env)
    lines = [line for line in r.stderr.splitlines() if line.startswith("snapshotter:")]
    assert r.returncode == case.code, r.stderr
    assert len(lines) == 1 and case.says in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert "s3cret-pw" not in r.stderr + r.stdout
    assert row_counts(engine) == before


def test_a_held_lock_is_75_and_changes_nothing(db_url, engine, world):
    before = row_counts(engine)
    with run_lock(engine):
        r = invoke(*NOW, "refresh", "--date", "2026-09-18", db_url=db_url)
    assert r.returncode == 75
    assert [line for line in r.stderr.splitlines() if line.startswith("snapshotter:")] == [
        "snapshotter: error: another run holds the lock 'snapshotter.portfolio_snapshots'; rerun later or pass --wait-for-lock"
    ]
    assert row_counts(engine) == before


def test_the_table_has_forty_cases_or_more():
    assert len({c.name for c in CASES}) == len(CASES) >= 40
