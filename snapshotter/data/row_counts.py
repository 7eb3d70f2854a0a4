"""How many rows a table holds, for ``status``: exact where that is cheap, the planner's estimate
where an exact ``count(*)`` would read the whole table.

An exact count of ``positions`` at a million portfolios (10M lots, a table the nightly rewrites
in place) took 17.8 s on PostgreSQL, and of ``portfolio_snapshots`` it grows with every night of
history: a monitoring command cannot wait for either. On PostgreSQL a table the planner puts at
:data:`EXACT_BELOW` rows or more is reported by its estimate (``EXPLAIN`` of a plain scan: the
statistics scaled to the table's current size, so a table never analyzed is estimated from its
pages, and a partitioned table is the sum of its months), and named as estimated. SQLite counts
exactly (its ``count(*)`` reads the smallest index).
"""

from __future__ import annotations

import sqlalchemy as sa

EXACT_BELOW = 100_000


def count_rows(conn: sa.Connection, table: sa.Table) -> tuple[int, bool]:
    """(rows, estimated): the exact count, or on PostgreSQL the planner's estimate for a big table."""
    if conn.dialect.name == "postgresql":
        plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {conn.dialect.identifier_preparer.quote(table.name)}").scalar()
        estimate = int(plan[0]["Plan"]["Plan Rows"])
        if estimate >= EXACT_BELOW:
            return estimate, True
    return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one(), False
