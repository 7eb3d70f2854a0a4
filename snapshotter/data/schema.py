"""The tables of SPEC.md as SQLAlchemy Core metadata, shared by every command.

Additions beyond SPEC.md (documented in README): ``batch_run_tracking.run_id``
(the id sent with monitoring pings) and the indexes the set-based engine needs.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from snapshotter.data.dialect import Money

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

TZ = sa.DateTime(timezone=True)
# BIGINT identity on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

portfolios = sa.Table(
    "portfolios",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("owner_id", sa.Text, nullable=True),
    sa.Column("base_currency", sa.CHAR(3), nullable=False, server_default="USD"),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.current_timestamp()),
    sa.Column("deleted_at", TZ, nullable=True),
)

positions = sa.Table(
    "positions",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("portfolio_id", sa.Uuid, sa.ForeignKey("portfolios.id"), nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("quantity", Money(28, 10), nullable=False),
    sa.Column("entry_price", Money(20, 6), nullable=False),
    sa.Column("entry_date", sa.Date, nullable=False),
    sa.Column("exit_date", sa.Date, nullable=True),
    sa.Column("exit_price", Money(20, 6), nullable=True),
    sa.Column("deleted_at", TZ, nullable=True),
    sa.Column("last_price", Money(20, 6), nullable=True),
    sa.Column("market_value", Money(28, 6), nullable=True),
    sa.Column("market_value_date", sa.Date, nullable=True),
    # Covering on PostgreSQL (migration 0003, which also sets fillfactor 50 for HOT market-value updates).
    sa.Index(None, "portfolio_id", "entry_date", postgresql_include=["exit_date", "deleted_at", "symbol", "quantity", "entry_price"]),
    sa.Index(None, "symbol"),
)

cash_transactions = sa.Table(
    "cash_transactions",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("portfolio_id", sa.Uuid, sa.ForeignKey("portfolios.id"), nullable=False),
    sa.Column("txn_date", sa.Date, nullable=False),
    sa.Column("amount", Money(28, 6), nullable=False),
    sa.Index(None, "portfolio_id", "txn_date", postgresql_include=["amount"]),
)

watchlist = sa.Table(
    "watchlist",
    metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("added_at", TZ, nullable=False, server_default=sa.func.current_timestamp()),
)

symbol_prices_daily = sa.Table(
    "symbol_prices_daily",
    metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("price_date", sa.Date, primary_key=True),
    sa.Column("open", Money(20, 6), nullable=True),
    sa.Column("high", Money(20, 6), nullable=True),
    sa.Column("low", Money(20, 6), nullable=True),
    sa.Column("close", Money(20, 6), nullable=False),
    sa.Column("volume", sa.BigInteger, nullable=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("fetched_at", TZ, nullable=False),
    sa.Index(None, "price_date"),
)

portfolio_snapshots = sa.Table(
    "portfolio_snapshots",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("portfolio_id", sa.Uuid, sa.ForeignKey("portfolios.id"), nullable=False),
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
    sa.Column("missing_symbols", sa.Text, nullable=True),
    # Symbols valued at an older close (--max-price-age): comma-separated, sorted; NULL when none (migration 0005).
    sa.Column("stale_symbols", sa.Text, nullable=True),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
    sa.UniqueConstraint("portfolio_id", "snapshot_date"),
    sa.Index(None, "snapshot_date"),
)
# Partial snapshots are few; this index lets a run find them without a scan (migration 0002).
sa.Index(
    "ix_portfolio_snapshots_partial",
    portfolio_snapshots.c.portfolio_id,
    portfolio_snapshots.c.snapshot_date,
    postgresql_where=portfolio_snapshots.c.is_partial,
    sqlite_where=sa.text("is_partial = 1"),
)
# Stale snapshots (--max-price-age) are few too: the heal pass finds them through this (migration 0005).
sa.Index(
    "ix_portfolio_snapshots_stale",
    portfolio_snapshots.c.portfolio_id,
    portfolio_snapshots.c.snapshot_date,
    postgresql_where=portfolio_snapshots.c.stale_symbols.is_not(None),
    sqlite_where=sa.text("stale_symbols IS NOT NULL"),
)



class random_run_id(FunctionElement):
    """Server default of ``batch_run_tracking.run_id``: 32 lowercase hex digits, like ``uuid4().hex``.

    Rendered as each backend stores it (migration 0004), so autogenerate compares equal.
    """

    name = "random_run_id"
    inherit_cache = True
    type = sa.Text()


@compiles(random_run_id, "postgresql")
def _pg_random_run_id(element, compiler, **kw):
    return "replace((gen_random_uuid())::text, '-'::text, ''::text)"


@compiles(random_run_id, "sqlite")
def _sqlite_random_run_id(element, compiler, **kw):
    return "(lower(hex(randomblob(16))))"


# run_id and started_at have server defaults so that another service can record a batch
# with only the SPEC columns (migration 0004); this application always sets both.
batch_run_tracking = sa.Table(
    "batch_run_tracking",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Text, nullable=False, unique=True, server_default=random_run_id()),
    sa.Column("batch_type", sa.Text, nullable=False),
    sa.Column("target_date", sa.Date, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("started_at", TZ, nullable=False, server_default=sa.func.current_timestamp()),
    sa.Column("finished_at", TZ, nullable=True),
    sa.Column("heartbeat_at", TZ, nullable=True),
    sa.Column("host", sa.Text, nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("stats", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.CheckConstraint(
        "status IN ('running', 'completed', 'failed', 'aborted', 'interrupted')", name="status"
    ),
    sa.Index(None, "batch_type", "target_date", "status"),
)

# Bars the batch rejected, remembered so that the same answer gives the same outcome:
# a rejected day is not "missing" again, and rejecting it again is not a new failure (migration 0005).
price_rejections = sa.Table(
    "price_rejections",
    metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("price_date", sa.Date, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("first_seen_at", TZ, nullable=False),
    sa.Column("last_seen_at", TZ, nullable=False),
    sa.Column("times_seen", sa.Integer, nullable=False, server_default="1"),
)

# Symbols the provider did not know or had no data for, night after night (migration 0005).
# ``unavailable_since`` set: marked unavailable, retried only on ``next_attempt_on``.
symbol_fetch_failures = sa.Table(
    "symbol_fetch_failures",
    metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    sa.Column("first_failed_on", sa.Date, nullable=False),  # nightly target dates
    sa.Column("last_failed_on", sa.Date, nullable=False),
    sa.Column("last_attempt_at", TZ, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("unavailable_since", sa.Date, nullable=True),
    sa.Column("next_attempt_on", sa.Date, nullable=True),
)

# What history a write invalidated, recorded by triggers in the writer's transaction (migration 0006;
# the rule is documented there and in snapshotter/data/invalidation_sql.py). A row names a portfolio
# or a symbol (every portfolio that held it on or after from_date).
snapshot_invalidations = sa.Table(
    "snapshot_invalidations",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("portfolio_id", sa.Uuid, nullable=True),
    sa.Column("symbol", sa.Text, nullable=True),
    sa.Column("from_date", sa.Date, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.current_timestamp()),
    sa.Index(None, "portfolio_id", "from_date"),
)

# What the last run knew about each portfolio, written in the same transaction as its snapshots
# (migration 0010; the rule: snapshotter/data/frontier_sql.py): ``status`` and ``check`` read this
# instead of every lot and snapshot. ``as_of`` NULL: not known (the next run, or status, computes it).
portfolio_frontier = sa.Table(
    "portfolio_frontier",
    metadata,
    sa.Column("portfolio_id", sa.Uuid, sa.ForeignKey("portfolios.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("as_of", sa.Date, nullable=True),
    sa.Column("active", sa.Boolean, nullable=False),
)

# Corporate actions (migration 0007; the valuation rule is "quantity as of the day", README
# Corporate actions). A split: from ex_date on, a lot entered before it holds
# quantity x split_to / split_from shares (10-for-1: from 1, to 10). A ticker change: from
# effective_date on, a lot held in old_symbol takes new_symbol's closes. Writes to both are
# captured into snapshot_invalidations as symbol rows (the triggers of 0007).
symbol_splits = sa.Table(
    "symbol_splits",
    metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("ex_date", sa.Date, primary_key=True),
    sa.Column("split_from", Money(20, 10), nullable=False),
    sa.Column("split_to", Money(20, 10), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("fetched_at", TZ, nullable=False),
    sa.CheckConstraint("CAST(split_from AS REAL) > 0 AND CAST(split_to AS REAL) > 0", name="positive_ratio"),
)

symbol_changes = sa.Table(
    "symbol_changes",
    metadata,
    sa.Column("old_symbol", sa.Text, primary_key=True),
    sa.Column("new_symbol", sa.Text, nullable=False, index=True),
    sa.Column("effective_date", sa.Date, primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("fetched_at", TZ, nullable=False),
    sa.CheckConstraint("old_symbol <> new_symbol", name="new_symbol"),
)

MONEY_SCALE = 6
MONEY_INT_DIGITS = 22  # NUMERIC(28, 6)
