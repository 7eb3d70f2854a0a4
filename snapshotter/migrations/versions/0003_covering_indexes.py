"""Covering indexes and fillfactor for the nightly refresh on PostgreSQL.

A chunk of portfolios reads its lots and cash through (portfolio_id, ...) indexes.
With the columns the valuation needs INCLUDEd, those reads are index-only scans of
contiguous index pages instead of random heap visits. fillfactor 80 on positions
leaves room on each page so the nightly market-value UPDATE (columns not in any
index) can be a HOT update that writes no index entries. SQLite is unchanged.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LOT_COLUMNS = ["exit_date", "deleted_at", "symbol", "quantity", "entry_price"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE positions SET (fillfactor = 80)")
    op.drop_index("ix_positions_portfolio_id_entry_date", "positions")
    op.create_index(
        "ix_positions_portfolio_id_entry_date", "positions", ["portfolio_id", "entry_date"], postgresql_include=LOT_COLUMNS
    )
    op.drop_index("ix_cash_transactions_portfolio_id_txn_date", "cash_transactions")
    op.create_index(
        "ix_cash_transactions_portfolio_id_txn_date", "cash_transactions", ["portfolio_id", "txn_date"], postgresql_include=["amount"]
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE positions RESET (fillfactor)")
    op.drop_index("ix_positions_portfolio_id_entry_date", "positions")
    op.create_index("ix_positions_portfolio_id_entry_date", "positions", ["portfolio_id", "entry_date"])
    op.drop_index("ix_cash_transactions_portfolio_id_txn_date", "cash_transactions")
    op.create_index("ix_cash_transactions_portfolio_id_txn_date", "cash_transactions", ["portfolio_id", "txn_date"])
