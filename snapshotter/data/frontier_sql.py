"""The portfolio frontier: what the last run knew about each portfolio, so that ``status`` and
``check`` read one narrow row per portfolio instead of every lot and every snapshot.

**The rule** (table ``portfolio_frontier``, migration 0010). A row (portfolio_id, as_of, active)
with ``as_of`` set says: in the transaction that wrote it, ``active`` was the SPEC rule
(:func:`snapshotter.core.valuation.portfolio_activity`) on ``as_of``, and an active portfolio
had its snapshot on ``as_of``. It is written by:

* the snapshot engine's chunk (nightly, refresh, backfill, heal), for every live portfolio of
  the chunk, when the run's target is one of the days it values (:func:`record_chunk`); never
  moved back to an earlier day (a ``refresh --date`` of a past day leaves a later row alone);
* the recompute's chunk, which changes history without creating the newest days: its
  portfolios become "not known" (``as_of`` NULL, :func:`forget_recomputed`) until the next run.

A row stays true until the portfolio's lots, cash or deletion change; every such write records a
portfolio row in ``snapshot_invalidations`` (migration 0006) in the writer's transaction. So
for a day N a portfolio is **known** when its row has ``as_of`` = N and no portfolio
invalidation is pending, and **unknown** otherwise: :mod:`snapshotter.ops.status` counts the
known ones from their rows and computes the unknown ones exactly (:func:`unknown_ids`). A live
portfolio without a row and without a pending invalidation never had a lot or cash since the
migration (each would have recorded one): it is inactive, and known. A deleted portfolio's row
has ``as_of`` = :data:`FOREVER`: inactive on every day until it is restored (which records an
invalidation), so years of deleted portfolios never become work for ``status``.

What this trusts: that only snapshotter writes ``portfolio_snapshots`` (a snapshot deleted by
hand is not noticed until the portfolio's next change).
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from snapshotter.core.valuation import portfolio_activity
from snapshotter.data.dialect import date_value
from snapshotter.data.schema import portfolio_frontier as front
from snapshotter.data.schema import portfolios
from snapshotter.data.schema import snapshot_invalidations as inv
from snapshotter.data.temp_tables import chunk as chunk_t

FOREVER = date(9999, 12, 31)  # as_of of a deleted portfolio: inactive whatever the day


def record_chunk(insert, lo, hi, day: date, *, from_chunk: bool):
    """Every portfolio lo..hi: (``day``, active on ``day``), unless its row is for a later day; a
    deleted one in the range: (:data:`FOREVER`, inactive).

    ``from_chunk``: the chunk's ``_snap_chunk`` holds exactly its portfolios active on ``day``
    (the nightly and refresh); otherwise (a backfill of one portfolio, which values inactive
    ones too) the activity is computed here. ``insert``: the dialect's INSERT (ON CONFLICT).
    """
    p = portfolios
    if from_chunk:
        active = sa.exists().where(chunk_t.c.portfolio_id == p.c.id)
        sel = sa.select(p.c.id, _as_of(day), active)
    else:
        act = portfolio_activity(day, lambda col: sa.and_(col >= lo, col <= hi))
        sel = sa.select(p.c.id, _as_of(day), sa.func.coalesce(act.c.active, sa.false())).select_from(
            p.outerjoin(act, act.c.id == p.c.id))
    # a rerun writes nothing it would not change; a past day never replaces a later one
    return _write(insert, sel.where(p.c.id >= lo, p.c.id <= hi), lambda new: sa.or_(
        front.c.as_of.is_(None), front.c.as_of < new.as_of, sa.and_(front.c.as_of == new.as_of, front.c.active != new.active)))


def forget_recomputed(insert, affected_ids):
    """The recompute's portfolios (``affected_ids``: a select of ids) become "not known": the
    recompute rewrites their history but does not create their newest days (the gaps pass does)."""
    p = portfolios
    sel = sa.select(p.c.id, _as_of(None), sa.false()).where(p.c.id.in_(affected_ids))
    return _write(insert, sel, lambda new: front.c.as_of.is_distinct_from(new.as_of))


def _write(insert, sel, replaces):
    """The frontier rows ``sel`` gives (portfolio_id, as_of, active), each written over the stored
    one only where ``replaces(new)`` (``new``: the proposed row) holds."""
    stmt = insert(front).from_select(["portfolio_id", "as_of", "active"], sel)
    new = stmt.excluded
    return stmt.on_conflict_do_update(index_elements=[front.c.portfolio_id], set_={"as_of": new.as_of, "active": new.active},
                                      where=replaces(new))


def _as_of(day: date | None):
    """``day`` for a live portfolio, :data:`FOREVER` for a deleted one."""
    return sa.case((portfolios.c.deleted_at.is_not(None), date_value(sa.literal(FOREVER, sa.Date))),
                   else_=date_value(sa.literal(day, sa.Date)))


def _pending_row():
    """A portfolio row of ``snapshot_invalidations`` (a symbol row names no portfolio)."""
    return inv.c.portfolio_id.is_not(None)


def _not_known_row(day: date):
    """A frontier row that says nothing about ``day``: another day (not :data:`FOREVER`), or none yet."""
    return sa.or_(front.c.as_of.is_(None), front.c.as_of.not_in([day, FOREVER]))


def any_pending():
    """Whether any portfolio invalidation is pending (one index probe)."""
    return sa.select(sa.exists().where(_pending_row()))


def counts(day: date):
    """(known and active on ``day``, rows not known for ``day``). The rows for ``day`` that say
    active are counted in one scan of the frontier, then the pending portfolios among them are
    taken off (a join driven by the pending ids: index probes, nothing per frontier row; a hash
    join of every row with them cost a third more). Pending invalidations make their portfolios
    unknown (:func:`unknown_ids`), counted there."""
    f = front
    on_day_active = sa.and_(f.c.as_of == day, f.c.active == sa.true())
    scan = sa.select(sa.func.count(sa.case((on_day_active, 1))).label("active"),
                     sa.func.count(sa.case((_not_known_row(day), 1))).label("stale")).subquery("scan")
    pend = sa.select(inv.c.portfolio_id).where(_pending_row()).distinct().subquery("pending")
    pending_active = (sa.select(sa.func.count()).select_from(pend.join(f, f.c.portfolio_id == pend.c.portfolio_id))
                      .where(on_day_active).scalar_subquery())
    return sa.select(scan.c.active - pending_active, scan.c.stale)


def unknown_ids(day: date, after, limit: int):
    """The next page (keyset, by id) of portfolios not known for ``day``: a row for another day (not
    :data:`FOREVER`) or not known yet, or a pending portfolio invalidation (a portfolio without a
    row included). :mod:`snapshotter.ops.status` computes these exactly. One scan of the frontier."""
    f = front
    stale = sa.select(f.c.portfolio_id.label("portfolio_id")).where(_not_known_row(day))
    changed = sa.select(inv.c.portfolio_id.label("portfolio_id")).where(_pending_row())
    if after is not None:
        stale, changed = stale.where(f.c.portfolio_id > after), changed.where(inv.c.portfolio_id > after)
    both = sa.union(stale, changed).subquery("unknown")
    return sa.select(both.c.portfolio_id).order_by(both.c.portfolio_id).limit(limit)
