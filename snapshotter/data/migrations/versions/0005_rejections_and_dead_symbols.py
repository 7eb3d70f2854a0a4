"""The nightly chain survives real market data: rejected bars and dead symbols are remembered,
and a snapshot can say which symbols it valued at an older close.

- ``price_rejections`` (symbol, price_date): a bar the batch rejected, with the reason,
  the source, when it was first and last seen and how often. A rejected day is not
  "missing" again, and rejecting it again is not a new failure: the same provider
  answer gives the same outcome.
- ``symbol_fetch_failures`` (symbol): consecutive nightly target dates on which the
  provider did not know the symbol or had no data for it; ``unavailable_since`` once
  it is marked unavailable, then retried only on ``next_attempt_on`` (a growing backoff).
- ``portfolio_snapshots.stale_symbols``: the symbols valued at their latest close within
  ``--max-price-age`` trading days instead of the day's own (NULL when none), and a
  partial index on the stale snapshots for the heal pass.

Frozen: imports no application code.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "price_rejections",
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("price_date", sa.Date, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("first_seen_at", TZ, nullable=False),
        sa.Column("last_seen_at", TZ, nullable=False),
        sa.Column("times_seen", sa.Integer, nullable=False, server_default="1"),
        sa.PrimaryKeyConstraint("symbol", "price_date", name=op.f("pk_price_rejections")),
    )
    op.create_table(
        "symbol_fetch_failures",
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("first_failed_on", sa.Date, nullable=False),
        sa.Column("last_failed_on", sa.Date, nullable=False),
        sa.Column("last_attempt_at", TZ, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("unavailable_since", sa.Date, nullable=True),
        sa.Column("next_attempt_on", sa.Date, nullable=True),
        sa.PrimaryKeyConstraint("symbol", name=op.f("pk_symbol_fetch_failures")),
    )
    op.add_column("portfolio_snapshots", sa.Column("stale_symbols", sa.Text, nullable=True))
    # Stale snapshots are few: the heal pass finds them without reading the rest.
    op.create_index(
        "ix_portfolio_snapshots_stale", "portfolio_snapshots", ["portfolio_id", "snapshot_date"],
        postgresql_where=sa.text("stale_symbols IS NOT NULL"), sqlite_where=sa.text("stale_symbols IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_portfolio_snapshots_stale", "portfolio_snapshots")
    with op.batch_alter_table("portfolio_snapshots") as batch:
        batch.drop_column("stale_symbols")
    op.drop_table("symbol_fetch_failures")
    op.drop_table("price_rejections")
