"""Index the partial snapshots so healing them does not scan every snapshot.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_portfolio_snapshots_partial",
        "portfolio_snapshots",
        ["portfolio_id", "snapshot_date"],
        postgresql_where=sa.text("is_partial"),
        sqlite_where=sa.text("is_partial = 1"),
    )


def downgrade() -> None:
    op.drop_index("ix_portfolio_snapshots_partial", "portfolio_snapshots")
