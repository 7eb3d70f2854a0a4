"""PostgreSQL: a month's snapshot partition can be rewritten compact after ``prune`` thinned it.

``prune`` deletes the thinned rows (about 20 of 21 in a month), but PostgreSQL only marks them
dead: an old month's partition never receives new rows, so its file keeps its size and the
disk space never comes back. ``snapshotter_compact_snapshot_partition(month date)`` rewrites
one month's partition: a new table with the parent's columns and indexes gets the month's
live rows, then replaces the old partition (``DETACH``, ``DROP``, rename, ``ATTACH``), all in
the caller's transaction. The new table carries the range as a CHECK and the foreign key
before it is attached, so attaching scans nothing, and the parent is locked (ACCESS
EXCLUSIVE: readers wait) only from the ``DETACH`` to the commit, not during the copy.
Returns the rows kept, or NULL when the month has no partition.

``SECURITY DEFINER`` (only the table's owner may detach and attach partitions; the job role
gets EXECUTE, README "Database roles"); EXECUTE is revoked from PUBLIC. The caller must hold
the snapshot writers' lock: rows written into that month during the copy would be lost (the
jobs write through that lock; no other writer of snapshots is expected).

SQLite: nothing (``prune`` deletes; ``VACUUM`` gives the space back to the file system).

Frozen: imports no application code.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

T = "portfolio_snapshots"
COMPACT = "snapshotter_compact_snapshot_partition"
LOCK_KEY = 0x736E6170  # the same key as 0008's partition creation: one partition change at a time

COMPACT_SQL = f"""
CREATE FUNCTION {COMPACT}(month date) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  m date := date_trunc('month', month)::date;
  nxt date := (date_trunc('month', month) + interval '1 month')::date;
  part text := '{T}_' || to_char(date_trunc('month', month), 'YYYY_MM');
  tmp text := '{T}_' || to_char(date_trunc('month', month), 'YYYY_MM') || '_compact';
  kept bigint;
BEGIN
  IF to_regclass('public.' || part) IS NULL THEN
    RETURN NULL;
  END IF;
  PERFORM pg_advisory_xact_lock({LOCK_KEY});
  EXECUTE format('CREATE TABLE public.%I (LIKE public.{T} INCLUDING DEFAULTS INCLUDING INDEXES)', tmp);
  EXECUTE format('ALTER TABLE public.%I ADD CONSTRAINT %I CHECK (snapshot_date >= %L AND snapshot_date < %L)',
                 tmp, tmp || '_range', m, nxt);
  EXECUTE format('INSERT INTO public.%I SELECT * FROM public.%I ORDER BY portfolio_id, snapshot_date', tmp, part);
  GET DIAGNOSTICS kept = ROW_COUNT;
  EXECUTE format('ALTER TABLE public.%I ADD FOREIGN KEY (portfolio_id) REFERENCES public.portfolios (id)', tmp);
  EXECUTE format('ALTER TABLE public.{T} DETACH PARTITION public.%I', part);
  EXECUTE format('DROP TABLE public.%I', part);
  EXECUTE format('ALTER TABLE public.%I RENAME TO %I', tmp, part);
  EXECUTE format('ALTER TABLE public.{T} ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)', part, m, nxt);
  EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT %I', part, tmp || '_range');
  EXECUTE format('ANALYZE public.%I', part);
  RETURN kept;
END $$
"""


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _pg():
        op.execute(COMPACT_SQL)
        op.execute(f"REVOKE ALL ON FUNCTION {COMPACT}(date) FROM PUBLIC")


def downgrade() -> None:
    if _pg():
        op.execute(f"DROP FUNCTION {COMPACT}(date)")
