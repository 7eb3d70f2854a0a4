"""Corporate actions: splits and ticker changes, and the history they invalidate.

``symbol_splits`` (symbol, ex_date, split_from, split_to, source, fetched_at; primary key
(symbol, ex_date)): from ``ex_date`` on, a lot entered before it holds
``quantity x split_to / split_from`` shares (10-for-1: from 1, to 10; 1-for-20: from 20,
to 1). Both sides are positive (a CHECK).

``symbol_changes`` (old_symbol, new_symbol, effective_date, source, fetched_at; primary
key (old_symbol, effective_date)): from ``effective_date`` on, a lot held in
``old_symbol`` takes ``new_symbol``'s closes (FB -> META on 2022-06-09).

Both change history, so writes to them are captured like the others of 0006, into
``snapshot_invalidations`` as *symbol* rows: a split inserted, deleted or changed, from
its ex_date (the earlier one for an update); a ticker change, for its old symbol, from
its effective date (the earlier one). An insert records nothing when no snapshot exists
on or after that day (a split announced for the future changes no stored value), and an
update that changes no value records nothing (the nightly re-fetch of the same split).
PostgreSQL and SQLite: row-level triggers (both tables are small).

Frozen: imports no application code.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
RATIO = sa.Numeric(20, 10).with_variant(sa.Text(), "sqlite")  # as Money(20, 10): exact decimal text on SQLite
INV = "snapshot_invalidations"

# (table, key date column, symbol column, value columns whose change matters, reason)
CAPTURED = [
    ("symbol_splits", "ex_date", "symbol", ["symbol", "ex_date", "split_from", "split_to"], "split"),
    ("symbol_changes", "effective_date", "old_symbol", ["old_symbol", "new_symbol", "effective_date"], "ticker change"),
]


def _has_snapshots_from(day: str) -> str:
    return f"EXISTS (SELECT 1 FROM portfolio_snapshots WHERE snapshot_date >= {day})"


def _pg(table, day, sym, cols, reason):
    changed = " OR ".join(f"old.{c} IS DISTINCT FROM new.{c}" for c in cols)
    return [
        f"""
CREATE FUNCTION snapshotter_inv_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF {_has_snapshots_from(f'new.{day}')} THEN
      INSERT INTO {INV} (symbol, from_date, reason) VALUES (new.{sym}, new.{day}, '{reason} recorded');
    END IF;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO {INV} (symbol, from_date, reason) VALUES (old.{sym}, old.{day}, '{reason} deleted');
  ELSE
    INSERT INTO {INV} (symbol, from_date, reason) VALUES (new.{sym}, least(old.{day}, new.{day}), '{reason} changed');
    IF old.{sym} IS DISTINCT FROM new.{sym} THEN
      INSERT INTO {INV} (symbol, from_date, reason) VALUES (old.{sym}, old.{day}, '{reason} changed');
    END IF;
  END IF;
  RETURN NULL;
END $$""",
        f"""CREATE TRIGGER snapshotter_inv_{table}_ins_del AFTER INSERT OR DELETE ON {table}
FOR EACH ROW EXECUTE FUNCTION snapshotter_inv_{table}()""",
        f"""CREATE TRIGGER snapshotter_inv_{table}_upd AFTER UPDATE OF {', '.join(cols)} ON {table}
FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION snapshotter_inv_{table}()""",
    ]


def _sqlite(table, day, sym, cols, reason):
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in cols)
    return [
        f"""CREATE TRIGGER snapshotter_inv_{table}_ins AFTER INSERT ON {table} FOR EACH ROW
WHEN {_has_snapshots_from(f'NEW.{day}')}
BEGIN
  INSERT INTO {INV} (symbol, from_date, reason) VALUES (NEW.{sym}, NEW.{day}, '{reason} recorded');
END""",
        f"""CREATE TRIGGER snapshotter_inv_{table}_del AFTER DELETE ON {table} FOR EACH ROW
BEGIN
  INSERT INTO {INV} (symbol, from_date, reason) VALUES (OLD.{sym}, OLD.{day}, '{reason} deleted');
END""",
        f"""CREATE TRIGGER snapshotter_inv_{table}_upd AFTER UPDATE OF {', '.join(cols)} ON {table} FOR EACH ROW
WHEN {changed}
BEGIN
  INSERT INTO {INV} (symbol, from_date, reason) VALUES (NEW.{sym}, min(OLD.{day}, NEW.{day}), '{reason} changed');
  INSERT INTO {INV} (symbol, from_date, reason) SELECT OLD.{sym}, OLD.{day}, '{reason} changed' WHERE OLD.{sym} IS NOT NEW.{sym};
END""",
    ]


def upgrade() -> None:
    op.create_table(
        "symbol_splits",
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("ex_date", sa.Date, nullable=False),
        sa.Column("split_from", RATIO, nullable=False),
        sa.Column("split_to", RATIO, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("fetched_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("symbol", "ex_date", name=op.f("pk_symbol_splits")),
        sa.CheckConstraint("CAST(split_from AS REAL) > 0 AND CAST(split_to AS REAL) > 0", name=op.f("ck_symbol_splits_positive_ratio")),
    )
    op.create_table(
        "symbol_changes",
        sa.Column("old_symbol", sa.Text, nullable=False),
        sa.Column("new_symbol", sa.Text, nullable=False),
        sa.Column("effective_date", sa.Date, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("fetched_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("old_symbol", "effective_date", name=op.f("pk_symbol_changes")),
        sa.CheckConstraint("old_symbol <> new_symbol", name=op.f("ck_symbol_changes_new_symbol")),
    )
    op.create_index(op.f("ix_symbol_changes_new_symbol"), "symbol_changes", ["new_symbol"])
    pg = op.get_bind().dialect.name == "postgresql"
    for captured in CAPTURED:
        for stmt in (_pg if pg else _sqlite)(*captured):
            op.execute(stmt)


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for table, *_ in CAPTURED:
        if pg:
            op.execute(f"DROP TRIGGER IF EXISTS snapshotter_inv_{table}_ins_del ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS snapshotter_inv_{table}_upd ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS snapshotter_inv_{table}()")
        else:
            for suffix in ("ins", "del", "upd"):
                op.execute(f"DROP TRIGGER IF EXISTS snapshotter_inv_{table}_{suffix}")
    op.drop_index(op.f("ix_symbol_changes_new_symbol"), "symbol_changes")
    op.drop_table("symbol_changes")
    op.drop_table("symbol_splits")
