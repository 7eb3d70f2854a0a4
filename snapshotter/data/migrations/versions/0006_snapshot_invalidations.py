"""Snapshots stay true when the past changes: every write that changes history is captured
by triggers, in the writer's own transaction, into ``snapshot_invalidations``.

``snapshot_invalidations`` (id, portfolio_id NULL, symbol NULL, from_date, reason,
created_at): one row says "the snapshots of this portfolio (or of every holder of this
symbol) from ``from_date`` on may be wrong". The next portfolio-refresh, refresh or
recompute consumes them (``snapshotter/data/invalidation_sql.py``).

The rule "which history does a write invalidate" (README, Data layer):

* lots (``positions``): an INSERT of a live lot from its entry date; a DELETE of a live
  lot from its entry date; an UPDATE of symbol, quantity, entry_price, entry_date,
  deleted_at or portfolio_id from the earlier of the old and new entry dates, of only the
  exit date from the earlier of the old and new exit dates (NULL counts as the other);
  an UPDATE moving a lot between portfolios invalidates both. A lot deleted before
  and after the write changes nothing. The engine's market-value UPDATE (last_price,
  market_value, market_value_date) names none of these columns and fires nothing.
* cash: an INSERT or DELETE from its txn_date; an UPDATE of portfolio_id, txn_date or
  amount from the earlier txn_date (both portfolios when it moves).
* portfolios: an UPDATE of deleted_at (deleted or restored) from the earlier of the two
  timestamps' UTC dates.
* closes: an UPDATE whose close changes value, from its price_date (a symbol row);
  an INSERT for a day that already has snapshots. An identical upsert fires nothing.

PostgreSQL: INSERT and DELETE triggers are statement-level with transition tables (one
``INSERT ... SELECT ... GROUP BY`` per statement, so a bulk load writes one row per
portfolio, not per lot); UPDATE triggers are row-level with ``UPDATE OF`` column lists
and ``WHEN (old.x IS DISTINCT FROM new.x ...)`` (PostgreSQL forbids transition tables
with column lists). SQLite: row-level triggers with ``IS NOT``; a lot or cash insert
skips its row when the portfolio already has a pending row from an earlier or equal
day (SQLite serialises writers, so the pending row is consumed with or after this write).

Frozen: imports no application code.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

LOT_COLS = ["portfolio_id", "symbol", "quantity", "entry_price", "entry_date", "exit_date", "deleted_at"]
LOT_VALUE_COLS = ["portfolio_id", "symbol", "quantity", "entry_price", "entry_date", "deleted_at"]
CASH_COLS = ["portfolio_id", "txn_date", "amount"]
INV = "snapshot_invalidations"

PG = [
    # --- lots
    f"""
CREATE FUNCTION snapshotter_inv_lots_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason)
  SELECT portfolio_id, min(entry_date), 'lot inserted' FROM inv_new WHERE deleted_at IS NULL GROUP BY portfolio_id;
  RETURN NULL;
END $$""",
    """CREATE TRIGGER snapshotter_inv_lots_ins AFTER INSERT ON positions REFERENCING NEW TABLE AS inv_new
FOR EACH STATEMENT EXECUTE FUNCTION snapshotter_inv_lots_ins()""",
    f"""
CREATE FUNCTION snapshotter_inv_lots_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason)
  SELECT portfolio_id, min(entry_date), 'lot deleted' FROM inv_old WHERE deleted_at IS NULL GROUP BY portfolio_id;
  RETURN NULL;
END $$""",
    """CREATE TRIGGER snapshotter_inv_lots_del AFTER DELETE ON positions REFERENCING OLD TABLE AS inv_old
FOR EACH STATEMENT EXECUTE FUNCTION snapshotter_inv_lots_del()""",
    f"""
CREATE FUNCTION snapshotter_inv_lots_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF {' OR '.join(f'old.{c} IS DISTINCT FROM new.{c}' for c in LOT_VALUE_COLS)} THEN
    INSERT INTO {INV} (portfolio_id, from_date, reason) VALUES (old.portfolio_id, least(old.entry_date, new.entry_date), 'lot changed');
  ELSE
    INSERT INTO {INV} (portfolio_id, from_date, reason)
    VALUES (old.portfolio_id, least(old.exit_date, new.exit_date), 'lot exit changed');
  END IF;
  IF old.portfolio_id IS DISTINCT FROM new.portfolio_id THEN
    INSERT INTO {INV} (portfolio_id, from_date, reason) VALUES (new.portfolio_id, new.entry_date, 'lot moved in');
  END IF;
  RETURN NULL;
END $$""",
    f"""CREATE TRIGGER snapshotter_inv_lots_upd AFTER UPDATE OF {', '.join(LOT_COLS)} ON positions FOR EACH ROW
WHEN (({' OR '.join(f'old.{c} IS DISTINCT FROM new.{c}' for c in LOT_COLS)})
      AND (old.deleted_at IS NULL OR new.deleted_at IS NULL))
EXECUTE FUNCTION snapshotter_inv_lots_upd()""",
    # --- cash
    f"""
CREATE FUNCTION snapshotter_inv_cash_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason)
  SELECT portfolio_id, min(txn_date), 'cash inserted' FROM inv_new GROUP BY portfolio_id;
  RETURN NULL;
END $$""",
    """CREATE TRIGGER snapshotter_inv_cash_ins AFTER INSERT ON cash_transactions REFERENCING NEW TABLE AS inv_new
FOR EACH STATEMENT EXECUTE FUNCTION snapshotter_inv_cash_ins()""",
    f"""
CREATE FUNCTION snapshotter_inv_cash_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason)
  SELECT portfolio_id, min(txn_date), 'cash deleted' FROM inv_old GROUP BY portfolio_id;
  RETURN NULL;
END $$""",
    """CREATE TRIGGER snapshotter_inv_cash_del AFTER DELETE ON cash_transactions REFERENCING OLD TABLE AS inv_old
FOR EACH STATEMENT EXECUTE FUNCTION snapshotter_inv_cash_del()""",
    f"""
CREATE FUNCTION snapshotter_inv_cash_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason) VALUES (old.portfolio_id, least(old.txn_date, new.txn_date), 'cash changed');
  IF old.portfolio_id IS DISTINCT FROM new.portfolio_id THEN
    INSERT INTO {INV} (portfolio_id, from_date, reason) VALUES (new.portfolio_id, new.txn_date, 'cash moved in');
  END IF;
  RETURN NULL;
END $$""",
    f"""CREATE TRIGGER snapshotter_inv_cash_upd AFTER UPDATE OF {', '.join(CASH_COLS)} ON cash_transactions FOR EACH ROW
WHEN ({' OR '.join(f'old.{c} IS DISTINCT FROM new.{c}' for c in CASH_COLS)})
EXECUTE FUNCTION snapshotter_inv_cash_upd()""",
    # --- portfolios
    f"""
CREATE FUNCTION snapshotter_inv_portfolio_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason)
  VALUES (new.id, (least(old.deleted_at, new.deleted_at) AT TIME ZONE 'UTC')::date,
          CASE WHEN new.deleted_at IS NULL THEN 'portfolio restored' ELSE 'portfolio deleted' END);
  RETURN NULL;
END $$""",
    """CREATE TRIGGER snapshotter_inv_portfolio_upd AFTER UPDATE OF deleted_at ON portfolios FOR EACH ROW
WHEN (old.deleted_at IS DISTINCT FROM new.deleted_at) EXECUTE FUNCTION snapshotter_inv_portfolio_upd()""",
    # --- closes
    f"""
CREATE FUNCTION snapshotter_inv_close_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {INV} (symbol, from_date, reason) VALUES (new.symbol, least(old.price_date, new.price_date), 'close changed');
  IF old.symbol IS DISTINCT FROM new.symbol THEN
    INSERT INTO {INV} (symbol, from_date, reason) VALUES (old.symbol, old.price_date, 'close changed');
  END IF;
  RETURN NULL;
END $$""",
    """CREATE TRIGGER snapshotter_inv_close_upd AFTER UPDATE OF close, symbol, price_date ON symbol_prices_daily FOR EACH ROW
WHEN (old.close IS DISTINCT FROM new.close OR old.symbol IS DISTINCT FROM new.symbol OR old.price_date IS DISTINCT FROM new.price_date)
EXECUTE FUNCTION snapshotter_inv_close_upd()""",
    f"""
CREATE FUNCTION snapshotter_inv_close_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {INV} (symbol, from_date, reason)
  SELECT n.symbol, min(n.price_date), 'close arrived late' FROM inv_new n
  WHERE EXISTS (SELECT 1 FROM portfolio_snapshots s WHERE s.snapshot_date = n.price_date)
  GROUP BY n.symbol;
  RETURN NULL;
END $$""",
    """CREATE TRIGGER snapshotter_inv_close_ins AFTER INSERT ON symbol_prices_daily REFERENCING NEW TABLE AS inv_new
FOR EACH STATEMENT EXECUTE FUNCTION snapshotter_inv_close_ins()""",
]
PG_DROP = [
    "DROP TRIGGER IF EXISTS snapshotter_inv_lots_ins ON positions",
    "DROP TRIGGER IF EXISTS snapshotter_inv_lots_del ON positions",
    "DROP TRIGGER IF EXISTS snapshotter_inv_lots_upd ON positions",
    "DROP TRIGGER IF EXISTS snapshotter_inv_cash_ins ON cash_transactions",
    "DROP TRIGGER IF EXISTS snapshotter_inv_cash_del ON cash_transactions",
    "DROP TRIGGER IF EXISTS snapshotter_inv_cash_upd ON cash_transactions",
    "DROP TRIGGER IF EXISTS snapshotter_inv_portfolio_upd ON portfolios",
    "DROP TRIGGER IF EXISTS snapshotter_inv_close_upd ON symbol_prices_daily",
    "DROP TRIGGER IF EXISTS snapshotter_inv_close_ins ON symbol_prices_daily",
    *(f"DROP FUNCTION IF EXISTS snapshotter_inv_{n}()" for n in
      ["lots_ins", "lots_del", "lots_upd", "cash_ins", "cash_del", "cash_upd", "portfolio_upd", "close_upd", "close_ins"]),
]


def _pending(pid: str, day: str) -> str:
    """SQLite: no row when the portfolio already has a pending row from an earlier or equal day."""
    return (f"NOT EXISTS (SELECT 1 FROM {INV} WHERE portfolio_id = {pid} AND symbol IS NULL AND from_date <= {day})")


SQLITE = [
    f"""CREATE TRIGGER snapshotter_inv_lots_ins AFTER INSERT ON positions FOR EACH ROW WHEN NEW.deleted_at IS NULL
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason)
  SELECT NEW.portfolio_id, NEW.entry_date, 'lot inserted' WHERE {_pending('NEW.portfolio_id', 'NEW.entry_date')};
END""",
    f"""CREATE TRIGGER snapshotter_inv_lots_del AFTER DELETE ON positions FOR EACH ROW WHEN OLD.deleted_at IS NULL
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason) VALUES (OLD.portfolio_id, OLD.entry_date, 'lot deleted');
END""",
    f"""CREATE TRIGGER snapshotter_inv_lots_upd AFTER UPDATE OF {', '.join(LOT_COLS)} ON positions FOR EACH ROW
WHEN ({' OR '.join(f'OLD.{c} IS NOT NEW.{c}' for c in LOT_COLS)}) AND (OLD.deleted_at IS NULL OR NEW.deleted_at IS NULL)
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason)
  SELECT OLD.portfolio_id,
         CASE WHEN {' OR '.join(f'OLD.{c} IS NOT NEW.{c}' for c in LOT_VALUE_COLS)}
              THEN min(OLD.entry_date, NEW.entry_date)
              ELSE min(coalesce(OLD.exit_date, NEW.exit_date), coalesce(NEW.exit_date, OLD.exit_date)) END,
         CASE WHEN {' OR '.join(f'OLD.{c} IS NOT NEW.{c}' for c in LOT_VALUE_COLS)} THEN 'lot changed' ELSE 'lot exit changed' END;
  INSERT INTO {INV} (portfolio_id, from_date, reason)
  SELECT NEW.portfolio_id, NEW.entry_date, 'lot moved in' WHERE OLD.portfolio_id IS NOT NEW.portfolio_id;
END""",
    f"""CREATE TRIGGER snapshotter_inv_cash_ins AFTER INSERT ON cash_transactions FOR EACH ROW
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason)
  SELECT NEW.portfolio_id, NEW.txn_date, 'cash inserted' WHERE {_pending('NEW.portfolio_id', 'NEW.txn_date')};
END""",
    f"""CREATE TRIGGER snapshotter_inv_cash_del AFTER DELETE ON cash_transactions FOR EACH ROW
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason) VALUES (OLD.portfolio_id, OLD.txn_date, 'cash deleted');
END""",
    f"""CREATE TRIGGER snapshotter_inv_cash_upd AFTER UPDATE OF {', '.join(CASH_COLS)} ON cash_transactions FOR EACH ROW
WHEN {' OR '.join(f'OLD.{c} IS NOT NEW.{c}' for c in CASH_COLS)}
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason) VALUES (OLD.portfolio_id, min(OLD.txn_date, NEW.txn_date), 'cash changed');
  INSERT INTO {INV} (portfolio_id, from_date, reason)
  SELECT NEW.portfolio_id, NEW.txn_date, 'cash moved in' WHERE OLD.portfolio_id IS NOT NEW.portfolio_id;
END""",
    f"""CREATE TRIGGER snapshotter_inv_portfolio_upd AFTER UPDATE OF deleted_at ON portfolios FOR EACH ROW
WHEN OLD.deleted_at IS NOT NEW.deleted_at
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason)
  VALUES (NEW.id, date(CASE WHEN OLD.deleted_at IS NULL THEN NEW.deleted_at WHEN NEW.deleted_at IS NULL THEN OLD.deleted_at
                            ELSE min(OLD.deleted_at, NEW.deleted_at) END),
          CASE WHEN NEW.deleted_at IS NULL THEN 'portfolio restored' ELSE 'portfolio deleted' END);
END""",
    f"""CREATE TRIGGER snapshotter_inv_close_upd AFTER UPDATE OF close, symbol, price_date ON symbol_prices_daily FOR EACH ROW
WHEN OLD.close IS NOT NEW.close OR OLD.symbol IS NOT NEW.symbol OR OLD.price_date IS NOT NEW.price_date
BEGIN
  INSERT INTO {INV} (symbol, from_date, reason) VALUES (NEW.symbol, min(OLD.price_date, NEW.price_date), 'close changed');
  INSERT INTO {INV} (symbol, from_date, reason)
  SELECT OLD.symbol, OLD.price_date, 'close changed' WHERE OLD.symbol IS NOT NEW.symbol;
END""",
    f"""CREATE TRIGGER snapshotter_inv_close_ins AFTER INSERT ON symbol_prices_daily FOR EACH ROW
WHEN EXISTS (SELECT 1 FROM portfolio_snapshots WHERE snapshot_date = NEW.price_date)
BEGIN
  INSERT INTO {INV} (symbol, from_date, reason) VALUES (NEW.symbol, NEW.price_date, 'close arrived late');
END""",
]
SQLITE_TRIGGERS = ["lots_ins", "lots_del", "lots_upd", "cash_ins", "cash_del", "cash_upd", "portfolio_upd", "close_upd", "close_ins"]


def upgrade() -> None:
    op.create_table(
        INV,
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("portfolio_id", sa.Uuid, nullable=True),
        sa.Column("symbol", sa.Text, nullable=True),
        sa.Column("from_date", sa.Date, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.current_timestamp()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshot_invalidations")),
    )
    op.create_index(op.f("ix_snapshot_invalidations_portfolio_id_from_date"), INV, ["portfolio_id", "from_date"])
    for stmt in PG if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(stmt)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for stmt in PG_DROP:
            op.execute(stmt)
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS snapshotter_inv_{name}")
    op.drop_index(op.f("ix_snapshot_invalidations_portfolio_id_from_date"), INV)
    op.drop_table(INV)
