"""Small data-layer helpers shared by the jobs: dialect-aware upsert and timestamps."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def dialect_insert(conn: sa.Connection, table: sa.Table):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[dict],
    key: Iterable[str],
    update: Iterable[str] | None = None,
) -> int:
    """INSERT ... ON CONFLICT (key) DO UPDATE the other columns; returns rows written."""
    if not rows:
        return 0
    key = list(key)
    stmt = dialect_insert(conn, table)
    cols = list(update) if update is not None else [c for c in rows[0] if c not in key]
    if cols:
        stmt = stmt.on_conflict_do_update(index_elements=key, set_={c: stmt.excluded[c] for c in cols})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=key)
    conn.execute(stmt, list(rows))
    return len(rows)
