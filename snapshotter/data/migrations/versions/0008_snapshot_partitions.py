"""PostgreSQL: ``portfolio_snapshots`` becomes a table partitioned by month of ``snapshot_date``.

Why (measured at 200,000 portfolios x 10 lots, README "Years of history"): with one
plain table, each night's row of every portfolio lands in a different leaf page of the
unique (portfolio_id, snapshot_date) index; with a year of history those leaves no
longer fit in memory and each costs a full-page image in the WAL after a checkpoint
(28.7 MB of WAL for that index on an empty history, 1,425 MB with a year), so the
nightly run slowed every month. Partitioned by month, a night writes into the current
month's partition, whose indexes hold at most a month of rows whatever the age of the
installation; old months are never touched again, and retention can drop them whole.

The layout:
- ``portfolio_snapshots`` PARTITION BY RANGE (snapshot_date), one partition per
  calendar month named ``portfolio_snapshots_YYYY_MM``. No DEFAULT partition, on purpose:
  with one, PostgreSQL can no longer read the partitions in date order, and "the last
  snapshot of this portfolio" (the nightly's probe per portfolio) becomes a merge over
  every month's index instead of one probe in the newest month (measured: 0.1 ms against
  0.008 ms a portfolio with 13 months). A write for a month without its partition fails,
  so every job creates the months it writes first (the function below).
- Keys: PostgreSQL requires every unique key of a partitioned table to include the
  partition column, so the primary key is (id, snapshot_date); ``id`` still comes from
  ``portfolio_snapshots_id_seq`` and stays unique. UNIQUE (portfolio_id, snapshot_date),
  the snapshot_date index, the two partial indexes and the foreign key are as before.
- ``snapshotter_ensure_snapshot_partitions(first date, last date)``: creates the
  missing monthly partitions covering [first, last], returns how many it created. It is
  ``SECURITY DEFINER`` (it runs as the owner of the table, who alone may create
  partitions; the job role only gets EXECUTE, README "Database roles"), serialised by a
  transaction advisory lock, and attaches each new (empty) table with ``ATTACH
  PARTITION``, which locks the parent only SHARE UPDATE EXCLUSIVE, so readers and
  writers carry on (``CREATE TABLE ... PARTITION OF`` would lock them out). EXECUTE is
  revoked from PUBLIC.

The conversion copies the rows in this migration's transaction (the table is
unavailable meanwhile: README gives the rate), builds the indexes after the copy, moves
the id sequence to the new table and grants on it what was granted on the old one.

SQLite keeps the plain table (nothing here runs on it).

Frozen: imports no application code.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

T = "portfolio_snapshots"
OLD = "portfolio_snapshots_plain"
SEQ = "portfolio_snapshots_id_seq"
ENSURE = "snapshotter_ensure_snapshot_partitions"
LOCK_KEY = 0x736E6170  # 'snap': serialises partition creation (the job's run lock is another key)

# Every constraint and index of the table at 0007 (the partitioned table gets them back
# after the copy, with the primary key widened to include the partition column).
INDEXES_0007 = [
    ("ix_portfolio_snapshots_snapshot_date", "(snapshot_date)", ""),
    ("ix_portfolio_snapshots_partial", "(portfolio_id, snapshot_date)", "WHERE is_partial"),
    ("ix_portfolio_snapshots_stale", "(portfolio_id, snapshot_date)", "WHERE stale_symbols IS NOT NULL"),
]

ENSURE_SQL = f"""
CREATE FUNCTION {ENSURE}(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  m date;
  stop date;
  part text;
  made integer := 0;
BEGIN
  IF first_day IS NULL OR last_day IS NULL OR last_day < first_day THEN
    RETURN 0;
  END IF;
  m := date_trunc('month', first_day)::date;
  stop := date_trunc('month', last_day)::date;
  IF stop > m + interval '1200 months' THEN
    RAISE EXCEPTION 'snapshot partitions: % to % is more than 100 years', first_day, last_day;
  END IF;
  PERFORM pg_advisory_xact_lock({LOCK_KEY});
  WHILE m <= stop LOOP
    part := '{T}_' || to_char(m, 'YYYY_MM');
    IF to_regclass('public.' || part) IS NULL THEN
      EXECUTE format('CREATE TABLE public.%I (LIKE public.{T} INCLUDING DEFAULTS)', part);
      EXECUTE format('ALTER TABLE public.{T} ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                     part, m, (m + interval '1 month')::date);
      made := made + 1;
    END IF;
    m := (m + interval '1 month')::date;
  END LOOP;
  RETURN made;
END $$
"""

COPY_GRANTS = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN
    SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.rolname) END AS who
    FROM pg_class c, aclexplode(c.relacl) a LEFT JOIN pg_roles g ON g.oid = a.grantee
    WHERE c.oid = '{src}'::regclass AND a.grantee <> c.relowner
  LOOP
    EXECUTE format('GRANT %s ON {dst} TO %s', r.privilege_type, r.who);
  END LOOP;
END $$
"""


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _columns() -> str:
    rows = op.get_bind().exec_driver_sql(
        "SELECT attname FROM pg_attribute WHERE attrelid = %(t)s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        {"t": OLD},
    )
    return ", ".join(f'"{r[0]}"' for r in rows)


def _rebuild(partitioned: bool) -> None:
    """Copy the table into a new one (partitioned or plain) with the same columns, keys and grants."""
    op.execute(f"ALTER SEQUENCE {SEQ} OWNED BY NONE")
    op.execute(f"ALTER TABLE {T} RENAME TO {OLD}")
    for name in ("pk_portfolio_snapshots", "uq_portfolio_snapshots_portfolio_id_snapshot_date",
                 "fk_portfolio_snapshots_portfolio_id_portfolios"):
        op.execute(f"ALTER TABLE {OLD} DROP CONSTRAINT {name}")
    for name, _, _ in INDEXES_0007:
        op.execute(f"DROP INDEX {name}")
    op.execute(f"CREATE TABLE {T} (LIKE {OLD} INCLUDING DEFAULTS)" + (" PARTITION BY RANGE (snapshot_date)" if partitioned else ""))
    if partitioned:
        op.execute(ENSURE_SQL)
        op.execute(f"REVOKE ALL ON FUNCTION {ENSURE}(date, date) FROM PUBLIC")
        # the months of the rows there are, and the current one and the next
        op.execute(f"SELECT {ENSURE}(least(min(snapshot_date), current_date), greatest(max(snapshot_date), current_date + 31)) FROM {OLD}")
    cols = _columns()
    op.execute(f"INSERT INTO {T} ({cols}) SELECT {cols} FROM {OLD}")
    key = "id, snapshot_date" if partitioned else "id"
    op.execute(f"ALTER TABLE {T} ADD CONSTRAINT pk_portfolio_snapshots PRIMARY KEY ({key})")
    op.execute(f"ALTER TABLE {T} ADD CONSTRAINT uq_portfolio_snapshots_portfolio_id_snapshot_date UNIQUE (portfolio_id, snapshot_date)")
    for name, columns, where in INDEXES_0007:
        op.execute(f"CREATE INDEX {name} ON {T} {columns} {where}")
    op.execute(f"ALTER TABLE {T} ADD CONSTRAINT fk_portfolio_snapshots_portfolio_id_portfolios "
               "FOREIGN KEY (portfolio_id) REFERENCES portfolios (id)")
    op.execute(f"ALTER SEQUENCE {SEQ} OWNED BY {T}.id")
    op.execute(COPY_GRANTS.format(src=OLD, dst=T))
    op.execute(f"DROP TABLE {OLD}")
    op.execute(f"ANALYZE {T}")


def upgrade() -> None:
    if _pg():
        _rebuild(partitioned=True)


def downgrade() -> None:
    if _pg():
        op.execute(f"DROP FUNCTION {ENSURE}(date, date)")
        _rebuild(partitioned=False)
