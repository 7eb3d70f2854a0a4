"""Migrations 0004 to 0009 on populated databases, on SQLite and PostgreSQL.

Each test starts from its own scratch database at revision 0003 (a file on SQLite,
a uniquely named database on the PostgreSQL server of ``pg_server_url``, dropped
afterwards), fills every table, migrates, and compares.
"""

from __future__ import annotations

import json
import re
import uuid
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from snapshotter.data import db, partitions, schema, tracking
from snapshotter.ops import status as ops_status
from tests.conftest import scratch_database

BEFORE = "0003"
AFTER = "0004"
OLD_CHECK = "ck_batch_run_tracking_ck_batch_run_tracking_status"
NEW_CHECK = "ck_batch_run_tracking_status"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
OUTSIDE_INSERT = "INSERT INTO batch_run_tracking (batch_type, target_date, status) VALUES ('symbol_batch', '2026-11-24', 'completed')"
T0 = datetime(2026, 11, 20, 21, 30, 15, 123456, tzinfo=timezone.utc)


@pytest.fixture
def scratch_url(backend, tmp_path, request):
    """An empty database, not migrated: the test picks the revision."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    server = sa.make_url(request.getfixturevalue("pg_server_url"))
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with scratch_database(admin, "snapshotter_migr") as url:
            yield url
    finally:
        admin.dispose()


@pytest.fixture
def at_0003(scratch_url):
    eng = db.connect(scratch_url)
    db.upgrade(eng, BEFORE)
    assert db.current_revision(eng) == BEFORE
    yield eng
    eng.dispose()


def downgrade(engine, revision):
    with engine.begin() as conn:
        command.downgrade(db._alembic_config(conn), revision)


# --- data ----------------------------------------------------------------------


def insert(conn, table: sa.Table, rows: list[dict]) -> None:
    for row in rows:  # one by one: the rows leave out different columns
        conn.execute(table.insert().values(**row))


def populate(engine) -> None:
    """A few rows in every table, with the awkward values: long decimals, NULLs, JSON, id gaps."""
    p1, p2 = uuid.UUID(int=1), uuid.uuid4()
    with engine.begin() as c:
        insert(c, schema.portfolios, [
            {"id": p1, "name": "Main", "owner_id": "u-1", "base_currency": "EUR", "created_at": T0},
            {"id": p2, "name": "Zürich ünïcode", "owner_id": None, "created_at": T0, "deleted_at": T0 + timedelta(days=1)},
        ])
        insert(c, schema.positions, [
            {
                "id": uuid.uuid4(), "portfolio_id": p1, "symbol": "AAPL", "quantity": Decimal("123456789012345678.0123456789"),
                "entry_price": Decimal("0.000001"), "entry_date": date(2026, 1, 2), "last_price": Decimal("189.990000"),
                "market_value": Decimal("23456789012345678901.123456"), "market_value_date": date(2026, 11, 20),
            },
            {
                "id": uuid.uuid4(), "portfolio_id": p1, "symbol": "KO", "quantity": Decimal("0.0000000001"),
                "entry_price": Decimal("61.5"), "entry_date": date(2025, 3, 4), "exit_date": date(2026, 2, 3),
                "exit_price": Decimal("70.125"), "deleted_at": None,
            },
            {
                "id": uuid.uuid4(), "portfolio_id": p2, "symbol": "JPM", "quantity": Decimal("-10"),
                "entry_price": Decimal("150"), "entry_date": date(2026, 5, 6), "deleted_at": T0,
            },
        ])
        insert(c, schema.cash_transactions, [
            {"id": uuid.uuid4(), "portfolio_id": p1, "txn_date": date(2026, 1, 2), "amount": Decimal("10000.000001")},
            {"id": uuid.uuid4(), "portfolio_id": p1, "txn_date": date(2026, 1, 3), "amount": Decimal("-0.5")},
        ])
        insert(c, schema.watchlist, [{"symbol": "AAPL", "added_at": T0}, {"symbol": "MSFT", "added_at": T0}])
        insert(c, schema.symbol_prices_daily, [
            {
                "symbol": "AAPL", "price_date": date(2026, 11, 20), "open": Decimal("188.5"), "high": Decimal("190.25"),
                "low": Decimal("187.000001"), "close": Decimal("189.99"), "volume": 9_000_000_000, "source": "polygon", "fetched_at": T0,
            },
            {
                "symbol": "KO", "price_date": date(2026, 11, 20), "open": None, "high": None, "low": None,
                "close": Decimal("70.1"), "volume": None, "source": "csv", "fetched_at": T0,
            },
        ])
        insert(c, schema.portfolio_snapshots, [
            {
                "portfolio_id": p1, "snapshot_date": date(2026, 11, 19), "holdings_value": Decimal("1.000001"),
                "cash_balance": Decimal("9999.500001"), "total_value": Decimal("10000.500002"), "total_cost": Decimal("0.5"),
                "total_pnl": Decimal("10000.000002"), "pnl_percent": Decimal("2000000.000400"), "position_count": 2,
                "priced_position_count": 1, "is_partial": True, "missing_symbols": "KO", "created_at": T0, "updated_at": T0,
            },
            {
                "portfolio_id": p1, "snapshot_date": date(2026, 11, 20), "holdings_value": Decimal("0"),
                "cash_balance": Decimal("0"), "total_value": Decimal("0"), "total_cost": Decimal("0"), "total_pnl": Decimal("0"),
                "pnl_percent": Decimal("0"), "position_count": 0, "priced_position_count": 0, "is_partial": False,
                "missing_symbols": None, "created_at": T0, "updated_at": T0 + timedelta(hours=1),
            },
        ])
        runs = [
            ("symbol_batch", date(2026, 11, 19), "completed", {"symbols": 5, "rows": 1250, "by_source": {"polygon": 4, "csv": 1}}, None),
            ("portfolio_refresh", date(2026, 11, 19), "failed", {"phases": [0.25, 1.5], "note": "é ✓"}, "boom\nline 2"),
            ("symbol_batch", date(2026, 11, 20), "interrupted", {}, "stale heartbeat"),
            ("portfolio_backfill", None, "completed", None, None),
            ("portfolio_refresh", date(2026, 11, 20), "running", {"done": 0}, None),
        ]
        for i, (batch_type, target, status, stats, error) in enumerate(runs):
            c.execute(schema.batch_run_tracking.insert().values(
                run_id=uuid.UUID(int=i + 1).hex, batch_type=batch_type, target_date=target, status=status,
                started_at=T0 + timedelta(minutes=i), finished_at=None if status == "running" else T0 + timedelta(minutes=i, seconds=30),
                heartbeat_at=T0 + timedelta(minutes=i, seconds=29), host="worker-1", pid=4000 + i, stats=stats, error=error,
            ))
        # an id gap in the middle: ids must come through as they are, not renumbered
        c.execute(schema.batch_run_tracking.delete().where(schema.batch_run_tracking.c.run_id == uuid.UUID(int=2).hex))


def primary_key(table: sa.Table):
    return list(table.primary_key.columns)


def columns(engine) -> dict[str, list[str]]:
    """The application's tables and columns that exist in the database at its revision."""
    insp = sa.inspect(engine)
    present = set(insp.get_table_names())
    return {
        name: [c["name"] for c in insp.get_columns(name) if c["name"] in t.c]
        for name, t in schema.metadata.tables.items() if name in present
    }


def typed_rows(engine, cols: dict[str, list[str]] | None = None) -> dict[str, list[dict]]:
    """Every row of every table through the application's types (Decimal, UUID, JSON, datetimes);
    ``cols``: only these tables and columns (those of an earlier revision)."""
    cols = cols or columns(engine)
    with engine.connect() as c:
        return {
            name: [dict(r._mapping) for r in c.execute(
                sa.select(*(schema.metadata.tables[name].c[k] for k in names)).order_by(*primary_key(schema.metadata.tables[name]))
            )]
            for name, names in cols.items()
        }


def raw_rows(engine, cols: dict[str, list[str]] | None = None) -> dict[str, list[tuple]]:
    """Every row as the driver returns it: the stored text of SQLite money and JSON, byte for byte."""
    cols = cols or columns(engine)
    with engine.connect() as c:
        return {
            name: [tuple(r) for r in c.execute(sa.text(
                f"SELECT {', '.join(names)} FROM {name} ORDER BY "
                f"{', '.join(col.name for col in primary_key(schema.metadata.tables[name]))}"
            ))]
            for name, names in cols.items()
        }


def structure(engine) -> dict:
    """Tables, columns, keys, constraints and indexes as reflected."""
    insp = sa.inspect(engine)
    out = {}
    for t in sorted(insp.get_table_names()):
        out[t] = {
            "columns": {c["name"]: (str(c["type"]), c["nullable"], c.get("default")) for c in insp.get_columns(t)},
            "pk": insp.get_pk_constraint(t),
            "fks": sorted(insp.get_foreign_keys(t), key=lambda x: x["name"] or ""),
            "uniques": sorted(insp.get_unique_constraints(t), key=lambda x: x["name"] or ""),
            "checks": sorted(insp.get_check_constraints(t), key=lambda x: x["name"] or ""),
            "indexes": sorted(insp.get_indexes(t), key=lambda x: x["name"] or ""),
        }
    return out


def pg_function_count(engine) -> int:
    with engine.connect() as c:
        return c.execute(sa.text("SELECT count(*) FROM pg_proc WHERE proname = 'snapshotter_round_half_even'")).scalar_one()


def check_names(engine) -> list[str]:
    return [ck["name"] for ck in sa.inspect(engine).get_check_constraints("batch_run_tracking")]


def assert_matches_metadata(engine):
    """Autogenerate finds nothing, server defaults included (the plain compare skips them)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={
            "compare_server_default": True, "compare_type": True,
            "include_name": lambda name, kind, parent: not (kind == "table" and partitions.is_partition(name)),
        })
        assert compare_metadata(ctx, schema.metadata) == []
    # autogenerate does not compare CHECK constraints: the names are checked here
    expected = sorted(c.name for c in schema.batch_run_tracking.constraints if isinstance(c, sa.CheckConstraint))
    assert expected == [NEW_CHECK]
    assert sorted(check_names(engine)) == expected


def bad_status_rejected(engine) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as c:
            c.execute(schema.batch_run_tracking.insert().values(
                run_id="bogus-run", batch_type="symbol_batch", status="bogus", started_at=T0,
            ))


@contextmanager
def outside(engine):
    """A transaction on a separate plain engine: none of snapshotter's connection setup."""
    other = sa.create_engine(engine.url)
    try:
        with other.begin() as c:
            yield c
    finally:
        other.dispose()


# --- tests -----------------------------------------------------------------------


def test_upgrade_keeps_every_row_and_fixes_the_table(at_0003, backend):
    engine = at_0003
    populate(engine)
    rows, raw, before = typed_rows(engine), raw_rows(engine), structure(engine)
    assert all(rows.values()), {k: len(v) for k, v in rows.items()}
    assert check_names(engine) == [OLD_CHECK]
    if backend == "postgresql":
        assert pg_function_count(engine) == 1

    cols = columns(engine)
    assert db.upgrade(engine, AFTER) == (BEFORE, AFTER)

    assert typed_rows(engine, cols) == rows
    assert raw_rows(engine, cols) == raw
    assert [r["id"] for r in rows["batch_run_tracking"]] == [1, 3, 4, 5]

    # the structure is the same but for the defaults and the constraint's name
    after = structure(engine)
    expected = json.loads(json.dumps(before, default=str))
    brt = expected["batch_run_tracking"]
    assert brt["columns"]["run_id"][2] is None and brt["columns"]["started_at"][2] is None
    for col in ("run_id", "started_at"):
        assert after["batch_run_tracking"]["columns"][col][2] is not None
        brt["columns"][col][2] = after["batch_run_tracking"]["columns"][col][2]
    (check,) = brt["checks"]
    assert check["name"] == OLD_CHECK
    check["name"] = NEW_CHECK
    assert json.loads(json.dumps(after, default=str)) == expected
    (index,) = [ix for ix in after["batch_run_tracking"]["indexes"] if not ix.get("duplicates_constraint")]  # PG lists the unique's index too
    assert (index["name"], index["column_names"]) == ("ix_batch_run_tracking_batch_type_target_date_status", ["batch_type", "target_date", "status"])
    assert [uq["column_names"] for uq in after["batch_run_tracking"]["uniques"]] == [["run_id"]]
    assert after["batch_run_tracking"]["pk"]["constrained_columns"] == ["id"]

    assert check_names(engine) == [NEW_CHECK]
    if backend == "postgresql":
        assert pg_function_count(engine) == 0
    db.upgrade(engine)
    assert typed_rows(engine, cols) == rows
    assert_matches_metadata(engine)

    # ids carry on after the highest one; on SQLite id is still the rowid
    with outside(engine) as c:
        c.execute(sa.text(OUTSIDE_INSERT))
        assert c.execute(sa.text("SELECT max(id) FROM batch_run_tracking")).scalar_one() == 6
        if backend == "sqlite":
            assert c.execute(sa.text("SELECT count(*) FROM batch_run_tracking WHERE rowid <> id")).scalar_one() == 0
    run = tracking.Run(engine, tracking.SYMBOL_BATCH, date(2026, 11, 25)).start()
    run.finish("completed", {"symbols": 1})
    with engine.connect() as c:
        ids = c.execute(sa.select(schema.batch_run_tracking.c.id, schema.batch_run_tracking.c.run_id)).all()
        assert dict((r, i) for i, r in ids)[run.run_id] == 7
        assert tracking.batch_completed(c, tracking.SYMBOL_BATCH, date(2026, 11, 25))
    bad_status_rejected(engine)  # last: on PostgreSQL the failed insert takes a sequence value


def test_outside_insert_without_run_id(engine, backend):
    """Another service records a batch with the SPEC columns only."""
    with outside(engine) as c:
        c.execute(sa.text(OUTSIDE_INSERT))
    with outside(engine) as c:
        c.execute(sa.text(OUTSIDE_INSERT))

    brt = schema.batch_run_tracking
    with engine.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(sa.select(brt).order_by(brt.c.id))]
        completed = tracking.batch_completed(c, tracking.SYMBOL_BATCH, date(2026, 11, 24))
        shown = ops_status.last_runs_per_job(c, 5, datetime.now(timezone.utc))  # what `snapshotter status` lists
    assert len(rows) == 2
    for r in rows:
        assert HEX32.match(r["run_id"]), r["run_id"]
        assert isinstance(r["started_at"], datetime)
        started = r["started_at"] if r["started_at"].tzinfo else r["started_at"].replace(tzinfo=timezone.utc)
        assert abs(datetime.now(timezone.utc) - started) < timedelta(minutes=5)  # UTC on SQLite too
        assert (r["batch_type"], r["target_date"], r["status"]) == ("symbol_batch", date(2026, 11, 24), "completed")
    assert rows[0]["run_id"] != rows[1]["run_id"]
    assert completed
    assert {r["run_id"] for r in shown["symbol_batch"]} == {r["run_id"] for r in rows}
    assert not any(r["dead"] for r in shown["symbol_batch"])


def test_outside_running_row_without_heartbeat_is_taken_for_dead(engine):
    """As the README says: the next run of that type marks it interrupted."""
    with outside(engine) as c:
        c.execute(sa.text("INSERT INTO batch_run_tracking (batch_type, target_date, status) VALUES ('symbol_batch', '2026-11-24', 'running')"))
    run = tracking.Run(engine, tracking.SYMBOL_BATCH, date(2026, 11, 25)).start()
    brt = schema.batch_run_tracking
    with engine.connect() as c:
        statuses = dict(c.execute(sa.select(brt.c.run_id, brt.c.status)).all())
    assert statuses.pop(run.run_id) == "running"
    assert list(statuses.values()) == ["interrupted"]


def test_outside_insert_still_checks_status(engine):
    with pytest.raises(sa.exc.IntegrityError):
        with outside(engine) as c:
            c.execute(sa.text("INSERT INTO batch_run_tracking (batch_type, target_date, status) VALUES ('symbol_batch', '2026-11-24', 'done')"))


def test_downgrade_keeps_every_row(at_0003, backend):
    engine = at_0003
    structure_0003 = structure(engine)
    db.upgrade(engine, AFTER)
    populate(engine)
    with outside(engine) as c:  # a row that relied on the defaults
        c.execute(sa.text(OUTSIDE_INSERT))
    rows, raw = typed_rows(engine), raw_rows(engine)
    assert len(rows["batch_run_tracking"]) == 5

    downgrade(engine, BEFORE)

    assert db.current_revision(engine) == BEFORE
    assert typed_rows(engine) == rows
    assert raw_rows(engine) == raw
    assert json.loads(json.dumps(structure(engine), default=str)) == json.loads(json.dumps(structure_0003, default=str))
    assert check_names(engine) == [OLD_CHECK]
    bad_status_rejected(engine)
    with pytest.raises(sa.exc.IntegrityError):  # no default any more: as at 0003
        with outside(engine) as c:
            c.execute(sa.text(OUTSIDE_INSERT))
    if backend == "postgresql":
        assert pg_function_count(engine) == 1
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT snapshotter_round_half_even(2.5, 0), snapshotter_round_half_even(0.125, 2)")).one() == (
                Decimal("2"), Decimal("0.12"),
            )

    # and up again, to the head
    cols = columns(engine)
    db.upgrade(engine)
    assert typed_rows(engine, cols) == rows
    assert_matches_metadata(engine)


def test_sqlite_recreate_that_failed_midway_can_be_rerun(tmp_path):
    """pysqlite commits the batch's CREATE TABLE of the copy on its own; a failure after it
    leaves the copy behind (the table itself is rolled back intact) and 0004 clears it on rerun."""
    engine = db.connect(f"sqlite:///{tmp_path / 'midway.db'}")
    db.upgrade(engine, BEFORE)
    populate(engine)
    rows = typed_rows(engine)
    armed = True

    @sa.event.listens_for(engine, "before_cursor_execute")
    def fail_on_drop(conn, cursor, statement, params, context, executemany):
        if armed and statement.strip().startswith("DROP TABLE batch_run_tracking"):
            raise RuntimeError("simulated failure")

    with pytest.raises(RuntimeError):
        db.upgrade(engine)
    assert db.current_revision(engine) == BEFORE
    assert "_alembic_tmp_batch_run_tracking" in sa.inspect(engine).get_table_names()
    assert typed_rows(engine) == rows

    armed = False
    cols = columns(engine)
    db.upgrade(engine)
    assert "_alembic_tmp_batch_run_tracking" not in sa.inspect(engine).get_table_names()
    assert typed_rows(engine, cols) == rows
    assert_matches_metadata(engine)
    engine.dispose()


def test_0005_adds_the_rejection_and_dead_symbol_tables_and_keeps_every_row(at_0003, backend):
    engine = at_0003
    db.upgrade(engine, AFTER)
    populate(engine)
    cols, rows, raw = columns(engine), typed_rows(engine), raw_rows(engine)
    assert "stale_symbols" not in cols["portfolio_snapshots"] and "price_rejections" not in cols

    assert db.upgrade(engine, "0005") == (AFTER, "0005")

    assert typed_rows(engine, cols) == rows and raw_rows(engine, cols) == raw
    after = typed_rows(engine)
    assert after["price_rejections"] == [] and after["symbol_fetch_failures"] == []
    assert [r["stale_symbols"] for r in after["portfolio_snapshots"]] == [None] * len(rows["portfolio_snapshots"])
    with engine.begin() as c:  # the new table takes a row, and its key holds
        c.execute(schema.price_rejections.insert().values(symbol="BBB", price_date=date(2026, 11, 20), reason="close is not positive (-1)",
                                                          source="alphavantage", first_seen_at=T0, last_seen_at=T0))
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as c:
            c.execute(schema.price_rejections.insert().values(symbol="BBB", price_date=date(2026, 11, 20), reason="x", source="y",
                                                              first_seen_at=T0, last_seen_at=T0))

    downgrade(engine, AFTER)
    assert typed_rows(engine, cols) == rows
    assert "price_rejections" not in sa.inspect(engine).get_table_names()


def test_0006_adds_invalidations_and_triggers_to_a_populated_0005_database(at_0003, backend):
    """A populated 0005 database: every row kept, no invalidation recorded by the upgrade itself,
    the triggers fire for the next write and not for a write that changes nothing; downgrade removes both."""
    engine = at_0003
    db.upgrade(engine, "0005")
    populate(engine)
    cols, rows, raw = columns(engine), typed_rows(engine), raw_rows(engine)
    assert "snapshot_invalidations" not in cols

    assert db.upgrade(engine, "0006") == ("0005", "0006")

    assert typed_rows(engine, cols) == rows and raw_rows(engine, cols) == raw
    assert typed_rows(engine)["snapshot_invalidations"] == []
    lot = next(r for r in rows["positions"] if r["deleted_at"] is None)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE positions SET quantity = quantity, entry_date = entry_date"))  # the same stored values
        c.execute(schema.positions.update().where(schema.positions.c.id == lot["id"]).values(last_price=Decimal("1")))
    assert typed_rows(engine)["snapshot_invalidations"] == []  # nothing changed history
    with engine.begin() as c:
        c.execute(schema.positions.update().where(schema.positions.c.id == lot["id"]).values(quantity=lot["quantity"] + 1))
    inv = typed_rows(engine)["snapshot_invalidations"]
    assert [(r["portfolio_id"], r["from_date"], r["reason"]) for r in inv] == [(lot["portfolio_id"], lot["entry_date"], "lot changed")]

    downgrade(engine, "0005")
    assert "snapshot_invalidations" not in sa.inspect(engine).get_table_names()
    with engine.begin() as c:  # no trigger left behind
        c.execute(schema.positions.update().where(schema.positions.c.id == lot["id"]).values(quantity=lot["quantity"]))


def test_0007_adds_corporate_actions_to_a_populated_0006_database(at_0003, backend):
    """A populated 0006 database: every row kept; the split and ticker-change tables arrive with
    their keys and checks; their writes record symbol invalidations only when history changes."""
    engine = at_0003
    db.upgrade(engine, "0006")
    populate(engine)
    with engine.begin() as c:  # what populating recorded: not this test's subject
        c.execute(schema.snapshot_invalidations.delete())
    cols, rows, raw = columns(engine), typed_rows(engine), raw_rows(engine)
    assert "symbol_splits" not in cols and "symbol_changes" not in cols

    assert db.upgrade(engine, "0007") == ("0006", "0007")

    assert typed_rows(engine, cols) == rows and raw_rows(engine, cols) == raw
    after = typed_rows(engine)
    assert after["symbol_splits"] == [] and after["symbol_changes"] == [] and after["snapshot_invalidations"] == []
    snap_day = max(r["snapshot_date"] for r in rows["portfolio_snapshots"])
    split = {"symbol": "AAPL", "split_from": Decimal("1"), "split_to": Decimal("10"), "source": "test", "fetched_at": T0}

    def recorded():
        return [(r["symbol"], r["from_date"], r["reason"]) for r in typed_rows(engine)["snapshot_invalidations"]]

    with outside(engine) as c:  # announced for after the last snapshot: changes no stored value
        c.execute(schema.symbol_splits.insert().values(**split, ex_date=snap_day + timedelta(days=30)))
    assert recorded() == []
    with outside(engine) as c:
        c.execute(schema.symbol_splits.insert().values(**split, ex_date=snap_day))
        c.execute(schema.symbol_splits.update().where(schema.symbol_splits.c.ex_date == snap_day).values(source="again"))  # no value changed
    assert recorded() == [("AAPL", snap_day, "split recorded")]
    with outside(engine) as c:
        c.execute(schema.symbol_splits.update().where(schema.symbol_splits.c.ex_date == snap_day)
                  .values(ex_date=snap_day - timedelta(days=3), split_to=Decimal("4")))
        c.execute(schema.symbol_changes.insert().values(old_symbol="AAPL", new_symbol="AAPL2", effective_date=snap_day,
                                                        source="test", fetched_at=T0))
        c.execute(schema.symbol_changes.delete())
    assert recorded()[1:] == [("AAPL", snap_day - timedelta(days=3), "split changed"),
                              ("AAPL", snap_day, "ticker change recorded"), ("AAPL", snap_day, "ticker change deleted")]
    for bad in ({**split, "ex_date": snap_day, "symbol": "KO", "split_to": Decimal("0")},
                {**split, "ex_date": snap_day, "symbol": "KO", "split_from": Decimal("-1")}):
        with pytest.raises(sa.exc.IntegrityError):
            with engine.begin() as c:
                c.execute(schema.symbol_splits.insert().values(**bad))
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as c:
            c.execute(schema.symbol_changes.insert().values(old_symbol="KO", new_symbol="KO", effective_date=snap_day,
                                                            source="test", fetched_at=T0))

    downgrade(engine, "0006")
    assert {"symbol_splits", "symbol_changes"}.isdisjoint(sa.inspect(engine).get_table_names())
    assert typed_rows(engine, cols)["portfolios"] == rows["portfolios"]


def test_0008_partitions_the_snapshots_of_a_populated_0007_database(at_0003, backend):
    """Every row kept, ids carry on, the grants follow the table; on PostgreSQL one partition per
    month from the oldest row's to the next one, created on demand by the function; SQLite unchanged."""
    engine = at_0003
    db.upgrade(engine, "0007")
    populate(engine)
    if backend == "postgresql":
        with engine.begin() as c:
            c.execute(sa.text("GRANT SELECT ON portfolio_snapshots TO PUBLIC"))
    cols, rows, raw = columns(engine), typed_rows(engine), raw_rows(engine)
    top = max(r["id"] for r in rows["portfolio_snapshots"])
    first_day = min(r["snapshot_date"] for r in rows["portfolio_snapshots"])

    assert db.upgrade(engine, "0008") == ("0007", "0008")

    assert typed_rows(engine, cols) == rows and raw_rows(engine, cols) == raw
    snap = {k: v for k, v in rows["portfolio_snapshots"][0].items() if k != "id"}
    with engine.begin() as c:  # the sequence carries on
        new_id = c.execute(schema.portfolio_snapshots.insert().values(**{**snap, "snapshot_date": first_day - timedelta(days=1)})
                           .returning(schema.portfolio_snapshots.c.id)).scalar_one()
    assert new_id == top + 1
    may_2019 = date(2019, 5, 3)
    if backend == "sqlite":
        with engine.begin() as c:
            assert partitions.months(c) == [] and partitions.ensure_snapshot_partitions(c, may_2019, may_2019) == 0
        return
    with engine.connect() as c:
        kind = c.execute(sa.text("SELECT relkind FROM pg_class WHERE relname = 'portfolio_snapshots'")).scalar_one()
        pk = sa.inspect(c).get_pk_constraint("portfolio_snapshots")
        acl = c.execute(sa.text("SELECT relacl::text FROM pg_class WHERE relname = 'portfolio_snapshots'")).scalar_one()
        months = partitions.months(c)
        this_month = c.execute(sa.text("SELECT to_char(current_date, '\"portfolio_snapshots_\"YYYY_MM')")).scalar_one()
    assert kind == "p" and pk["constrained_columns"] == ["id", "snapshot_date"] and "=r/" in acl
    assert months[0] == first_day.strftime("portfolio_snapshots_%Y_%m") and this_month in months

    with pytest.raises(sa.exc.IntegrityError, match="no partition"):  # a month without its partition
        with engine.begin() as c:
            c.execute(schema.portfolio_snapshots.insert().values(**{**snap, "snapshot_date": may_2019}))
    with engine.begin() as c:  # [first, last + a month]: May and June 2019
        assert partitions.ensure_snapshot_partitions(c, may_2019, may_2019) == 2
        assert partitions.ensure_snapshot_partitions(c, may_2019, may_2019) == 0
        c.execute(schema.portfolio_snapshots.insert().values(**{**snap, "snapshot_date": may_2019}))
        assert c.execute(sa.text("SELECT snapshot_date FROM portfolio_snapshots_2019_05")).scalars().all() == [may_2019]
    with pytest.raises(sa.exc.IntegrityError):  # still one snapshot per portfolio and day
        with engine.begin() as c:
            c.execute(schema.portfolio_snapshots.insert().values(**{**snap, "snapshot_date": may_2019}))

    downgrade(engine, "0007")
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT relkind FROM pg_class WHERE relname = 'portfolio_snapshots'")).scalar_one() == "r"
        assert sa.inspect(c).get_pk_constraint("portfolio_snapshots")["constrained_columns"] == ["id"]
        assert partitions.months(c) == []
        assert c.execute(sa.text("SELECT to_regclass('portfolio_snapshots_2019_05')")).scalar() is None
    after = typed_rows(engine, cols)["portfolio_snapshots"]
    assert sorted(r["snapshot_date"] for r in after if r["id"] > top) == [may_2019, first_day - timedelta(days=1)]
    assert [r for r in after if r["id"] <= top] == rows["portfolio_snapshots"]


def test_0009_adds_the_partition_compaction_to_a_populated_0008_database(at_0003, backend):
    """Every row kept; on PostgreSQL the function that rewrites a month's partition compact, closed to
    PUBLIC, which keeps the month's rows; SQLite: nothing changes."""
    engine = at_0003
    db.upgrade(engine, "0008")
    with engine.begin() as c:  # the month populate writes into, as a job makes it first
        partitions.ensure_snapshot_partitions(c, date(2026, 11, 1), date(2026, 11, 30))
    populate(engine)
    cols, rows, raw = columns(engine), typed_rows(engine), raw_rows(engine)

    assert db.upgrade(engine, "0009") == ("0008", "0009")

    assert typed_rows(engine, cols) == rows and raw_rows(engine, cols) == raw
    if backend == "sqlite":
        return
    month = min(r["snapshot_date"] for r in rows["portfolio_snapshots"]).replace(day=1)
    with engine.begin() as c:
        public = c.execute(sa.text("SELECT has_function_privilege('public', 'snapshotter_compact_snapshot_partition(date)', "
                                   "'EXECUTE')")).scalar_one()
        kept = c.execute(sa.text("SELECT snapshotter_compact_snapshot_partition(:m)"), {"m": month}).scalar_one()
        none = c.execute(sa.text("SELECT snapshotter_compact_snapshot_partition('1990-01-01')")).scalar_one()
    assert public is False and none is None
    assert kept == sum(1 for r in rows["portfolio_snapshots"] if r["snapshot_date"].replace(day=1) == month)
    assert typed_rows(engine, cols) == rows and raw_rows(engine, cols) == raw

    downgrade(engine, "0008")
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM pg_proc WHERE proname = 'snapshotter_compact_snapshot_partition'")).scalar_one() == 0
    assert typed_rows(engine, cols) == rows


def test_0010_adds_the_frontier_to_a_populated_0009_database(at_0003, backend):
    """Every row kept; every portfolio gets a frontier row, not known yet (a deleted one: inactive for
    good), so status computes them exactly until the next run; the downgrade drops the table."""
    engine = at_0003
    db.upgrade(engine, "0009")
    with engine.begin() as c:
        partitions.ensure_snapshot_partitions(c, date(2026, 11, 1), date(2026, 11, 30))
    populate(engine)
    cols, rows, raw = columns(engine), typed_rows(engine), raw_rows(engine)

    assert db.upgrade(engine, "0010") == ("0009", "0010")

    assert typed_rows(engine, cols) == rows and raw_rows(engine, cols) == raw
    f = schema.portfolio_frontier
    with engine.connect() as c:
        got = {r.portfolio_id: (r.as_of, r.active) for r in c.execute(sa.select(f))}
    assert got == {p["id"]: (None if p["deleted_at"] is None else date(9999, 12, 31), False) for p in rows["portfolios"]}
    assert len(got) == 2 and {v[0] for v in got.values()} == {None, date(9999, 12, 31)}
    assert_matches_metadata(engine)
    with engine.begin() as c:  # an application hard-deletes a portfolio: its frontier row goes with it
        live = next(p["id"] for p in rows["portfolios"] if p["deleted_at"] is None)
        for t in (schema.portfolio_snapshots, schema.positions, schema.cash_transactions):
            c.execute(t.delete().where(t.c.portfolio_id == live))
        c.execute(schema.portfolios.delete().where(schema.portfolios.c.id == live))
        assert c.execute(sa.select(sa.func.count()).select_from(f)).scalar_one() == 1

    downgrade(engine, "0009")
    assert "portfolio_frontier" not in sa.inspect(engine).get_table_names()


def test_the_written_down_head_is_the_head_of_the_migration_scripts():
    """db.HEAD_REVISION (read by `status` and every job's schema check without loading Alembic)
    is the head Alembic finds in migrations/versions: a new migration must move it too."""
    assert db.head_revision() == db.HEAD_REVISION == db.alembic_head()
    assert db.known_revisions()[-1] == db.HEAD_REVISION
