"""PostgreSQL: a lot or cash insert records no invalidation when the portfolio already has a
pending one that covers it (the rule SQLite's triggers of 0006 already follow), and these two
INSERT triggers become row-level.

Why: an application inserting lots one statement at a time fired 0006's statement-level INSERT
trigger once per lot (a transition table and an ``INSERT ... SELECT ... GROUP BY`` each time) and
wrote one ``snapshot_invalidations`` row per lot: the benchmark's row-by-row load cost 1.6x with
the triggers. A row-level trigger costs a single-row statement almost nothing, and the recompute
only needs each portfolio's earliest pending ``from_date``, so a covered insert writes nothing.

**The rule** (:func:`_record_unless_covered`, one home): a live lot or a cash transaction
inserted records ``(portfolio_id, its date)`` unless ``snapshot_invalidations`` holds a
portfolio row (``symbol IS NULL``) of that portfolio with ``from_date <=`` that date. A
later-dated pending row does not suppress an earlier change. The rest is 0006's rule, unchanged.

**Why it stays correct while a run consumes rows (READ COMMITTED).** A run consumes a chunk's
rows with ``DELETE ... RETURNING`` in the transaction that then recomputes the chunk, each later
statement with a fresh snapshot. The writer relies on a pending row only after locking it
``FOR KEY SHARE`` (a DELETE conflicts with every row lock):

* the writer locks the row first: the run's DELETE waits for the writer's commit (or
  rollback), then deletes it; the run's recompute statements start after that commit, so they
  see the writer's lot, and the row's ``from_date`` (<= the lot's) makes them recompute its day;
* the run deleted the row first (not committed): the writer's lock waits; once the run commits
  the row is gone, the lock finds nothing and the writer inserts its own row, which the next run
  consumes (the committed run could not see the uncommitted lot); if the run rolled back, the
  row is there again and the writer locks it;
* the run committed before the writer looked: the writer finds no row and inserts its own;
* the row was written after the run's high-water id: the run leaves it for the next run.

A writer in REPEATABLE READ or SERIALIZABLE whose row was deleted by a run that committed after
its snapshot gets a serialization error from the lock (and retries), never a silent skip.

The probe runs with ``enable_seqscan = off``: it must be an index probe whatever the cached plan
thinks of the table's size (a plan made while the table was empty scanned it once per row:
quadratic on a bulk load). Frozen: imports no application code.

Revision ID: 0008
Revises: 0006
"""

from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

INV = "snapshot_invalidations"
# (trigger and function name, table, date column, reason, WHEN for 0008's row trigger, WHERE for 0006's statement trigger)
INSERTS = [
    ("snapshotter_inv_lots_ins", "positions", "entry_date", "lot inserted", "WHEN (NEW.deleted_at IS NULL)", "WHERE deleted_at IS NULL"),
    ("snapshotter_inv_cash_ins", "cash_transactions", "txn_date", "cash inserted", "", ""),
]


def _record_unless_covered(date_col: str, reason: str) -> str:
    """The row trigger's body: lock a covering pending row, or record one."""
    return f"""
  PERFORM 1 FROM {INV} i
  WHERE i.portfolio_id = NEW.portfolio_id AND i.symbol IS NULL AND i.from_date <= NEW.{date_col}
  LIMIT 1 FOR KEY SHARE;
  IF NOT FOUND THEN
    INSERT INTO {INV} (portfolio_id, from_date, reason) VALUES (NEW.portfolio_id, NEW.{date_col}, '{reason}');
  END IF;"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite's row triggers of 0006 already skip a covered insert (SQLite serialises writers)
    for name, table, date_col, reason, when, _ in INSERTS:
        op.execute(f"DROP TRIGGER {name} ON {table}")
        op.execute(f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN{_record_unless_covered(date_col, reason)}
  RETURN NULL;
END $$""")
        op.execute(f"CREATE TRIGGER {name} AFTER INSERT ON {table} FOR EACH ROW {when} EXECUTE FUNCTION {name}()")


def downgrade() -> None:
    """0006's statement-level triggers, one row per portfolio and statement."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, date_col, reason, _, where in INSERTS:
        op.execute(f"DROP TRIGGER {name} ON {table}")
        op.execute(f"DROP FUNCTION {name}()")
        op.execute(f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {INV} (portfolio_id, from_date, reason)
  SELECT portfolio_id, min({date_col}), '{reason}' FROM inv_new {where} GROUP BY portfolio_id;
  RETURN NULL;
END $$""")
        op.execute(f"CREATE TRIGGER {name} AFTER INSERT ON {table} REFERENCING NEW TABLE AS inv_new "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
