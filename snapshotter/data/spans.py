"""Physical slices of ``positions``, so the nightly market-value update rewrites each page once.

The update rewrites every open lot. Walked in portfolio-id order it visits each heap
page once per lot on it (ids are random, rows are stored in insertion order); walked
in physical slices each page is read and written once, and the update takes half the
time. How a physical address is spelled is a dialect difference (:mod:`.dialect`).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from snapshotter.data import dialect
from snapshotter.data.schema import positions

PG_SPAN_BLOCKS = 10_000  # 80 MB of heap, about 180,000 lots at fillfactor 50
SQLITE_SPAN_ROWS = 200_000


@dataclass(frozen=True)
class Span:
    """Heap blocks [lo, hi) on PostgreSQL, rowids [lo, hi) on SQLite; ``hi`` None: to the end,
    so rows added while the run goes are included."""

    lo: int
    hi: int | None


def span_step(dialect_name: str) -> int:
    return PG_SPAN_BLOCKS if dialect_name == "postgresql" else SQLITE_SPAN_ROWS


def spans(first: int, last: int, step: int) -> list[Span]:
    """Slices of ``step`` covering [first, last]; the last one open-ended. Pure."""
    starts = list(range(first, last + 1, step)) or [first]
    return [Span(lo, starts[i + 1] if i + 1 < len(starts) else None) for i, lo in enumerate(starts)]


def extent(dialect_name: str):
    """(first, last) physical address of ``positions``."""
    return dialect.physical_extent("positions", dialect_name)


def in_span(span: Span, dialect_name: str):
    return dialect.physical_range("positions", span.lo, span.hi, dialect_name)


def portfolios_in_span(span: Span, dialect_name: str):
    """The portfolios with open lots in a span (a failed span is retried portfolio by portfolio)."""
    pos = positions
    return (
        sa.select(pos.c.portfolio_id).distinct()
        .where(in_span(span, dialect_name), pos.c.exit_date.is_(None), pos.c.deleted_at.is_(None))
        .order_by(pos.c.portfolio_id)
    )
