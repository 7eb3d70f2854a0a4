"""The monthly partitions of ``portfolio_snapshots`` on PostgreSQL (migration 0008).

A run makes sure the months it may write exist before its first chunk: the days of the
run through the next month, so a month's partition exists before the first night that
writes into it. When they all exist (most nights) that is one catalog query; otherwise one
call of the migration's ``snapshotter_ensure_snapshot_partitions`` (``SECURITY DEFINER``:
the job role may not create tables itself). There is no default partition (why: the
migration's docstring), so a write for a month without its partition would fail. SQLite
keeps one plain table: nothing to do.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

import sqlalchemy as sa

AHEAD = timedelta(days=31)  # the next month's partition exists before its first night
_PARTITION = re.compile(r"^portfolio_snapshots_\d{4}_\d{2}$")


def is_partition(table_name: str) -> bool:
    """A partition of ``portfolio_snapshots``: part of that table, not a table of the schema
    (reflection lists each one; autogenerate must not take them for tables to drop)."""
    return bool(_PARTITION.match(table_name))


def next_month(day: date) -> date:
    """The first day of the month after ``day``'s."""
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def month_names(first: date, last: date) -> list[str]:
    """The partition names of the calendar months from ``first``'s to ``last``'s."""
    out, m = [], first.replace(day=1)
    while m <= last:
        out.append(f"portfolio_snapshots_{m.year:04d}_{m.month:02d}")
        m = next_month(m)
    return out


def ensure_snapshot_partitions(conn: sa.Connection, first: date, last: date) -> int:
    """Create the missing monthly partitions for [first, last + a month]; how many were created."""
    if conn.dialect.name != "postgresql":
        return 0
    wanted = month_names(first, last + AHEAD)
    if set(wanted) <= set(months(conn)):
        return 0
    return conn.execute(sa.text("SELECT snapshotter_ensure_snapshot_partitions(:a, :b)"), {"a": first, "b": last + AHEAD}).scalar_one()


def permission_denied(exc: sa.exc.DBAPIError) -> bool:
    """The role may not call the function (an installation upgraded to 0008 whose job role
    was not yet granted EXECUTE, README "Database roles")."""
    return getattr(exc.orig, "sqlstate", None) == "42501"


def months(conn: sa.Connection) -> list[str]:
    """The monthly partitions there are, oldest first (``portfolio_snapshots_YYYY_MM``); [] on SQLite."""
    if conn.dialect.name != "postgresql":
        return []
    return list(conn.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'portfolio_snapshots'::regclass ORDER BY c.relname"
    )).scalars())


def month_start(name: str) -> date:
    """The first day of a partition's month, from its name ``portfolio_snapshots_YYYY_MM``."""
    return date(int(name[-7:-3]), int(name[-2:]), 1)


def old_months(conn: sa.Connection, before: date) -> list[tuple[date, int]]:
    """The monthly partitions wholly before ``before``, oldest first: (first day of the month,
    total bytes with its indexes); [] on SQLite."""
    if conn.dialect.name != "postgresql":
        return []
    rows = conn.execute(sa.text(
        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'portfolio_snapshots'::regclass ORDER BY c.relname"
    )).all()
    out = []
    for name, size in rows:
        start = month_start(name)
        if next_month(start) <= before:
            out.append((start, size))
    return out


def compact_month(conn: sa.Connection, month: date) -> int:
    """Rewrite one month's partition with only its live rows (migration 0009); the bytes it takes after."""
    conn.execute(sa.text("SELECT snapshotter_compact_snapshot_partition(:m)"), {"m": month})
    return conn.execute(sa.text("SELECT pg_total_relation_size(to_regclass(:p))"),
                        {"p": f"portfolio_snapshots_{month.year:04d}_{month.month:02d}"}).scalar_one()
