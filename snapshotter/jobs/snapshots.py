"""portfolio-refresh, refresh --date and backfill: one engine, three scopes.

The job is the imperative shell around :mod:`snapshotter.core.gaps` (what to do) and
:mod:`snapshotter.data.valuation` (the set-based SQL). Portfolios are walked in id
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
from datetime import date, timedelta

import sqlalchemy as sa

from snapshotter.core import gaps
from snapshotter.data import tracking, valuation
from snapshotter.config import Settings
from snapshotter.errors import BatchNotReady, DatabaseUnavailable, ExitCode, Stopped, UsageError
from snapshotter.data.locks import run_lock
from snapshotter.ops.logs import get_logger, redact
from snapshotter.ops.progress import progress_bar
from snapshotter.data.schema import portfolios
from snapshotter.ops.signals import STOP, StopFlag
from snapshotter.data.store import dialect_insert, utcnow
from snapshotter.core.calendar import effective_trading_date, is_trading_day, trading_days_between
from snapshotter.jobs.workers import Workers

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
    alert_failure_ratio: float = 0.10
    progress: bool | None = None
    workers: int = 2  # connections working on chunks at once (PostgreSQL; SQLite uses 1)


@dataclass
class Result:
    stats: dict
    exit_code: ExitCode = ExitCode.OK
    run_id: str | None = None
    preview: list[dict] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"run_id": self.run_id, "exit_code": int(self.exit_code), **self.stats}


# --- entry points --------------------------------------------------------------


def portfolio_refresh(
    engine: sa.Engine, settings: Settings, target: date | None = None, opts: Options | None = None, stop: StopFlag = STOP,
    run_id: str | None = None,
) -> Result:
    """Nightly: wait for the symbol batch, then fill every portfolio's gaps up to ``target``."""
    opts = opts or Options()
    target = target or effective_trading_date()
    _check_day(target, "--date")

    def plan_fn(conn):
        start, end = gaps.window(target, opts.max_backfill_days)
        priced = set(conn.execute(valuation.priced_days_between(start, end)).scalars())
        bare = set(conn.execute(valuation.days_without_snapshots(start, end)).scalars())
        return gaps.plan_gaps(target, opts.max_backfill_days, priced, bare)

    return _run(engine, "portfolio_refresh", target, plan_fn, opts, stop, portfolio_id=None, require_active=True, wait=opts.wait_for_batch, run_id=run_id)


def refresh_date(
    engine: sa.Engine, settings: Settings, day: date, force: bool = False, opts: Options | None = None, stop: StopFlag = STOP,
    run_id: str | None = None,
) -> Result:
    """Redo one trading day for every active portfolio; --force recomputes existing snapshots."""
    opts = opts or Options()
    _check_day(day, "--date")

    def plan_fn(conn):
        priced = set(conn.execute(valuation.priced_days_between(day, day)).scalars())
        return gaps.plan_dates([day], priced, force)

    return _run(engine, "portfolio_refresh", day, plan_fn, opts, stop, portfolio_id=None, require_active=True, wait=False, mode_label="refresh", run_id=run_id)


def backfill(
    engine: sa.Engine,
    settings: Settings,
    portfolio_id: str,
    date_from: date | None = None,
    date_to: date | None = None,
    force: bool = False,
    opts: Options | None = None,
    stop: StopFlag = STOP,
    run_id: str | None = None,
) -> Result:
    """One portfolio over a range of trading days, from cached closes only."""
    opts = opts or Options()
    pid = _parse_portfolio_id(portfolio_id)
    today = effective_trading_date()
    date_to = date_to or today
    if date_to > today:
        raise UsageError(f"--to {date_to} is after the latest closed trading day {today}")
    if date_from is None:
        date_from = date_to - timedelta(days=opts.max_backfill_days - 1)
    if date_from > date_to:
        raise UsageError(f"--from {date_from} is after --to {date_to}")
    span = (date_to - date_from).days + 1
    if span > opts.max_backfill_days:
        raise UsageError(f"range {date_from}..{date_to} is {span} days, over --max-backfill-days {opts.max_backfill_days}")
    with engine.connect() as conn:
        row = conn.execute(sa.select(portfolios.c.deleted_at).where(portfolios.c.id == pid)).first()
    if row is None:
        raise UsageError(f"unknown portfolio {portfolio_id}")
    if row.deleted_at is not None:
        raise UsageError(f"portfolio {portfolio_id} is deleted")

    def plan_fn(conn):
        priced = set(conn.execute(valuation.priced_days_between(date_from, date_to)).scalars())
        return gaps.plan_dates(trading_days_between(date_from, date_to), priced, force)

    return _run(engine, "portfolio_backfill", date_to, plan_fn, opts, stop, portfolio_id=pid, require_active=False, wait=False, mode_label="backfill", run_id=run_id)


def _check_day(day: date, option: str) -> None:
    latest = effective_trading_date()
    if day > latest:
        raise UsageError(f"{option} {day} is in the future: the latest closed trading day is {latest}")
    if not is_trading_day(day):
        raise UsageError(f"{option} {day} is not an NYSE trading day")


def _parse_portfolio_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise UsageError(f"unknown portfolio {value!r}: not a UUID") from None


# --- the run -------------------------------------------------------------------


def _run(engine, batch_type, target, plan_fn, opts: Options, stop: StopFlag, *, portfolio_id, require_active, wait, mode_label=None, run_id=None) -> Result:
    started = time.monotonic()
    if opts.dry_run:
        with engine.connect() as conn:
            plan = plan_fn(conn)
            conn.rollback()
        stats = _new_stats(plan, mode_label)
        preview = _execute(engine, plan, stats, opts, stop, None, portfolio_id, require_active)
        stats["duration_s"] = round(time.monotonic() - started, 3)
        return Result(stats, ExitCode.OK, None, preview)

    with run_lock(engine, wait=opts.wait_for_lock, stop=stop):
        run = tracking.Run(engine, batch_type, target, run_id).start()
        stats: dict = {"mode": mode_label or "gaps", "target_date": target.isoformat()}
        try:
            if wait and not _wait_for_symbol_batch(engine, target, opts, stop, run):
                msg = (
                    f"symbol batch for {target} not completed within {opts.wait_timeout_s:.0f}s; "
                    "portfolio refresh aborted, nothing written; the next run backfills the day"
                )
                stats["duration_s"] = round(time.monotonic() - started, 3)
                run.finish("aborted", stats, msg)
                raise BatchNotReady(msg)
            with engine.connect() as conn:
                plan = plan_fn(conn)
                conn.rollback()
            stats = _new_stats(plan, mode_label)
            if plan.unpriced:
                log.warning("refresh.days_without_prices", days=[d.isoformat() for d in plan.unpriced], count=len(plan.unpriced))
            _execute(engine, plan, stats, opts, stop, run, portfolio_id, require_active)
        except Stopped as exc:
            stats["duration_s"] = round(time.monotonic() - started, 3)
            run.finish("interrupted", stats, str(exc))
            raise
        except BatchNotReady:
            raise
        except BaseException as exc:
            stats["duration_s"] = round(time.monotonic() - started, 3)
            run.finish("failed", stats, redact(f"{type(exc).__name__}: {exc}".splitlines()[0]))
            raise
        stats["duration_s"] = round(time.monotonic() - started, 3)
        failed = stats["portfolios_failed"]
        result = Result(stats, ExitCode.PARTIAL if failed or stats["market_value_failures"] else ExitCode.OK, run.run_id)
        if failed:
            considered = stats["portfolios_active"] or 1
            if failed / considered > opts.alert_failure_ratio:
                result.alerts.append(
                    f"portfolio refresh for {target}: {failed} of {stats['portfolios_active']} portfolios failed "
                    f"({failed / considered:.0%}, threshold {opts.alert_failure_ratio:.0%})"
                )
        run.finish("failed" if result.exit_code else "completed", stats)
        log.info("refresh.finished", **{k: v for k, v in stats.items() if k != "failed_portfolios"})
        return result


def _new_stats(plan: gaps.Plan, mode_label) -> dict:
    return {
        "mode": mode_label or plan.mode,
        "target_date": plan.target.isoformat(),
        "force": plan.mode == "force",
        "candidate_days": len(plan.days),
        "days_without_prices": [d.isoformat() for d in plan.unpriced],
        "portfolios_active": 0,
        "portfolios_processed": 0,
        "portfolios_skipped": 0,
        "portfolios_failed": 0,
        "failed_portfolios": [],
        "snapshots_created": 0,
        "snapshots_recomputed": 0,
        "days_backfilled": 0,
        "positions_valued": 0,
        "market_value_failures": 0,
        "chunks": 0,
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
        q = sa.select(portfolios.c.id).where(portfolios.c.deleted_at.is_(None)).order_by(portfolios.c.id).limit(sizer.size)
        if after is not None:
            q = q.where(portfolios.c.id > after)
        with conn.begin():
            ids = list(conn.execute(q).scalars())
        if not ids:
            return
        yield ids
        after = ids[-1]


def _execute(engine, plan: gaps.Plan, stats: dict, opts: Options, stop: StopFlag, run, portfolio_id, require_active) -> list[dict]:
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
    with engine.connect() as conn, Workers(engine, n, partial(_prepare_connection, plan=plan), _drop_temp_tables) as pool:
        total = None
        if portfolio_id is None:
            with conn.begin():
                total = conn.execute(sa.select(sa.func.count()).where(portfolios.c.deleted_at.is_(None))).scalar_one()

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

        snapshot = partial(_snapshot_chunk, plan=plan, opts=opts, require_active=require_active, preview=preview)
        started = time.perf_counter()
        with progress_bar("snapshots", total, opts.progress) as bar:
            sizer = ChunkSizer(opts.chunk_size, opts.pairs_per_chunk, len(plan.days))
            task = partial(_with_split, work=snapshot, counter="portfolios_failed", what="")
            try:
                _run_pass(pool, _iter_chunks(conn, portfolio_id, sizer), task, merged(bar, sizer), stop)
            finally:
                stats["snapshot_phase_s"] = round(time.perf_counter() - started, 3)
        if not opts.dry_run:
            started = time.perf_counter()
            if portfolio_id is None:  # everybody's lots: in physical slices of the table
                units = _spans(conn)
                task = _market_value_span
            else:
                units = [[portfolio_id]]
                task = partial(_with_split, work=_market_value_chunk, counter="market_value_failures", what="market values: ")
            with progress_bar("market values", len(units), opts.progress) as bar:
                try:
                    _run_pass(pool, iter(units), task, merged(bar, None), stop)
                finally:
                    stats["market_value_phase_s"] = round(time.perf_counter() - started, 3)
    stats["portfolios_skipped"] = stats["portfolios_active"] - stats["portfolios_processed"] - stats["portfolios_failed"]
    return preview


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


def _prepare_connection(conn: sa.Connection, plan: gaps.Plan) -> None:
    """The run's temporary tables on one connection: candidate days and latest closes."""
    with conn.begin():
        valuation.tmp.drop_all(conn, checkfirst=True)
        valuation.tmp.create_all(conn)
        if plan.days:
            conn.execute(valuation.days_t.insert(), [{"d": d, "hole": d in plan.holes} for d in plan.days])
        conn.execute(valuation.fill_latest_closes())
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ANALYZE _snap_days"))
            conn.execute(sa.text("ANALYZE _latest_close"))


def _drop_temp_tables(conn: sa.Connection) -> None:
    if conn.invalidated:
        return
    with conn.begin():
        valuation.tmp.drop_all(conn, checkfirst=True)


_COUNTERS = (
    "portfolios_active", "portfolios_processed", "portfolios_failed", "market_value_failures",
    "snapshots_created", "snapshots_recomputed", "positions_valued",
)


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


def _transaction(conn: sa.Connection):
    """A chunk's transaction; on PostgreSQL with room to hash and sort in memory (SET LOCAL ends with it)."""
    trans = conn.begin()
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))
    return trans


def _spans(conn: sa.Connection) -> list[valuation.Span]:
    dialect = conn.dialect.name
    with conn.begin():
        first, last = conn.execute(valuation.positions_extent(dialect)).one()
    step = valuation.PG_SPAN_BLOCKS if dialect == "postgresql" else valuation.SQLITE_SPAN_ROWS
    return valuation.spans(int(first), int(last), step)


def _market_value_chunk(conn: sa.Connection, lo, hi, delta: dict, span: valuation.Span | None = None) -> None:
    """One transaction: the open lots of portfolios lo..hi (within ``span``) get the latest cached close."""
    scope = valuation.chunk_scope(valuation.Chunk(lo, hi, date.min, date.min, date.min))
    if span is not None:
        scope = sa.and_(scope, valuation.span_scope(span, conn.dialect.name))
    with _transaction(conn):
        valued = conn.execute(valuation.update_market_values(scope).execution_options(preserve_rowcount=True)).rowcount
    delta["positions_valued"] += valued


def _market_value_span(conn: sa.Connection, span: valuation.Span) -> dict:
    """One transaction for a slice of the table; if it fails, its portfolios one by one (split in halves)."""
    delta = _delta()
    try:
        with _transaction(conn):
            stmt = valuation.update_market_values(valuation.span_scope(span, conn.dialect.name))
            delta["positions_valued"] += conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount
        return delta
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable(f"database connection lost: {redact(str(exc.orig).splitlines()[0])}") from None
        log.warning("refresh.span_failed_splitting", span=[span.lo, span.hi], error=redact(str(exc.orig).splitlines()[0]))
    with conn.begin():
        ids = list(conn.execute(valuation.portfolios_in_span(span, conn.dialect.name)).scalars())
    if ids:
        work = partial(_market_value_chunk, span=span)
        _with_split(conn, ids, work=work, counter="market_value_failures", what="market values: ", delta=delta)
    return delta


def _snapshot_chunk(conn: sa.Connection, lo, hi, delta: dict, *, plan: gaps.Plan, opts: Options, require_active: bool, preview: list) -> None:
    """One transaction: plan the chunk's pairs and value them (a dry run rolls it back)."""
    force = plan.mode == "force"
    now = utcnow()
    pg = conn.dialect.name == "postgresql"
    first_day = plan.days[0] if plan.days else plan.target
    ch = valuation.Chunk(lo, hi, first_day, plan.days[-1] if plan.days else plan.target, plan.target)
    insert = lambda table: dialect_insert(conn, table)  # noqa: E731
    trans = _transaction(conn)
    run = lambda stmt: conn.execute(stmt.execution_options(preserve_rowcount=True))  # noqa: E731
    try:
        active = run(valuation.fill_chunk(ch, require_active=require_active, ignore_existing=force)).rowcount
        if plan.days:
            conn.execute(valuation.fill_pairs_after_last())
            if plan.holes and not force:
                conn.execute(valuation.fill_pairs_holes())
            if not force:
                conn.execute(valuation.fill_pairs_heal(ch))
        if pg:
            conn.execute(sa.text("ANALYZE _snap_pairs"))
        counts = conn.execute(valuation.pair_counts(plan.target)).one()
        days = set(conn.execute(valuation.backfilled_days(plan.target)).scalars())
        if opts.dry_run:
            room = PREVIEW_ROWS - len(preview)
            if room > 0:
                rows = conn.execute(valuation.valuation_select(ch, False, now).limit(room)).all()
                preview.extend(dict(zip(valuation.SNAPSHOT_COLUMNS[:-2], r[:-2])) for r in rows)
            created, healed = counts.new_pairs, counts.heal_pairs
            trans.rollback()
        else:
            existing = 0
            if force:
                existing = conn.execute(
                    sa.select(sa.func.count()).select_from(valuation.pairs_t).where(
                        sa.exists().where(
                            valuation.snaps.c.portfolio_id == valuation.pairs_t.c.portfolio_id,
                            valuation.snaps.c.snapshot_date == valuation.pairs_t.c.d,
                        )
                    )
                ).scalar_one()
            if pg:
                # The planner underestimates "lot held on d" ~100x and would probe the
                # price index once per lot; the hash join it rejects is 3x faster.
                conn.execute(sa.text("SET LOCAL enable_nestloop = off"))
            written = run(valuation.insert_snapshots(insert, ch, heal=False, force=force, now=now)).rowcount if counts.new_pairs else 0
            created, recomputed_forced = written - existing, existing
            healed = run(valuation.insert_snapshots(insert, ch, heal=True, force=False, now=now)).rowcount if counts.heal_pairs else 0
            healed += recomputed_forced
            conn.execute(valuation.pairs_t.delete())
            conn.execute(valuation.chunk_t.delete())
            trans.commit()
    except BaseException:
        if trans.is_active:
            trans.rollback()
        raise
    delta["portfolios_active"] += active
    delta["portfolios_processed"] += counts.portfolios
    delta["snapshots_created"] += created
    delta["snapshots_recomputed"] += healed
    delta["pairs"] += created + healed
    delta["days"] |= days
