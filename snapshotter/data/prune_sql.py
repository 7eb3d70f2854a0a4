"""The SQL of ``snapshotter prune``: thin each chunk of portfolios' history before the cutoff, set-based.

Per chunk of portfolio ids (keyset pagination over every portfolio, deleted ones too: their
history is thinned like any other), one transaction: :func:`chunk_summary` counts what goes
and :func:`delete_thinned` deletes it, both over :func:`_ranked`, which reads the chunk's
snapshots up to the end of the cutoff's period once, in key order, with the newest date of
each (portfolio, period) beside every row (a window ``max``). The rule itself (which rows go)
is :func:`snapshotter.core.retention.thinned`.

Only plain ``SELECT`` and a ``DELETE`` through ``portfolio_snapshots`` by its key columns,
so the same statements work on a plain table and on one partitioned by ``snapshot_date``
(PostgreSQL routes the DELETE to the partitions; the ``snapshot_date < cutoff`` bound prunes
the newer ones). A partition-level strategy (dropping or rewriting whole old partitions)
would be a second builder here, chosen by the job.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from snapshotter.core.retention import Policy, period_key, scan_end, thinned
from snapshotter.data.schema import portfolio_snapshots as snaps
from snapshotter.data.schema import portfolios


def portfolio_ids(after, limit: int):
    """The next page of portfolio ids after ``after`` (every portfolio, deleted or not)."""
    q = sa.select(portfolios.c.id).order_by(portfolios.c.id).limit(limit)
    return q if after is None else q.where(portfolios.c.id > after)


def oldest_snapshot():
    """The oldest snapshot date (one probe of the snapshot_date index): sizes the first chunk."""
    return sa.select(sa.func.min(snaps.c.snapshot_date))


def _ranked(lo, hi, first_kept: date, policy: Policy):
    """The chunk's snapshots up to the end of the cutoff's period, each with the newest date of its
    portfolio and period, and whether the rule thins it."""
    s = snaps
    last = sa.func.max(s.c.snapshot_date).over(partition_by=(s.c.portfolio_id, period_key(policy, s.c.snapshot_date)))
    inner = (
        sa.select(s.c.portfolio_id, s.c.snapshot_date, last.label("last_in_period"))
        .where(s.c.portfolio_id >= lo, s.c.portfolio_id <= hi, s.c.snapshot_date < scan_end(policy, first_kept))
        .subquery("ranked")
    )
    return inner, thinned(inner.c.snapshot_date, inner.c.last_in_period, first_kept)


def chunk_summary(lo, hi, first_kept: date, policy: Policy):
    """(thinned rows, portfolios with any, oldest and newest thinned date, rows before the cutoff)."""
    r, goes = _ranked(lo, hi, first_kept, policy)
    return sa.select(
        sa.func.count(sa.case((goes, 1))).label("rows"),
        sa.func.count(sa.distinct(sa.case((goes, r.c.portfolio_id)))).label("portfolios"),
        sa.func.min(sa.case((goes, r.c.snapshot_date))).label("oldest"),
        sa.func.max(sa.case((goes, r.c.snapshot_date))).label("newest"),
        sa.func.count(sa.case((r.c.snapshot_date < first_kept, 1))).label("before_cutoff"),
    )


def delete_thinned(lo, hi, first_kept: date, policy: Policy):
    """DELETE the chunk's thinned snapshots, by (portfolio_id, snapshot_date): one statement."""
    r, goes = _ranked(lo, hi, first_kept, policy)
    gone = sa.select(r.c.portfolio_id, r.c.snapshot_date).where(goes)
    return snaps.delete().where(
        snaps.c.portfolio_id >= lo, snaps.c.portfolio_id <= hi, snaps.c.snapshot_date < first_kept,
        sa.tuple_(snaps.c.portfolio_id, snaps.c.snapshot_date).in_(gone),
    )
