"""batch_run_tracking accepts outside writers; the unused rounding function goes.

- ``run_id`` gets a server default of 32 lowercase hex digits (the shape of the
  application's ``uuid4().hex``) and ``started_at`` defaults to the current
  timestamp, so another service can record a batch with only the SPEC columns
  (``INSERT ... (batch_type, target_date, status)``) without breaking the NOT NULL
  and UNIQUE ``run_id``.
- The status check constraint is renamed from the doubled
  ``ck_batch_run_tracking_ck_batch_run_tracking_status`` (0001 gave a full name to
  the ``ck_%(table_name)s_%(constraint_name)s`` convention) to
  ``ck_batch_run_tracking_status``.
- PostgreSQL: the function ``snapshotter_round_half_even(numeric, integer)`` from
  0001 is dropped; no query calls it (the engine writes half-even rounding inline).

PostgreSQL alters the table in place (catalog-only changes, no rewrite). SQLite
cannot change a column default, so the table is recreated in batch mode: the
reflected copy keeps the data and ids, the primary key (``id INTEGER`` stays the
rowid), the unique ``run_id`` and the (batch_type, target_date, status) index.

Everything here is frozen: this file imports no application code.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLE = "batch_run_tracking"
OLD_CHECK = "ck_batch_run_tracking_ck_batch_run_tracking_status"
NEW_CHECK = "ck_batch_run_tracking_status"
STATUS_CHECK = "status IN ('running', 'completed', 'failed', 'aborted', 'interrupted')"

RUN_ID_DEFAULT = {
    "postgresql": "replace(gen_random_uuid()::text, '-', '')",  # gen_random_uuid() is core since PostgreSQL 13
    "sqlite": "(lower(hex(randomblob(16))))",
}
NOW = "CURRENT_TIMESTAMP"

# The function as 0001 created it, for the downgrade.
PG_ROUND_HALF_EVEN = """
CREATE OR REPLACE FUNCTION snapshotter_round_half_even(v numeric, s integer)
RETURNS numeric LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN abs(v - trunc(v, s)) * power(10::numeric, s) = 0.5
     AND mod(trunc(v, s) * power(10::numeric, s), 2) = 0
    THEN trunc(v, s)
    ELSE round(v, s)
  END
$$
"""


def _dialect() -> str:
    return op.get_bind().dialect.name


def _drop_leftover_batch_table() -> None:
    """SQLite: pysqlite runs the batch's CREATE TABLE outside the migration's transaction
    (DDL starts none), so a recreate that failed later leaves this empty copy behind
    (the real table is intact: its DROP was rolled back) and a rerun would stop on it."""
    op.execute(f"DROP TABLE IF EXISTS _alembic_tmp_{TABLE}")


def upgrade() -> None:
    dialect = _dialect()
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS snapshotter_round_half_even(numeric, integer)")
        op.alter_column(TABLE, "run_id", server_default=sa.text(RUN_ID_DEFAULT[dialect]))
        op.alter_column(TABLE, "started_at", server_default=sa.text(NOW))
        op.execute(f"ALTER TABLE {TABLE} RENAME CONSTRAINT {OLD_CHECK} TO {NEW_CHECK}")
        return
    _drop_leftover_batch_table()
    with op.batch_alter_table(TABLE, recreate="always") as batch:
        batch.alter_column("run_id", existing_type=sa.Text(), existing_nullable=False, server_default=sa.text(RUN_ID_DEFAULT[dialect]))
        batch.alter_column("started_at", existing_type=sa.DateTime(timezone=True), existing_nullable=False, server_default=sa.text(NOW))
        batch.drop_constraint(op.f(OLD_CHECK), type_="check")
        batch.create_check_constraint(op.f(NEW_CHECK), STATUS_CHECK)


def downgrade() -> None:
    dialect = _dialect()
    if dialect == "postgresql":
        op.execute(f"ALTER TABLE {TABLE} RENAME CONSTRAINT {NEW_CHECK} TO {OLD_CHECK}")
        op.alter_column(TABLE, "started_at", server_default=None)
        op.alter_column(TABLE, "run_id", server_default=None)
        op.execute(PG_ROUND_HALF_EVEN)
        return
    _drop_leftover_batch_table()
    with op.batch_alter_table(TABLE, recreate="always") as batch:
        batch.alter_column("run_id", existing_type=sa.Text(), existing_nullable=False, server_default=None)
        batch.alter_column("started_at", existing_type=sa.DateTime(timezone=True), existing_nullable=False, server_default=None)
        batch.drop_constraint(op.f(NEW_CHECK), type_="check")
        batch.create_check_constraint(op.f(OLD_CHECK), STATUS_CHECK)
