"""portfolio-refresh, refresh --date and backfill: one engine, three scopes.

The job is the imperative shell around :mod:`snapshotter.core.gaps` (what to do) and
:mod:`snapshotter.data.snapshot_sql` / :mod:`snapshotter.data.market_value_sql` (the
set-based SQL). Portfolios are walked in id
order in chunks (keyset pagination, constant memory); each chunk is one
transaction that values every missing (portfolio, day) pair with one
``INSERT ... SELECT ... GROUP BY ... ON CONFLICT``, heals partial snapshots and
refreshes the open lots' market values. A crash loses at most the chunk in
flight, and a rerun finds exactly what is still missing. A chunk that fails is
split in halves and retried down to single portfolios, so one bad portfolio is
reported while all the others are written.
"""

from __future__ import annotations

import time
import uuid
from functools import partial
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Callable, Union

import sqlalchemy as sa

from snapshotter.clock import utcnow
from snapshotter.core import gaps, targets, valuation
from snapshotter.data import (
    dialect, frontier_sql, invalidation_sql, market_value_sql, partitions, planning_sql, snapshot_sql, spans, steps_sql, temp_tables,
    tracking,
)
from snapshotter.data.locks import run_lock
from snapshotter.errors import BatchNotReady, ConfigError, DatabaseUnavailable, ExitCode, UsageError, exit_code_for_failures
from snapshotter.jobs.workers import Workers
from snapshotter.ops.logs import bind_target, get_logger, redact
from snapshotter.ops.progress import progress_bar
from snapshotter.ops.signals import STOP, StopFlag

log = get_logger(__name__)
MAX_REPORTED_FAILURES = 100
PREVIEW_ROWS = 50


@dataclass
class Options:
    chunk_size: int = 20_000  # most portfolios per transaction (a nightly chunk takes about a second)
    pairs_per_chunk: int = 100_000  # about this many snapshots valued per transaction
    max_backfill_days: int = gaps.DEFAULT_MAX_BACKFILL_DAYS
    dry_run: bool = False
    wait_for_lock: bool = False
    wait_for_batch: bool = True
    wait_timeout_s: float = 3600.0
    poll_interval_s: float = 300.0
    on_timeout: str = "abort"  # symbol batch not completed by the deadline: "abort" (exit 75) or "proceed" (value the cache, exit 1)
    alert_failure_ratio: float = 0.10
    progress: bool | None = None
    workers: int = 2  # connections working on chunks at once (PostgreSQL; SQLite uses 1)
    explain: str | None = None  # "sql", "plan" or "analyze": show the first chunk's statements, keep nothing
    max_price_age: int = 0  # trading days an older close may value a lot without one (0: the day's own close only)
    max_runtime_s: float = 2 * 3600.0  # --max-runtime default: up to --wait-timeout waiting, then the snapshots


@dataclass
class Result:
    stats: dict
    target: date  # resolved once by the entry point; the tracking row and stats carry the same day
    exit_code: ExitCode = ExitCode.OK
    run_id: str | None = None
    preview: list[dict] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    explained: list[dict] = field(default_factory=list)  # --explain: each step's SQL (and plan)

    def summary(self) -> dict:
        return {"run_id": self.run_id, "exit_code": int(self.exit_code), **self.stats}

    @property
    def error(self) -> str | None:
        """The one line a non-zero exit prints."""
        if not self.exit_code:
            return None
        if self.stats.get("symbol_batch_completed") is False and not self.stats["portfolios_failed"]:
            return self.alerts[0]
        return f"{self.stats['portfolios_failed']} of {self.stats['portfolios_active']} portfolios failed"

    @property
    def alert(self) -> str | None:
        """The alert line: exit 1 alerts only over --alert-failure-ratio."""
        return "; ".join(self.alerts) if self.alerts else None


# --- entry points --------------------------------------------------------------
# Each resolves its target once (snapshotter.core.targets: bad dates exit 64 before the
# database is touched), then runs the one engine. ``engine`` may be a zero-argument
# callable (the CLI's lazy connect) so that argument errors never need a database.

EngineSource = Union[sa.Engine, Callable[[], sa.Engine]]


def _engine(source: EngineSource) -> sa.Engine:
    return source if isinstance(source, sa.Engine) else source()


def portfolio_refresh(
    engine: EngineSource, day: date | None, opts: Options | None = None, *, now: datetime, stop: StopFlag = STOP,
    run_id: str | None = None,
) -> Result:
    """Nightly: wait for the symbol batch, then fill every portfolio's gaps up to the target
    (``day``, else the effective trading date of ``now``)."""
    opts = opts or Options()
    target = targets.nightly_target(day, now)

    def plan_fn(conn):
        start, end = gaps.window(target, opts.max_backfill_days)
        priced = set(conn.execute(planning_sql.priced_days_between(start, end)).scalars())
        bare = set(conn.execute(planning_sql.days_without_snapshots(start, end)).scalars())
        return gaps.plan_gaps(target, opts.max_backfill_days, priced, bare)

    return _run(_engine(engine), tracking.PORTFOLIO_REFRESH, target, plan_fn, opts, stop, now, portfolio_id=None,
                require_active=True, wait=opts.wait_for_batch, run_id=run_id)


def refresh_date(
    engine: EngineSource, day: date, force: bool = False, opts: Options | None = None, *, now: datetime, stop: StopFlag = STOP,
    run_id: str | None = None,
) -> Result:
    """Redo one trading day for every active portfolio; --force recomputes existing snapshots."""
    opts = opts or Options()
    target = targets.trading_day(day, now)

    def plan_fn(conn):
        priced = set(conn.execute(planning_sql.priced_days_between(target, target)).scalars())
        return gaps.plan_dates(target, [target], priced, force)

    return _run(_engine(engine), tracking.PORTFOLIO_REFRESH, target, plan_fn, opts, stop, now, portfolio_id=None,
                require_active=True, wait=False, mode_label="refresh", run_id=run_id)


def backfill(
    engine: EngineSource,
    portfolio_id: str,
    date_from: date | None = None,
    date_to: date | None = None,
    force: bool = False,
    opts: Options | None = None,
    *,
    now: datetime,
    stop: StopFlag = STOP,
    run_id: str | None = None,
) -> Result:
    """One portfolio over a range of trading days, from cached closes only; the target is
    the range's last trading day."""
    opts = opts or Options()
    pid = _parse_portfolio_id(portfolio_id)
    rng = targets.backfill_range(date_from, date_to, now, opts.max_backfill_days)
    engine = _engine(engine)
    with engine.connect() as conn:
        row = conn.execute(planning_sql.portfolio_state(pid)).first()
    if row is None:
        raise UsageError(f"unknown portfolio {portfolio_id}")
    if row.deleted_at is not None:
        raise UsageError(f"portfolio {portfolio_id} is deleted")

    def plan_fn(conn):
        priced = set(conn.execute(planning_sql.priced_days_between(rng.first, rng.last)).scalars())
        return gaps.plan_dates(rng.target, rng.days, priced, force)

    return _run(engine, tracking.PORTFOLIO_BACKFILL, rng.target, plan_fn, opts, stop, now, portfolio_id=pid,
                require_active=False, wait=False, mode_label="backfill", run_id=run_id)


def _parse_portfolio_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise UsageError(f"unknown portfolio {value!r}: not a UUID") from None


# --- the run -------------------------------------------------------------------


def _run(engine, batch_type, target, plan_fn, opts: Options, stop: StopFlag, now: datetime, *, portfolio_id, require_active, wait, mode_label=None, run_id=None) -> Result:
    started = time.monotonic()
    if not 0 <= opts.max_price_age <= valuation.MAX_PRICE_AGE:
        raise UsageError(f"max price age must be 0..{valuation.MAX_PRICE_AGE} trading days, got {opts.max_price_age}")
    bind_target(target)
    if opts.dry_run or opts.explain:  # no lock, no tracking row, nothing kept
        with engine.connect() as conn:
            plan = plan_fn(conn)
            conn.rollback()
        stats = _new_stats(plan, mode_label, opts)
        result = Result(stats, target, ExitCode.OK, None)
        if opts.explain:
            result.explained = _explain(engine, plan, opts, portfolio_id, require_active, now)
        else:
            result.preview = _execute(engine, plan, stats, opts, stop, None, portfolio_id, require_active, now)
        stats["duration_s"] = round(time.monotonic() - started, 3)
        return result

    with run_lock(engine, wait=opts.wait_for_lock, stop=stop):
        run = tracking.Run(engine, batch_type, target, run_id).start()
        stats: dict = {"mode": mode_label or "gaps", "target_date": target.isoformat()}
        late = None  # the batch was not ready and --on-timeout proceed valued the cache anyway
        try:
            if wait and not _wait_for_symbol_batch(engine, target, opts, stop, run):
                if opts.on_timeout != "proceed":
                    msg = (
                        f"symbol batch for {target} not completed within {opts.wait_timeout_s:.0f}s; "
                        "portfolio refresh aborted, nothing written; the next run backfills the day"
                    )
                    stats["duration_s"] = round(time.monotonic() - started, 3)
                    run.finish("aborted", stats, msg)
                    raise BatchNotReady(msg)
                late = (
                    f"symbol batch for {target} not completed within {opts.wait_timeout_s:.0f}s; valued from the cache "
                    "(--on-timeout proceed): lots without a close are partial and heal when it arrives"
                )
                log.warning("refresh.proceeding_without_symbol_batch", target_date=target.isoformat())
            with engine.connect() as conn:
                plan = plan_fn(conn)
                conn.rollback()
            stats = _new_stats(plan, mode_label, opts)
            stats["symbol_batch_completed"] = late is None
            if plan.unpriced:
                log.warning("refresh.days_without_prices", days=[d.isoformat() for d in plan.unpriced], count=len(plan.unpriced))
            if portfolio_id is None:  # portfolio-refresh and refresh first make the past true again
                _apply_invalidations(engine, target, stats, opts, stop, run, now)
            _execute(engine, plan, stats, opts, stop, run, portfolio_id, require_active, now)
        except BatchNotReady:
            raise
        except BaseException as exc:
            run.finish_raised(exc, stats, started)
            raise
        stats["duration_s"] = round(time.monotonic() - started, 3)
        failed = stats["portfolios_failed"]
        result = Result(stats, target, exit_code_for_failures(failed + stats["market_value_failures"] + (late is not None)), run.run_id)
        if late:
            result.alerts.append(late)
        if failed:
            considered = stats["portfolios_active"] or 1
            if failed / considered > opts.alert_failure_ratio:
                result.alerts.append(
                    f"portfolio refresh for {target}: {failed} of {stats['portfolios_active']} portfolios failed "
                    f"({failed / considered:.0%}, threshold {opts.alert_failure_ratio:.0%})"
                )
        run.finish("failed" if failed or stats["market_value_failures"] else "completed", stats, late)
        log.info("refresh.finished", **{k: v for k, v in stats.items() if k != "failed_portfolios"})
        return result


def _new_stats(plan: gaps.Plan, mode_label, opts: Options) -> dict:
    return {
        "mode": mode_label or plan.mode,
        "target_date": plan.target.isoformat(),
        "force": plan.mode == "force",
        "max_price_age": opts.max_price_age,
        "candidate_days": len(plan.days),
        "days_without_prices": [d.isoformat() for d in plan.unpriced],
        "portfolios_active": 0,
        "portfolios_processed": 0,
        "portfolios_skipped": 0,
        "portfolios_failed": 0,
        "failed_portfolios": [],
        "snapshots_created": 0,
        "snapshots_recomputed": 0,
        "snapshots_stale": 0,
        "days_backfilled": 0,
        "positions_valued": 0,
        "market_value_failures": 0,
        "chunks": 0,
        **_invalidation_stats(),
        "snapshot_phase_s": 0.0,
        "market_value_phase_s": 0.0,
    }


def _wait_for_symbol_batch(engine, target: date, opts: Options, stop: StopFlag, run) -> bool:
    """Poll batch_run_tracking until a completed symbol_batch for ``target`` or the deadline."""
    deadline = utcnow() + timedelta(seconds=opts.wait_timeout_s)
    polls = 0
    while True:
        with engine.connect() as conn:
            if tracking.batch_completed(conn, tracking.SYMBOL_BATCH, target):
                log.info("refresh.symbol_batch_ready", target_date=target.isoformat(), polls=polls)
                return True
        remaining = (deadline - utcnow()).total_seconds()
        if remaining <= 0:
            log.error("refresh.symbol_batch_timeout", target_date=target.isoformat(), waited_s=opts.wait_timeout_s)
            return False
        polls += 1
        log.info("refresh.waiting_for_symbol_batch", target_date=target.isoformat(), remaining_s=round(remaining))
        run.heartbeat(force=True)
        run.keep_alive(stop.sleep)(min(opts.poll_interval_s, remaining))


class ChunkSizer:
    """Portfolios per chunk, adapted so each transaction values about ``pairs_budget`` snapshots.

    A nightly run needs about one day per portfolio, so chunks grow to ``max_size``;
    a backfill needs hundreds, so chunks shrink and the sort and hash of one
    transaction stay in memory. The first chunk assumes every candidate day is needed.
    """

    def __init__(self, max_size: int, pairs_budget: int, candidate_days: int):
        self.max_size, self.budget = max_size, pairs_budget
        self.size = self._fit(max(1, candidate_days))

    def _fit(self, pairs_per_portfolio: float) -> int:
        return max(1, min(self.max_size, int(self.budget / max(pairs_per_portfolio, 1.0))))

    def observe(self, portfolios_in_chunk: int, pairs: int) -> None:
        if portfolios_in_chunk:
            self.size = self._fit(pairs / portfolios_in_chunk)


def _iter_chunks(conn: sa.Connection, portfolio_id, sizer: ChunkSizer):
    """Keyset pagination over live portfolio ids: constant memory at any N."""
    if portfolio_id is not None:
        yield [portfolio_id]
        return
    after = None
    while True:
        with conn.begin():
            ids = list(conn.execute(planning_sql.live_portfolio_ids(after, sizer.size)).scalars())
        if not ids:
            return
        yield ids
        after = ids[-1]


def _execute(engine, plan: gaps.Plan, stats: dict, opts: Options, stop: StopFlag, run, portfolio_id, require_active, now: datetime,
             snapshots: bool = True) -> list[dict]:
    """Two passes over the portfolios, chunk by chunk: all snapshots first, then market values.

    Snapshots first because the market-value update rewrites lots all over the
    positions heap: done in the same pass, it would clear the visibility map under
    every later chunk and turn their index-only lot reads into random heap reads.
    Chunks run on ``opts.workers`` connections at once on PostgreSQL (one on
    SQLite, which has a single writer, and for dry runs and single portfolios).
    """
    preview: list[dict] = []
    backfilled: set[date] = set()
    parallel = engine.dialect.name == "postgresql" and not opts.dry_run and portfolio_id is None
    n = opts.workers if parallel else 1
    steps = _load_steps(engine)
    actions = bool(steps)
    prepare = partial(_prepare_connection, plan=plan, max_price_age=opts.max_price_age, steps=steps)
    with engine.connect() as conn, Workers(engine, n, prepare, _drop_temp_tables) as pool:
        if snapshots and plan.days and not opts.dry_run:  # a dry run writes no snapshot
            _ensure_partitions(conn, min(plan.days), max(*plan.days, plan.target))
        total = None
        if portfolio_id is None:
            with conn.begin():
                total = conn.execute(planning_sql.live_portfolio_count()).scalar_one()

        def merged(bar, sizer):
            def merge(unit, delta):
                _merge(stats, delta, backfilled)
                if sizer is not None:
                    sizer.observe(len(unit), delta["pairs"])
                    stats["chunks"] += 1
                    stats["days_backfilled"] = len(backfilled)
                    log.debug("refresh.chunk", first=str(unit[0]), last=str(unit[-1]), created=stats["snapshots_created"])
                bar.advance(len(unit) if isinstance(unit, list) else 1)
                if run is not None:
                    run.heartbeat(dict(stats))
            return merge

        snapshot = partial(_snapshot_chunk, plan=plan, opts=opts, require_active=require_active, preview=preview, now=now,
                           actions=actions)
        started = time.perf_counter()
        with progress_bar("snapshots", total, opts.progress) as bar:
            sizer = ChunkSizer(opts.chunk_size, opts.pairs_per_chunk, len(plan.days))
            task = partial(_with_split, work=snapshot, counter="portfolios_failed", what="")
            try:
                if snapshots:
                    _run_pass(pool, _iter_chunks(conn, portfolio_id, sizer), task, merged(bar, sizer), stop)
            finally:
                stats["snapshot_phase_s"] = round(time.perf_counter() - started, 3)
        if not opts.dry_run:
            started = time.perf_counter()
            if portfolio_id is None:  # everybody's lots: in physical slices of the table
                units = _spans(conn)
                task = partial(_market_value_span, actions=actions)
            else:
                units = [[portfolio_id]]
                task = partial(_with_split, work=partial(_market_value_chunk, actions=actions), counter="market_value_failures",
                               what="market values: ")
            with progress_bar("market values", len(units), opts.progress) as bar:
                try:
                    _run_pass(pool, iter(units), task, merged(bar, None), stop)
                finally:
                    stats["market_value_phase_s"] = round(time.perf_counter() - started, 3)
    stats["portfolios_skipped"] = stats["portfolios_active"] - stats["portfolios_processed"] - stats["portfolios_failed"]
    return preview


def _ensure_partitions(conn: sa.Connection, first: date, last: date) -> None:
    """The monthly partitions of the days a run may write (:mod:`snapshotter.data.partitions`),
    before its first write; also before the writes that a recompute's dry run and ``--explain
    analyze`` run and roll back (a month without its partition would fail them; the empty
    partitions they leave hold no rows).
    A role that may not create a missing one stops the run with the fix."""
    try:
        with conn.begin():
            partitions.ensure_snapshot_partitions(conn, first, last)
    except sa.exc.ProgrammingError as exc:
        if not partitions.permission_denied(exc):
            raise
        raise ConfigError(
            f"this role may not create the monthly partitions of portfolio_snapshots for {first} to {last}: as the owner, "
            "GRANT EXECUTE ON FUNCTION snapshotter_ensure_snapshot_partitions(date, date) TO the job role "
            "(README Database roles); the run stopped before writing those days"
        ) from None


def _run_pass(pool: Workers, chunks, task, merge, stop: StopFlag) -> None:
    """Feed chunks to the workers, merging results as they finish.

    A stop request or an error stops the feeding; the chunks in flight still
    finish (each commits alone) and are counted before the exception goes on.
    """
    try:
        for ids in chunks:
            stop.check()
            pool.submit(task, ids)
            while pool.in_flight >= pool.n:
                merge(*pool.next_result())
    except BaseException:
        try:
            for done in pool.drain():
                merge(*done)
        except BaseException:  # noqa: BLE001 - the first error is the one to report
            pass
        raise
    for done in pool.drain():
        merge(*done)


def _load_steps(engine) -> list:
    """The run's corporate-action steps (read once per run, the same for every worker)."""
    with engine.connect() as conn, conn.begin():
        return steps_sql.load_steps(conn)


def _prepare_connection(conn: sa.Connection, plan: gaps.Plan, max_price_age: int = 0, execute=None, steps=(),
                        market_values: bool = True) -> None:
    """The run's temporary tables on one connection: candidate days (with the first day whose
    close may value a lot on each), the older closes within --max-price-age, the corporate-action
    steps and their factors on the candidate days, latest closes (for the market-value pass
    only: a recompute connection has none)."""
    execute = execute or (lambda stmt, step=None: conn.execute(stmt))
    with conn.begin():
        temp_tables.metadata.drop_all(conn, checkfirst=True)
        temp_tables.metadata.create_all(conn)
        steps_sql.fill_steps(conn, list(steps))
        dialect.analyze(conn, temp_tables.steps)
        if plan.days:
            starts = valuation.price_window_starts(plan.days, max_price_age)
            conn.execute(temp_tables.days.insert(), [{"d": d, "hole": d in plan.holes, "stale_from": starts[d]} for d in plan.days])
            if max_price_age:
                fill = snapshot_sql.fill_stale_closes(starts[plan.days[0]], plan.days[-1])
                execute(fill, f"older closes within --max-price-age {max_price_age} (once per connection)")
                dialect.analyze(conn, temp_tables.stale_closes)
            if steps:
                for stmt in steps_sql.fill_day_closes():
                    execute(stmt, "the candidate days' closes by held symbol, with split factors and pricing symbols (once per connection)")
                dialect.analyze(conn, temp_tables.day_closes)
        if market_values:
            for stmt in market_value_sql.fill_latest_closes(bool(steps)):
                conn.execute(stmt)
            dialect.analyze(conn, temp_tables.latest_close)
        dialect.analyze(conn, temp_tables.days)


def _drop_temp_tables(conn: sa.Connection) -> None:
    if conn.invalidated:
        return
    with conn.begin():
        temp_tables.metadata.drop_all(conn, checkfirst=True)


_INV_COUNTERS = (
    "portfolios_invalidated", "snapshots_recomputed_by_invalidation", "snapshots_unchanged_by_invalidation",
    "snapshots_created_by_invalidation", "snapshots_deleted_by_invalidation",
)
_COUNTERS = (
    "portfolios_active", "portfolios_processed", "portfolios_failed", "market_value_failures",
    "snapshots_created", "snapshots_recomputed", "snapshots_stale", "positions_valued", *_INV_COUNTERS,
)


def _invalidation_stats() -> dict:
    return {
        "invalidations_pending": 0, "invalidations_oldest_from": None, "invalidations_before_window": 0,
        **dict.fromkeys(_INV_COUNTERS, 0), "invalidation_phase_s": 0.0,
    }


def _delta() -> dict:
    """What one chunk adds to the run's stats (merged by the caller's thread only)."""
    d: dict = dict.fromkeys(_COUNTERS, 0)
    d.update(pairs=0, failed_portfolios=[], days=set())
    return d


def _merge(stats: dict, delta: dict, backfilled: set) -> None:
    for k in _COUNTERS:
        stats[k] += delta[k]
    listed = {f["portfolio_id"] for f in stats["failed_portfolios"]}
    for f in delta["failed_portfolios"]:  # a portfolio whose snapshots failed is listed once, with that error
        if f["portfolio_id"] not in listed and len(stats["failed_portfolios"]) < MAX_REPORTED_FAILURES:
            stats["failed_portfolios"].append(f)
    backfilled |= delta["days"]


def _with_split(conn: sa.Connection, ids, *, work, counter: str, what: str, delta: dict | None = None) -> dict:
    """Run ``work(conn, lo, hi, delta)`` as one transaction; on a database error split the chunk and retry.

    Down at a single portfolio the error is recorded and that portfolio skipped,
    so one bad portfolio cannot sink its neighbours.
    """
    delta = _delta() if delta is None else delta
    try:
        work(conn, ids[0], ids[-1], delta)
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable(f"database connection lost: {redact(str(exc.orig).splitlines()[0])}") from None
        if len(ids) == 1:
            error = what + redact(str(getattr(exc, "orig", exc)).strip().splitlines()[0])
            delta[counter] += 1
            if counter == "portfolios_failed":
                delta["portfolios_active"] += 1
            if len(delta["failed_portfolios"]) < MAX_REPORTED_FAILURES:
                delta["failed_portfolios"].append({"portfolio_id": str(ids[0]), "error": error})
            log.error("refresh.portfolio_failed", portfolio_id=str(ids[0]), error=error)
            return delta
        log.warning("refresh.chunk_failed_splitting", size=len(ids), error=what + redact(str(exc.orig).splitlines()[0]))
        for half in gaps.bisect(ids):
            _with_split(conn, half, work=work, counter=counter, what=what, delta=delta)
    return delta


def _spans(conn: sa.Connection) -> list[spans.Span]:
    name = conn.dialect.name
    with conn.begin():
        first, last = conn.execute(spans.extent(name)).one()
    return spans.spans(int(first), int(last), spans.span_step(name))


def _market_value_chunk(conn: sa.Connection, lo, hi, delta: dict, span: spans.Span | None = None, actions: bool = False) -> None:
    """One transaction: the open lots of portfolios lo..hi (within ``span``) get the latest cached close."""
    scope = market_value_sql.portfolio_range(lo, hi)
    if span is not None:
        scope = sa.and_(scope, spans.in_span(span, conn.dialect.name))
    with dialect.begin_chunk(conn):
        valued = conn.execute(market_value_sql.update_market_values(scope, actions).execution_options(preserve_rowcount=True)).rowcount
    delta["positions_valued"] += valued


def _market_value_span(conn: sa.Connection, span: spans.Span, actions: bool = False) -> dict:
    """One transaction for a slice of the table; if it fails, its portfolios one by one (split in halves)."""
    delta = _delta()
    try:
        with dialect.begin_chunk(conn):
            stmt = market_value_sql.update_market_values(spans.in_span(span, conn.dialect.name), actions)
            delta["positions_valued"] += conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount
        return delta
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable(f"database connection lost: {redact(str(exc.orig).splitlines()[0])}") from None
        log.warning("refresh.span_failed_splitting", span=[span.lo, span.hi], error=redact(str(exc.orig).splitlines()[0]))
    with conn.begin():
        ids = list(conn.execute(spans.portfolios_in_span(span, conn.dialect.name)).scalars())
    if ids:
        work = partial(_market_value_chunk, span=span, actions=actions)
        _with_split(conn, ids, work=work, counter="market_value_failures", what="market values: ", delta=delta)
    return delta


def _snapshot_chunk(conn: sa.Connection, lo, hi, delta: dict, *, plan: gaps.Plan, opts: Options, require_active: bool, preview: list,
                    now: datetime, execute=None, actions: bool = False) -> None:
    """One transaction: plan the chunk's pairs and value them (a dry run or an explain rolls it back).

    ``execute(stmt, step)`` runs each statement; ``step`` names the ones ``--explain`` shows.
    """
    execute = execute or (lambda stmt, step=None: conn.execute(stmt.execution_options(preserve_rowcount=True)))
    force = plan.mode == "force"
    first_day = plan.days[0] if plan.days else plan.target
    ch = snapshot_sql.Chunk(lo, hi, first_day, plan.days[-1] if plan.days else plan.target, plan.target, opts.max_price_age, actions)
    stale_ok = bool(opts.max_price_age)
    insert = lambda table: dialect.dialect_insert(conn, table)  # noqa: E731
    trans = dialect.begin_chunk(conn)
    try:
        active = execute(snapshot_sql.fill_chunk(ch, require_active=require_active, ignore_existing=force), "the chunk's portfolios").rowcount
        if plan.days:
            execute(snapshot_sql.fill_pairs_after_last(), "days after each portfolio's last snapshot")
            if plan.holes and not force:
                execute(snapshot_sql.fill_pairs_holes(), "hole days a portfolio still lacks")
            if not force:
                execute(snapshot_sql.fill_pairs_heal(ch), "partial snapshots to heal")
                if stale_ok:
                    execute(snapshot_sql.fill_pairs_heal_stale(ch), "stale snapshots to heal")
        dialect.analyze(conn, temp_tables.pairs)
        counts = conn.execute(snapshot_sql.pair_counts()).one()
        days = set(conn.execute(snapshot_sql.backfilled_days(plan.target)).scalars())
        if opts.dry_run:
            room = PREVIEW_ROWS - len(preview)
            if room > 0:
                rows = conn.execute(snapshot_sql.valuation_select(ch, False, now).limit(room)).all()
                preview.extend(dict(zip(snapshot_sql.SNAPSHOT_COLUMNS[:-2], r[:-2])) for r in rows)
            created, healed = counts.new_pairs, counts.heal_pairs
            stale = 0
            if stale_ok:
                stale = conn.execute(snapshot_sql.stale_valued(ch)).scalar_one() if counts.new_pairs else 0
                stale += conn.execute(snapshot_sql.stale_heals(ch)).scalar_one() if counts.heal_pairs else 0
            trans.rollback()
        else:
            existing = conn.execute(snapshot_sql.existing_pairs()).scalar_one() if force else 0
            dialect.prefer_hash_joins(conn)
            if ch.actions:
                dialect.without_jit(conn)
            new = snapshot_sql.insert_snapshots(insert, ch, heal=False, force=force, now=now)
            written = execute(new, "value the new snapshots").rowcount if counts.new_pairs else 0
            created, recomputed_forced = written - existing, existing
            stale = 0
            if stale_ok:
                stale += conn.execute(snapshot_sql.stale_written()).scalar_one() if counts.new_pairs else 0
                stale += conn.execute(snapshot_sql.stale_heals(ch)).scalar_one() if counts.heal_pairs else 0
            heal = snapshot_sql.insert_snapshots(insert, ch, heal=True, force=False, now=now)
            healed = execute(heal, "recompute the partial and stale snapshots" if stale_ok else "recompute the partial snapshots").rowcount if counts.heal_pairs else 0
            healed += recomputed_forced
            if plan.target in plan.days:  # the chunk's portfolios now have the target day: what status reads
                execute(frontier_sql.record_chunk(insert, lo, hi, plan.target, from_chunk=require_active), "the frontier status reads")
            for stmt in snapshot_sql.clear_chunk():
                conn.execute(stmt)
            trans.rollback() if opts.explain else trans.commit()
    except BaseException:
        if trans.is_active:
            trans.rollback()
        raise
    delta["portfolios_active"] += active
    delta["portfolios_processed"] += counts.portfolios
    delta["snapshots_created"] += created
    delta["snapshots_recomputed"] += healed
    delta["snapshots_stale"] += stale
    delta["pairs"] += created + healed
    delta["days"] |= days


class _Ran:
    """What EXPLAIN ANALYZE leaves of a statement it ran: no row count."""

    rowcount = 0


def _explain(engine, plan: gaps.Plan, opts: Options, portfolio_id, require_active: bool, now: datetime) -> list[dict]:
    """The statements of the run's first chunk and first market-value slice, formatted, with the
    server's plan (``plan``) or its measured plan (``analyze``, which runs them); rolled back."""
    steps: list[dict] = []
    with engine.connect() as conn:
        if plan.days:  # EXPLAIN ANALYZE runs the writes (rolled back): their months must exist
            _ensure_partitions(conn, min(plan.days), max(*plan.days, plan.target))

        def execute(stmt, step=None):
            if step is None:
                return conn.execute(stmt.execution_options(preserve_rowcount=True))
            entry = {"step": step, "sql": dialect.render(stmt, conn)}
            if opts.explain != "sql":
                entry["plan"] = dialect.explain(conn, stmt, analyze=opts.explain == "analyze")
            steps.append(entry)
            if opts.explain == "analyze" and conn.dialect.name == "postgresql":
                return _Ran()  # EXPLAIN ANALYZE ran it
            return conn.execute(stmt.execution_options(preserve_rowcount=True))

        action_steps = steps_sql.load_steps(conn)
        conn.rollback()
        _prepare_connection(conn, plan, opts.max_price_age, execute=execute, steps=action_steps)
        try:
            ids = next(_iter_chunks(conn, portfolio_id, ChunkSizer(opts.chunk_size, opts.pairs_per_chunk, len(plan.days))), None)
            if ids is not None:
                _snapshot_chunk(conn, ids[0], ids[-1], _delta(), plan=plan, opts=opts, require_active=require_active,
                                preview=[], now=now, execute=execute, actions=bool(action_steps))
            scope = (market_value_sql.portfolio_range(portfolio_id, portfolio_id) if portfolio_id is not None
                     else spans.in_span(_spans(conn)[0], conn.dialect.name))
            with dialect.begin_chunk(conn) as trans:
                execute(market_value_sql.update_market_values(scope, bool(action_steps)), "market values of the first slice")
                trans.rollback()
        finally:
            _drop_temp_tables(conn)
    return steps


# --- invalidated history ----------------------------------------------------------
# Other applications write lots, cash, portfolios and closes directly; triggers (migration
# 0006) record what history each write invalidates. Every portfolio-refresh and refresh
# applies them first; ``recompute`` applies them alone. The SQL and the rule live in
# snapshotter.data.invalidation_sql.


def recompute(
    engine: EngineSource, portfolio_id: str | None = None, opts: Options | None = None, *, now: datetime, stop: StopFlag = STOP,
    run_id: str | None = None,
) -> Result:
    """Apply the pending invalidations (of one portfolio with ``portfolio_id``) up to the
    effective trading date of ``now``, then refresh the lots' market values."""
    opts = opts or Options()
    target = targets.nightly_target(None, now)
    pid = _parse_portfolio_id(portfolio_id) if portfolio_id is not None else None
    engine = _engine(engine)
    started = time.monotonic()
    stats = _new_stats(gaps.Plan("recompute", target, ()), "recompute", opts)
    if opts.dry_run:
        _apply_invalidations(engine, target, stats, opts, stop, None, now, pid)
        stats["portfolios_skipped"] = 0
        stats["duration_s"] = round(time.monotonic() - started, 3)
        return Result(stats, target, ExitCode.OK, None)
    with run_lock(engine, wait=opts.wait_for_lock, stop=stop):
        run = tracking.Run(engine, tracking.PORTFOLIO_RECOMPUTE, target, run_id).start()
        try:
            _apply_invalidations(engine, target, stats, opts, stop, run, now, pid)
            # the market values of every lot (one portfolio's with --portfolio): the normal pass, no snapshot days
            _execute(engine, gaps.Plan("recompute", target, ()), stats, opts, stop, run, pid, True, now, snapshots=False)
        except BaseException as exc:
            run.finish_raised(exc, stats, started)
            raise
        stats["portfolios_skipped"] = 0
        stats["duration_s"] = round(time.monotonic() - started, 3)
        failed = stats["portfolios_failed"] + stats["market_value_failures"]
        result = Result(stats, target, exit_code_for_failures(failed), run.run_id)
        run.finish("failed" if failed else "completed", stats)
        log.info("recompute.finished", **{k: v for k, v in stats.items() if k != "failed_portfolios"})
        return result


def _apply_invalidations(engine, target: date, stats: dict, opts: Options, stop: StopFlag, run, now: datetime, portfolio_id=None) -> None:
    """Recompute every portfolio whose history was invalidated, from its earliest from_date, in
    chunks through the snapshot engine (force mode); each chunk deletes the rows it consumed
    in its own transaction. Rows written while this runs (a higher id) stay for the next run."""
    started = time.perf_counter()
    start, end = gaps.window(target, opts.max_backfill_days)
    with engine.connect() as conn:
        with conn.begin():
            max_id = conn.execute(invalidation_sql.high_water()).scalar()
        if max_id is None:
            return  # nothing pending: one index probe a night
        with conn.begin():
            steps = steps_sql.load_steps(conn)
        if not opts.dry_run:  # symbol rows -> one row per holder, in one transaction
            with conn.begin():
                for stmt in invalidation_sql.expand_symbols(conn.dialect.name, max_id, valuation.priced_by(steps)):
                    conn.execute(stmt)
            with conn.begin():
                max_id = conn.execute(invalidation_sql.high_water()).scalar() or max_id
        with conn.begin():
            p = conn.execute(invalidation_sql.pending(start, max_id)).one()
            priced = tuple(sorted(conn.execute(planning_sql.priced_days_between(start, end)).scalars()))
        if priced:  # a dry run too: it runs the writes and rolls them back
            _ensure_partitions(conn, priced[0], target)
    stats["invalidations_pending"] = p.rows
    stats["invalidations_oldest_from"] = p.oldest.isoformat() if p.oldest else None
    stats["invalidations_before_window"] = p.before_window
    if p.before_window:
        log.warning("recompute.invalidations_before_window", count=p.before_window, oldest=stats["invalidations_oldest_from"],
                    window_start=start.isoformat(),
                    note="history before the window (--max-backfill-days) is not recomputed")
    plan = gaps.Plan("force", target, priced)
    work = partial(_recompute_chunk, plan=plan, max_id=max_id, window_start=start, now=now, dry_run=opts.dry_run,
                   max_price_age=opts.max_price_age, actions=bool(steps))
    prepare = partial(_prepare_recompute_connection, plan=plan, max_price_age=opts.max_price_age, steps=steps)
    task = partial(_with_split, work=work, counter="portfolios_failed", what="recompute: ")
    parallel = engine.dialect.name == "postgresql" and not opts.dry_run and portfolio_id is None
    sizer = ChunkSizer(opts.chunk_size, opts.pairs_per_chunk, len(priced))

    def merge(unit, delta):
        _merge(stats, delta, set())
        sizer.observe(len(unit), delta["pairs"])
        if run is not None:
            run.heartbeat(dict(stats))

    try:
        if opts.dry_run:  # one connection, one transaction, rolled back (the symbol rows expanded inside it)
            with engine.connect() as conn:
                prepare(conn)
                try:
                    with conn.begin() as trans:
                        for stmt in invalidation_sql.expand_symbols(conn.dialect.name, max_id, valuation.priced_by(steps)):
                            conn.execute(stmt)
                        ids = list(conn.execute(invalidation_sql.affected_ids(_BIG, None, 10**9, portfolio_id)).scalars())
                        for part in (ids[i:i + sizer.size] for i in range(0, len(ids), sizer.size)):
                            merge(part, task(conn, part))
                        trans.rollback()
                finally:
                    _drop_recompute_temp_tables(conn)
            return
        with engine.connect() as conn, Workers(engine, opts.workers if parallel else 1, prepare, _drop_recompute_temp_tables) as pool:
            _run_pass(pool, _iter_affected(conn, max_id, sizer, portfolio_id), task, merge, stop)
    finally:
        stats["invalidation_phase_s"] = round(time.perf_counter() - started, 3)
        if stats["portfolios_invalidated"]:
            log.info("recompute.applied", **{k: stats[k] for k in ("invalidations_pending", "invalidations_oldest_from", *_INV_COUNTERS)})


_BIG = 2**62  # the dry run reads every pending row (it expands the symbol rows inside its own transaction)


def _iter_affected(conn: sa.Connection, max_id, sizer: ChunkSizer, portfolio_id):
    after = None
    while True:
        with conn.begin():
            ids = list(conn.execute(invalidation_sql.affected_ids(max_id, after, sizer.size, portfolio_id)).scalars())
        if not ids:
            return
        yield ids
        after = ids[-1]


def _prepare_recompute_connection(conn: sa.Connection, plan: gaps.Plan, max_price_age: int = 0, steps=()) -> None:
    _prepare_connection(conn, plan, max_price_age, steps=steps, market_values=False)
    with conn.begin():
        invalidation_sql.metadata.drop_all(conn, checkfirst=True)
        invalidation_sql.metadata.create_all(conn)


def _drop_recompute_temp_tables(conn: sa.Connection) -> None:
    _drop_temp_tables(conn)
    if not conn.invalidated:
        with conn.begin():
            invalidation_sql.metadata.drop_all(conn, checkfirst=True)


def _recompute_chunk(conn: sa.Connection, lo, hi, delta: dict, *, plan: gaps.Plan, max_id, window_start: date, now: datetime,
                     dry_run: bool, max_price_age: int = 0, actions: bool = False) -> None:
    """One transaction: claim the chunk's invalidations, recompute, create and delete its snapshots."""
    name = conn.dialect.name
    ch = snapshot_sql.Chunk(lo, hi, plan.days[0] if plan.days else plan.target, plan.days[-1] if plan.days else plan.target, plan.target,
                            max_price_age, actions)
    insert = lambda table: dialect.dialect_insert(conn, table)  # noqa: E731
    nested = conn.in_transaction()
    trans = conn.begin_nested() if nested else dialect.begin_chunk(conn)
    try:
        for stmt in invalidation_sql.claim(name, lo, hi, max_id if not nested else _BIG):
            conn.execute(stmt)
        affected = conn.execute(sa.select(sa.func.count()).select_from(invalidation_sql.affected)).scalar_one()
        for stmt in invalidation_sql.describe(lo, hi, plan.target):
            conn.execute(stmt)
        deleted = 0
        if conn.execute(invalidation_sql.may_have_stale()).scalar_one():
            # an index range scan per portfolio over the days it deletes (before the hash joins below)
            deleted = conn.execute(invalidation_sql.delete_stale(lo, hi, window_start, plan.target)
                                   .execution_options(preserve_rowcount=True)).rowcount
        conn.execute(invalidation_sql.fill_pairs(lo, hi, ch.first_day, ch.last_day))
        dialect.analyze(conn, temp_tables.pairs)
        dialect.prefer_hash_joins(conn)
        if ch.actions:
            dialect.without_jit(conn)
        counts = conn.execute(snapshot_sql.pair_counts()).one()
        pairs, existing = counts.new_pairs + counts.heal_pairs, counts.heal_pairs
        changed = 0
        if existing:  # the stored rows, rewritten where they differ
            if name == "postgresql":
                stmt = snapshot_sql.rewrite_stored(ch, now)
            else:
                stmt = snapshot_sql.insert_snapshots(insert, ch, heal=True, force=True, now=now, only_differing=True)
            changed = conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount
        if pairs > existing:  # the pairs without a row
            conn.execute(snapshot_sql.insert_snapshots(insert, ch, heal=False, force=False, now=now))
        if max_price_age and not dry_run:
            delta["snapshots_stale"] += conn.execute(snapshot_sql.stale_written(new_only=False)).scalar_one()
        conn.execute(frontier_sql.forget_recomputed(insert, sa.select(invalidation_sql.affected.c.portfolio_id)))
        for stmt in [*snapshot_sql.clear_chunk(), *invalidation_sql.clear()]:
            conn.execute(stmt)
        trans.rollback() if dry_run else trans.commit()
    except BaseException:
        if trans.is_active:
            trans.rollback()
        raise
    delta["portfolios_invalidated"] += affected
    delta["snapshots_recomputed_by_invalidation"] += existing
    delta["snapshots_unchanged_by_invalidation"] += existing - changed
    delta["snapshots_created_by_invalidation"] += pairs - existing
    delta["snapshots_deleted_by_invalidation"] += deleted
    delta["pairs"] += pairs
