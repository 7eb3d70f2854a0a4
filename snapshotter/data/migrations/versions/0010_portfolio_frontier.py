"""``portfolio_frontier``: one row per portfolio saying what the last run knew about it, so that
``status`` and ``check`` read one narrow row per portfolio instead of every lot and every
snapshot (README "Monitoring at a million portfolios").

A row (portfolio_id, as_of, active) is written by the snapshot engine in the same transaction
as that portfolio's snapshots: ``active`` is the SPEC rule on ``as_of`` at that moment, and an
active portfolio then has its snapshot on ``as_of``. It stays true until the portfolio's lots,
cash or deletion change, and every such write records a pending row in
``snapshot_invalidations`` (migration 0006), which ``status`` reads as "not known, compute
exactly". The recompute that consumes those rows rewrites the frontier in its transaction.

This migration gives every existing portfolio a row with ``as_of`` NULL (not known yet): until
the next nightly run, ``status`` computes them exactly, as before; a deleted one gets
9999-12-31 (inactive whatever the day, until restored). A portfolio created later
has no row until a run sees it; without a row and without a pending invalidation it never had
a lot or cash, so it is inactive.

``ON DELETE CASCADE``: an application that hard-deletes a portfolio need not know this table.
PostgreSQL: fillfactor 50, so the nightly rewrite of ``as_of`` is a HOT update (no index entry,
little WAL) and the old versions are pruned in place.

Frozen: imports no application code.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portfolio_frontier",
        sa.Column("portfolio_id", sa.Uuid, nullable=False),
        sa.Column("as_of", sa.Date, nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("portfolio_id", name=op.f("pk_portfolio_frontier")),
        sa.ForeignKeyConstraint(["portfolio_id"], ["portfolios.id"], ondelete="CASCADE",
                                name=op.f("fk_portfolio_frontier_portfolio_id_portfolios")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE portfolio_frontier SET (fillfactor = 50)")
    forever = "DATE '9999-12-31'" if op.get_bind().dialect.name == "postgresql" else "'9999-12-31'"  # SQLite: ISO text
    op.execute("INSERT INTO portfolio_frontier (portfolio_id, as_of, active) "
               f"SELECT id, CASE WHEN deleted_at IS NULL THEN NULL ELSE {forever} END, false FROM portfolios")


def downgrade() -> None:
    op.drop_table("portfolio_frontier")
