"""Initial schema: the tables of SPEC.md.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from snapshotter.data.dialect import Money

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOW = sa.func.current_timestamp()

# Frozen here rather than imported from application code (0004 drops the function).
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


def upgrade() -> None:
    op.create_table(
        "portfolios",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("owner_id", sa.Text),
        sa.Column("base_currency", sa.CHAR(3), nullable=False, server_default="USD"),
        sa.Column("created_at", TZ, nullable=False, server_default=NOW),
        sa.Column("deleted_at", TZ),
    )
    op.create_table(
        "positions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("portfolio_id", sa.Uuid, sa.ForeignKey("portfolios.id", name="fk_positions_portfolio_id_portfolios"), nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("quantity", Money(28, 10), nullable=False),
        sa.Column("entry_price", Money(20, 6), nullable=False),
        sa.Column("entry_date", sa.Date, nullable=False),
        sa.Column("exit_date", sa.Date),
        sa.Column("exit_price", Money(20, 6)),
        sa.Column("deleted_at", TZ),
        sa.Column("last_price", Money(20, 6)),
        sa.Column("market_value", Money(28, 6)),
        sa.Column("market_value_date", sa.Date),
    )
    op.create_index("ix_positions_portfolio_id_entry_date", "positions", ["portfolio_id", "entry_date"])
    op.create_index("ix_positions_symbol", "positions", ["symbol"])
    op.create_table(
        "cash_transactions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("portfolio_id", sa.Uuid, sa.ForeignKey("portfolios.id", name="fk_cash_transactions_portfolio_id_portfolios"), nullable=False),
        sa.Column("txn_date", sa.Date, nullable=False),
        sa.Column("amount", Money(28, 6), nullable=False),
    )
    op.create_index("ix_cash_transactions_portfolio_id_txn_date", "cash_transactions", ["portfolio_id", "txn_date"])
    op.create_table(
        "watchlist",
        sa.Column("symbol", sa.Text, primary_key=True),
        sa.Column("added_at", TZ, nullable=False, server_default=NOW),
    )
    op.create_table(
        "symbol_prices_daily",
        sa.Column("symbol", sa.Text, primary_key=True),
        sa.Column("price_date", sa.Date, primary_key=True),
        sa.Column("open", Money(20, 6)),
        sa.Column("high", Money(20, 6)),
        sa.Column("low", Money(20, 6)),
        sa.Column("close", Money(20, 6), nullable=False),
        sa.Column("volume", sa.BigInteger),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("fetched_at", TZ, nullable=False),
    )
    op.create_index("ix_symbol_prices_daily_price_date", "symbol_prices_daily", ["price_date"])
    op.create_table(
        "portfolio_snapshots",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("portfolio_id", sa.Uuid, sa.ForeignKey("portfolios.id", name="fk_portfolio_snapshots_portfolio_id_portfolios"), nullable=False),
        sa.Column("snapshot_date", sa.Date, nullable=False),
        sa.Column("holdings_value", Money(28, 6), nullable=False),
        sa.Column("cash_balance", Money(28, 6), nullable=False),
        sa.Column("total_value", Money(28, 6), nullable=False),
        sa.Column("total_cost", Money(28, 6), nullable=False),
        sa.Column("total_pnl", Money(28, 6), nullable=False),
        sa.Column("pnl_percent", Money(28, 6), nullable=False),
        sa.Column("position_count", sa.Integer, nullable=False),
        sa.Column("priced_position_count", sa.Integer, nullable=False),
        sa.Column("is_partial", sa.Boolean, nullable=False),
        sa.Column("missing_symbols", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.UniqueConstraint("portfolio_id", "snapshot_date", name="uq_portfolio_snapshots_portfolio_id_snapshot_date"),
    )
    op.create_index("ix_portfolio_snapshots_snapshot_date", "portfolio_snapshots", ["snapshot_date"])
    op.create_table(
        "batch_run_tracking",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("batch_type", sa.Text, nullable=False),
        sa.Column("target_date", sa.Date),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ),
        sa.Column("heartbeat_at", TZ),
        sa.Column("host", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column("stats", sa.JSON),
        sa.Column("error", sa.Text),
        sa.UniqueConstraint("run_id", name="uq_batch_run_tracking_run_id"),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed', 'aborted', 'interrupted')",
            name="ck_batch_run_tracking_status",
        ),
    )
    op.create_index(
        "ix_batch_run_tracking_batch_type_target_date_status",
        "batch_run_tracking",
        ["batch_type", "target_date", "status"],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_ROUND_HALF_EVEN)


def downgrade() -> None:
    for table in (
        "batch_run_tracking",
        "portfolio_snapshots",
        "symbol_prices_daily",
        "watchlist",
        "cash_transactions",
        "positions",
        "portfolios",
    ):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS snapshotter_round_half_even(numeric, integer)")
