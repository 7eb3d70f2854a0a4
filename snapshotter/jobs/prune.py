"""``snapshotter prune``: thin old snapshot history to one snapshot per portfolio per period.

The imperative shell around :mod:`snapshotter.core.retention` (the horizon, the cutoff, the
window check and which snapshot a period keeps) and :mod:`snapshotter.data.prune_sql` (the
SQL). The arguments are checked before the database is touched (exit 64, nothing changed).
Then, under the snapshot writers' lock (so a prune never runs beside a refresh) and in a
``batch_run_tracking`` row (``prune``), portfolios are walked in id order in chunks; each chunk
is one transaction that counts and deletes its thinned snapshots, so a crash loses at most
the chunk in flight and a rerun finishes the job (a pruned chunk has nothing left to thin).
On PostgreSQL the old months' partitions it thinned are then rewritten compact (:func:`_compact`),
since a partition of an old month never reuses the space its deleted rows leave.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from snapshotter.core import gaps, retention, targets
from snapshotter.core.calendar import trading_days_between
from snapshotter.data import dialect, partitions, prune_sql, tracking
from snapshotter.data.locks import run_lock
from snapshotter.errors import ConfigError, ExitCode
from snapshotter.jobs.snapshots import ChunkSizer, EngineSource, _engine
from snapshotter.ops.logs import bind_target, get_logger
from snapshotter.ops.signals import STOP, StopFlag

log = get_logger(__name__)


@dataclass
class PruneOptions:
    keep: retention.Horizon  # --keep-daily: history newer than this stays daily
    policy: retention.Policy = retention.Policy.monthly  # --then: what each older period keeps
    max_backfill_days: int = gaps.DEFAULT_MAX_BACKFILL_DAYS  # the nightly's window, which a prune must stay out of
    chunk_size: int = 20_000  # most portfolios per transaction, as the snapshot engine's
    rows_per_chunk: int = 100_000  # about this many snapshots read per transaction (fewer portfolios with long histories)
    dry_run: bool = False
    wait_for_lock: bool = False


@dataclass
class PruneResult:
    stats: dict
    target: date  # the effective trading date the horizon is counted back from
    exit_code: ExitCode = ExitCode.OK
    run_id: str | None = None

    def summary(self) -> dict:
        return {"run_id": self.run_id, "exit_code": int(self.exit_code), **self.stats}

    @property
    def error(self) -> None:
        return None  # a prune either finishes (exit 0) or raises

    @property
    def alert(self) -> None:
        return None


def prune(engine: EngineSource, opts: PruneOptions, *, now: datetime, stop: StopFlag = STOP, run_id: str | None = None) -> PruneResult:
    """Thin every portfolio's snapshots before ``--keep-daily`` (counted back from the effective
    trading date of ``now``) to what ``--then`` keeps; a dry run only counts."""
    started = time.monotonic()
    target = targets.nightly_target(None, now)
    first_kept = retention.cutoff(target, opts.keep)
    window_start = retention.check_outside_window(first_kept, target, opts.max_backfill_days, opts.keep)
    engine = _engine(engine)
    bind_target(target)
    stats = _new_stats(opts, target, first_kept, window_start)
    if opts.dry_run:  # no lock, no tracking row, nothing deleted
        _thin(engine, stats, opts, first_kept, stop, None)
        return _finished(stats, target, None, started)
    with run_lock(engine, wait=opts.wait_for_lock, stop=stop):
        run = tracking.Run(engine, tracking.PRUNE, target, run_id).start()
        try:
            _thin(engine, stats, opts, first_kept, stop, run)
            _compact(engine, stats, first_kept, stop, run)
        except BaseException as exc:
            run.finish_raised(exc, stats, started)
            raise
        result = _finished(stats, target, run.run_id, started)
        run.finish("completed", stats)
        return result


def _finished(stats: dict, target: date, run_id: str | None, started: float) -> PruneResult:
    stats["duration_s"] = round(time.monotonic() - started, 3)
    log.info("prune.finished", **stats)
    return PruneResult(stats, target, ExitCode.OK, run_id)


def _new_stats(opts: PruneOptions, target: date, first_kept: date, window_start: date) -> dict:
    return {
        "dry_run": opts.dry_run,
        "keep_daily": str(opts.keep),
        "then": opts.policy.value,
        "target_date": target.isoformat(),
        "cutoff": first_kept.isoformat(),
        "max_backfill_days": opts.max_backfill_days,
        "window_start": window_start.isoformat(),
        "snapshots_deleted": 0,  # a dry run: that would be deleted
        "portfolios_pruned": 0,
        "months_kept": 0,  # snapshots left before the cutoff: one per portfolio and month
        "oldest_pruned_date": None,
        "newest_pruned_date": None,
        "portfolios_scanned": 0,
        "chunks": 0,
        "partitions_compacted": 0,  # PostgreSQL: old months' partitions rewritten with their live rows only
        "compacted_mb_before": 0.0,  # their size with indexes before and after
        "compacted_mb_after": 0.0,
    }


def _thin(engine: sa.Engine, stats: dict, opts: PruneOptions, first_kept: date, stop: StopFlag, run) -> None:
    """Walk every portfolio in chunks, each chunk one transaction (counted, then deleted unless a dry run)."""
    with engine.connect() as conn:
        with conn.begin():
            oldest = conn.execute(prune_sql.oldest_snapshot()).scalar()
        if oldest is None or oldest >= first_kept:
            log.info("prune.nothing_before_cutoff", cutoff=first_kept.isoformat())
            return
        days = len(trading_days_between(oldest, first_kept - timedelta(days=1)))
        sizer = ChunkSizer(opts.chunk_size, opts.rows_per_chunk, days)
        after = None
        while True:
            stop.check()
            with conn.begin():
                ids = list(conn.execute(prune_sql.portfolio_ids(after, sizer.size)).scalars())
            if not ids:
                return
            with dialect.begin_chunk(conn):
                delta = _prune_chunk(conn, ids[0], ids[-1], first_kept, opts.policy, opts.dry_run)
                _merge(stats, delta, len(ids))
                if run is not None and delta["deleted"]:  # which months it thinned, committed with the delete
                    tracking.record_stats(conn, run.run_id, stats)
            sizer.observe(len(ids), delta["before_cutoff"])
            log.debug("prune.chunk", first=str(ids[0]), last=str(ids[-1]), deleted=delta["deleted"], total=stats["snapshots_deleted"])
            if run is not None:
                run.heartbeat(dict(stats))
            after = ids[-1]


def _compact(engine: sa.Engine, stats: dict, first_kept: date, stop: StopFlag, run) -> None:
    """PostgreSQL: rewrite compact the partitions of the months wholly before the cutoff that this
    prune thinned, and those the previous prune thinned if it did not complete (it stopped before
    or during this step), so the deleted rows' space goes back to the file system: a partition of
    an old month never reuses it. One month per transaction. SQLite deletes in place (``VACUUM``
    returns the space)."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        with conn.begin():
            months = partitions.old_months(conn, first_kept)
            before = tracking.unfinished_stats(conn, tracking.PRUNE, run.run_id) or {}
        spans = [(x.get("compact_from") or x.get("oldest_pruned_date"), x.get("compact_to") or x.get("newest_pruned_date"))
                 for x in (before, stats)]
        spans = [(lo, hi) for lo, hi in spans if lo and hi]
        if not spans:
            return
        stats["compact_from"], stats["compact_to"] = min(lo for lo, _ in spans), max(hi for _, hi in spans)
        run.heartbeat(dict(stats), force=True)  # a stop during this step leaves the range to the rerun
        for month, size in months:
            if not any(lo[:7] <= month.isoformat()[:7] <= hi[:7] for lo, hi in spans):
                continue
            stop.check()
            try:
                with conn.begin():
                    after = partitions.compact_month(conn, month)
            except sa.exc.ProgrammingError as exc:
                if not partitions.permission_denied(exc):
                    raise
                raise ConfigError(
                    "the snapshots are thinned, but this role may not rewrite the old months' partitions compact: as the "
                    "owner, GRANT EXECUTE ON FUNCTION snapshotter_compact_snapshot_partition(date) TO the job role "
                    "(README Database roles), then prune again"
                ) from None
            stats["partitions_compacted"] += 1
            stats["compacted_mb_before"] = round(stats["compacted_mb_before"] + size / 2**20, 1)
            stats["compacted_mb_after"] = round(stats["compacted_mb_after"] + after / 2**20, 1)
            log.info("prune.compacted", month=month.isoformat()[:7], mb_before=round(size / 2**20, 1), mb_after=round(after / 2**20, 1))
            run.heartbeat(dict(stats))


def _prune_chunk(conn: sa.Connection, lo, hi, first_kept: date, policy: retention.Policy, dry_run: bool) -> dict:
    """In the caller's transaction: count the chunk's thinned snapshots, then delete them (a dry run only counts)."""
    s = conn.execute(prune_sql.chunk_summary(lo, hi, first_kept, policy)).one()
    deleted = s.rows
    if s.rows and not dry_run:
        stmt = prune_sql.delete_thinned(lo, hi, first_kept, policy).execution_options(preserve_rowcount=True)
        deleted = conn.execute(stmt).rowcount
    return {"deleted": deleted, "portfolios": s.portfolios, "oldest": s.oldest, "newest": s.newest,
            "before_cutoff": s.before_cutoff}


def _merge(stats: dict, delta: dict, portfolios: int) -> None:
    stats["snapshots_deleted"] += delta["deleted"]
    stats["portfolios_pruned"] += delta["portfolios"]
    stats["months_kept"] += delta["before_cutoff"] - delta["deleted"]
    stats["portfolios_scanned"] += portfolios
    stats["chunks"] += 1
    for key, pick, day in (("oldest_pruned_date", min, delta["oldest"]), ("newest_pruned_date", max, delta["newest"])):
        if day is not None:
            day = day.isoformat() if isinstance(day, date) else str(day)
            stats[key] = day if stats[key] is None else pick(stats[key], day)
