"""Schema, migrations and exact decimal arithmetic on both backends."""

import uuid
from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from snapshotter.data import db, partitions, planning_sql, schema
from snapshotter.data.dialect import dmul, dround, dsign, dsub, dsum, ddiv, sorted_csv
from tests.factories import add_close, add_portfolio, add_snapshot


def test_migrations_match_the_metadata(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={  # the monthly partitions are the snapshot table's (0008)
            "include_name": lambda name, kind, parent: not (kind == "table" and partitions.is_partition(name))})
        diff = compare_metadata(ctx, schema.metadata)
    assert diff == []
    assert db.current_revision(engine) == db.head_revision()


def test_downgrade_then_upgrade(engine):
    db.upgrade(engine, "head")
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(db._alembic_config(conn), "base")
    assert db.current_revision(engine) is None
    assert db.upgrade(engine) == (None, db.head_revision())


def test_money_round_trips_exactly(engine):
    pid = uuid.uuid4()
    with engine.begin() as c:
        c.execute(schema.portfolios.insert().values(id=pid, name="p"))
        c.execute(
            schema.positions.insert().values(
                id=uuid.uuid4(), portfolio_id=pid, symbol="X", quantity=Decimal("123456789012345678.0123456789"),
                entry_price=Decimal("0.000001"), entry_date=date(2026, 1, 2),
            )
        )
    with engine.connect() as c:
        row = c.execute(sa.select(schema.positions.c.quantity, schema.positions.c.entry_price)).one()
    assert row.quantity == Decimal("123456789012345678.0123456789")
    assert isinstance(row.quantity, Decimal)
    assert row.entry_price == Decimal("0.000001")


@pytest.mark.parametrize(
    "value,expected",
    [
        ("1.0000005", "1.000000"),  # half to even (down)
        ("1.0000015", "1.000002"),  # half to even (up)
        ("-1.0000005", "-1.000000"),
        ("-1.0000015", "-1.000002"),
        ("2.00000050001", "2.000001"),
        ("0.1234564999", "0.123456"),
        ("12", "12.000000"),
        ("0.0000005", "0.000000"),
        ("-0.0000025", "-0.000002"),
        ("3.9999995", "4.000000"),  # a tie above an odd truncation goes up, across the integer
        ("-3.9999995", "-4.000000"),
        ("7.00000250", "7.000002"),
        ("7.0000035", "7.000004"),
    ],
)
def test_round_half_even_in_the_database(engine, value, expected):
    with engine.connect() as c:
        got = c.execute(sa.select(dround(sa.cast(sa.literal(value), sa.Numeric(40, 12)) if engine.dialect.name == "postgresql" else sa.literal(value), 6, 22))).scalar()
    assert Decimal(str(got)) == Decimal(expected)


def test_decimal_functions_are_exact(engine):
    lit = (lambda v: sa.cast(sa.literal(v), sa.Numeric(40, 12))) if engine.dialect.name == "postgresql" else sa.literal
    with engine.connect() as c:
        prod = c.execute(sa.select(dmul(lit("0.1"), lit("0.2")))).scalar()
        diff = c.execute(sa.select(dsub(lit("0.3"), lit("0.1")))).scalar()
        quot = c.execute(sa.select(dround(ddiv(lit("1"), lit("3")), 6, 22))).scalar()
        sign = c.execute(sa.select(dsign(lit("-0.000001")))).scalar()
    assert Decimal(str(prod)) == Decimal("0.02")
    assert Decimal(str(diff)) == Decimal("0.2")
    assert Decimal(str(quot)) == Decimal("0.333333")
    assert sign == -1


def test_sum_and_sorted_csv_aggregates(engine):
    pid = uuid.uuid4()
    with engine.begin() as c:
        c.execute(schema.portfolios.insert().values(id=pid, name="p"))
        c.execute(
            schema.cash_transactions.insert(),
            [{"id": uuid.uuid4(), "portfolio_id": pid, "txn_date": date(2026, 1, 2), "amount": Decimal(a)} for a in ("0.1", "0.2", "0.3")],
        )
    ct = schema.cash_transactions
    with engine.connect() as c:
        total = c.execute(sa.select(dsum(ct.c.amount))).scalar()
        csv = c.execute(sa.select(sorted_csv(sa.case((ct.c.amount > 0, sa.literal("B")), else_=None)))).scalar()
    assert Decimal(str(total)) == Decimal("0.6")
    assert csv == "B"


def test_batch_run_status_is_constrained(engine):
    from snapshotter.clock import utcnow

    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as c:
            c.execute(schema.batch_run_tracking.insert().values(run_id="x", batch_type="symbol_batch", status="bogus", started_at=utcnow()))


def test_days_without_snapshots_are_the_priced_days_nobody_has(engine):
    """The gap planner's question (one probe per priced day): priced days in the range with no
    snapshot for any portfolio; a day with one snapshot is not bare, an unpriced day is never listed."""
    d = date.fromisoformat
    with engine.begin() as c:
        pid = add_portfolio(c)
        for day in ("2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19"):
            add_close(c, "AAA", d(day), Decimal("10"))
        add_snapshot(c, pid, d("2026-11-17"), 0)
    with engine.connect() as c:
        bare = sorted(c.execute(planning_sql.days_without_snapshots(d("2026-11-16"), d("2026-11-19"))).scalars())
        assert bare == [d("2026-11-16"), d("2026-11-18"), d("2026-11-19")]
        assert list(c.execute(planning_sql.days_without_snapshots(d("2026-11-17"), d("2026-11-17"))).scalars()) == []
        assert list(c.execute(planning_sql.days_without_snapshots(d("2026-11-20"), d("2026-11-27"))).scalars()) == []


def test_postgresql_sessions_prepare_no_statement(pg_server_url):
    """db.make_engine turns psycopg's automatic server-side preparation off: a statement run many
    times with different values (a chunk's ids, an IN list) is planned for its values each time,
    never left on a generic plan (measured 10-20x slower for status's split question)."""
    eng = db.connect(pg_server_url)
    try:
        with eng.connect() as c:
            for i in range(12):
                c.execute(sa.select(schema.portfolios.c.id).where(schema.portfolios.c.name.in_([f"p{i}", f"q{i}"]))).all()
            assert c.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar() == 0
    finally:
        eng.dispose()
