"""``snapshotter symbol-batch``: bring ``symbol_prices_daily`` up to the target date.

The job finds the symbols the portfolios need, asks the pure planner
(:mod:`snapshotter.core.fetch_plan`) for the fewest provider calls that fill the
cache's gaps, makes them through the rate limiter with tenacity retries, keeps
only bars that pass :mod:`snapshotter.core.validation`, and upserts them committing
per symbol (or per grouped date), so a crash loses at most the call in flight.

How a provider error affects the run (README "symbol-batch"):

* transient (timeout, 5xx, 429, throttle note): retried with exponential
  backoff and jitter (Retry-After honoured); still failing: the symbol fails.
  Three calls in a row failing that way: the provider is unreachable, the rest
  is deferred, exit 69.
* unknown symbol / unusable response: that symbol fails, the others go on (exit 1).
* daily quota exhausted (our own budget or the provider's word): stop cleanly,
  the symbols not done are deferred, run ``aborted``, exit 75 (safe to rerun).
* key or plan refused: stop, run ``aborted``, exit 78.
* SIGTERM/SIGINT or ``--max-runtime``: the call in flight is finished and stored,
  the run is marked ``interrupted`` and Stopped is re-raised (exit 143/130, or 75).

Corporate actions (README "Corporate actions"): after the closes, a nightly run asks a
provider that declares ``Capabilities.splits_every_days`` about the splits of the symbols
it serves that are due (:mod:`snapshotter.core.corporate_actions`), page by page through
the same rate limiter, storing each page with the record of the check in one
transaction; a failure there is logged and retried by the next run, never the run's
outcome. Then the closes stored by this run are compared with the day before
(:func:`snapshotter.data.corporate_actions.suspected_splits`): a move like a split with no
split on file is logged, alerted and kept in ``stats.possible_unrecorded_splits``.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Callable

import sqlalchemy as sa
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random
from tenacity.wait import wait_base

from snapshotter.clock import utcnow
from snapshotter.config import Settings
from snapshotter.core import corporate_actions as actions
from snapshotter.core import fetch_plan, symbol_health, targets, validation
from snapshotter.core.calendar import effective_trading_date, new_york_date
from snapshotter.data import corporate_actions, fetch_memory, planning_sql, schema, steps_sql, tracking
from snapshotter.data.dialect import upsert
from snapshotter.errors import (
    BadProviderData,
    ExitCode,
    LockHeld,
    ProviderError,
    ProviderRefused,
    QuotaExhausted,
    Stopped,
    SymbolNotFound,
    TransientProviderError,
    UsageError,
    exit_code_for_failures,
)
from snapshotter.data.locks import run_lock
from snapshotter.ops.logs import bind_target, get_logger, redact
from snapshotter.ops.progress import progress_bar
from snapshotter.providers.base import Provider, get_provider, rate_limit_for
from snapshotter.core.rate_limit import RateLimit, TokenBucket
from snapshotter.ops.signals import STOP, StopFlag

log = get_logger(__name__)
MAX_RUNTIME_S = 4 * 3600.0  # --max-runtime default: the nightly schedule's bound (Kubernetes activeDeadlineSeconds - 10 min)

ATTEMPTS = 3  # per provider call, first try included
RETRY_INITIAL = 2.0  # seconds, doubled per retry, plus up to as much jitter
RETRY_MAX = 60.0
RETRY_AFTER_CAP = 300.0  # a longer Retry-After is capped (the next attempt may then be refused again)
UNREACHABLE_AFTER = 3  # consecutive calls failing transiently = provider unreachable
ALERT_FAILURE_RATIO = 0.10  # exit 1 alerts only when more than this share of the symbols tried failed
LOCK_NAME = "snapshotter.symbol_batch"  # one batch per database: two would spend the same daily quota


@dataclass
class BatchResult:
    run_id: str
    status: str  # completed, failed, aborted
    exit_code: int
    stats: dict
    target: date  # resolved once; the tracking row, stats, pings and summary show the same day
    error: str | None = None
    alert: str | None = None  # the alert line, when this run alerts (see batch_alert)

    def summary(self) -> dict:
        return {"run_id": self.run_id, "status": self.status, "exit_code": self.exit_code, "error": self.error, **self.stats}


class wait_retry_after(wait_base):
    """Wait what the server asked for (Retry-After, capped), else the fallback backoff."""

    def __init__(self, fallback: wait_base, cap: float = RETRY_AFTER_CAP):
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        asked = getattr(exc, "retry_after", None)
        if asked is not None:
            return min(self.cap, max(0.0, float(asked)))
        return self.fallback(retry_state)


# --- inputs from the database ----------------------------------------------------


def symbols_needed(conn: sa.Connection, day: date, until: date | None = None) -> list[str]:
    """The symbols the portfolios need on ``day`` (:func:`planning_sql.symbols_needed`), sorted; with
    ``until``, over the days up to it (a ticker change within them: the old and the new symbol)."""
    return planning_sql.read_symbols_needed(conn, day, steps_sql.renamed(conn, day, until))


def last_cached(conn: sa.Connection, symbols: list[str], target: date) -> dict[str, date]:
    out: dict[str, date] = {}
    for q in planning_sql.last_cached(symbols, target):
        out.update({s: d for s, d in conn.execute(q)})
    return out


# --- arguments ---------------------------------------------------------------------


def normalize_symbols(symbols) -> list[str] | None:
    """``--symbols``: each through the one symbol rule (:func:`validation.symbol`), sorted, unique."""
    if symbols is None:
        return None
    items = symbols.split(",") if isinstance(symbols, str) else list(symbols)
    out = set()
    for raw in items:
        if not str(raw).strip():
            continue
        try:
            out.add(validation.symbol(str(raw)))
        except ValueError:
            raise UsageError(f"--symbols: bad symbol {raw!r}") from None
    if not out:
        raise UsageError("--symbols: no symbols given")
    return sorted(out)


# --- the job -------------------------------------------------------------------------


@dataclass
class _Outcome:
    fetched: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # symbol -> reason
    errors: dict[str, ProviderError] = field(default_factory=dict)  # symbol -> the error it failed with
    deferred: list[str] = field(default_factory=list)
    no_data: set[str] = field(default_factory=set)
    stop_reason: ProviderError | None = None  # quota, refusal or unreachable: the loop stopped early
    unreachable: bool = False
    attempted: set[str] = field(default_factory=set)  # symbols a call was made for
    expected_failures: set[str] = field(default_factory=set)  # marked unavailable before and failing again
    marked: list[str] = field(default_factory=list)  # newly marked unavailable by this run
    back: list[str] = field(default_factory=list)  # unavailable until this run fetched them
    suspected: list[actions.SuspectedSplit] = field(default_factory=list)  # closes that moved like an unrecorded split


class _Batch:
    def __init__(self, engine: sa.Engine, provider: Provider, bucket: TokenBucket, run: tracking.Run, req: "_Request", stats: dict):
        self.engine = engine
        self.provider = provider
        self.bucket = bucket
        self.run = run
        self.today = req.today
        self.now = req.now
        self.stop = req.stop
        self.stats = stats
        self.out = _Outcome()
        self.streak = 0
        self.retrying = dict(
            stop=stop_after_attempt(req.attempts),
            wait=req.retry_wait,
            retry=retry_if_exception_type(TransientProviderError),
            sleep=req.sleep,
            reraise=True,
            before_sleep=self._log_retry,
        )

    # one provider call, rate limited and retried
    def call(self, fn: Callable):
        for attempt in Retrying(**self.retrying):
            with attempt:
                self.bucket.acquire()
                self.stats["provider_calls"] += 1
                return fn()

    @staticmethod
    def _log_retry(rs) -> None:
        exc = rs.outcome.exception()
        log.warning(
            "symbol_batch.retry",
            attempt=rs.attempt_number,
            wait_s=round(rs.next_action.sleep, 3) if rs.next_action else None,
            error=redact(str(exc)),
        )

    def store(self, rows: list[dict]) -> int:
        if not rows:
            return 0
        now = utcnow()
        source = self.provider.name
        rows = [{**r, "source": source, "fetched_at": now} for r in rows]
        with self.engine.begin() as conn:
            n = upsert(conn, schema.symbol_prices_daily, rows, ("symbol", "price_date"))
            fetch_memory.forget_rejections(conn, rows)
        self.stats["rows_upserted"] += n
        return n

    def reject(self, rejected) -> int:
        """Log and remember rejected bars; returns how many were rejected for the first time."""
        if not rejected:
            return 0
        with self.engine.begin() as conn:
            new = fetch_memory.remember_rejections(conn, rejected, self.provider.name, utcnow())
        for r in rejected:
            log.warning("symbol_batch.row_rejected", symbol=r.symbol, price_date=str(r.price_date), reason=redact(r.reason))
        self.stats["rows_rejected"] += len(rejected)
        self.stats["rows_rejected_new"] += new
        return new

    def fail(self, symbols, exc: ProviderError) -> None:
        msg = redact(str(exc))[:300]
        for s in symbols:
            self.out.failed[s] = msg
            self.out.errors[s] = exc
            log.debug("symbol_batch.symbol", symbol=s, status="failed", error=msg)

    def transient_failure(self) -> bool:
        """Count a call that failed after its retries; True when the provider looks unreachable."""
        self.streak += 1
        return self.streak >= UNREACHABLE_AFTER

    def beat(self) -> None:
        self.run.heartbeat(self.snapshot_stats())

    def snapshot_stats(self) -> dict:
        o = self.out
        return {
            **self.stats,
            "symbols_fetched": len(o.fetched),
            "symbols_failed": sorted(o.failed),
            "symbols_deferred": sorted(set(o.deferred)),
            "symbols_no_data": sorted(o.no_data),
            "failures": {s: o.failed[s] for s in sorted(o.failed)},
            "symbols_attempted": len(o.attempted),
            "symbols_marked_unavailable": sorted(o.marked),
            "symbols_back": sorted(o.back),
            "possible_unrecorded_splits": [x.as_dict() for x in o.suspected],
        }

    # splits: the due symbols, page by page, each page stored with the record of the check
    def run_splits(self, symbols: list[str]) -> None:
        every = self.provider.capabilities.splits_every_days
        if not every or not symbols:
            return
        with self.engine.connect() as conn:
            last = corporate_actions.splits_checked(conn, self.provider.name, self.now)
        due = actions.splits_due(symbols, last, self.today, every)
        st = self.stats["splits"] = {"due": len(due), "calls": 0, "inserted": 0, "updated": 0, "unchanged": 0, "rejected": 0,
                                     "error": None}
        if not due:
            return
        since, wanted, checked, cursor = actions.splits_since(due, last, self.today), set(due), set(), None
        while True:
            self.stop.check()
            try:
                page = self.call(lambda: self.provider.splits(due, since, cursor))
            except ProviderError as exc:  # quota, refusal, still failing after retries, unusable: the next run asks again
                st["error"] = redact(str(exc))[:300]
                log.warning("symbol_batch.splits_failed", error=st["error"], checked=len(checked), due=len(due))
                return
            st["calls"] += 1
            rows, rejected = validation.validate_splits([x for x in page.splits if x.symbol in wanted], self.today)
            for r in rejected:
                log.warning("symbol_batch.split_rejected", symbol=r.symbol, ex_date=str(r.price_date), reason=redact(r.reason))
            st["rejected"] += len(rejected)
            checked.update(set(page.covered) & wanted)
            self.stats["splits_checked"] = {"on": self.today.isoformat(), "symbols": sorted(checked)}
            with self.engine.begin() as conn:
                for k, n in corporate_actions.store_splits(conn, rows, self.provider.name, utcnow()).items():
                    st[k] += n
                corporate_actions.record_check(conn, self.run.run_id, self.snapshot_stats())
            cursor = page.next
            if cursor is None:
                log.info("symbol_batch.splits", **{k: v for k, v in st.items() if k != "error"}, since=str(since))
                return

    # closes stored by this run that moved like a split nobody recorded
    def find_suspected_splits(self, first_new: dict[str, date], target: date) -> None:
        symbols = sorted(set(first_new) & (self.out.fetched - set(self.out.failed)))
        if not symbols:
            return
        with self.engine.connect() as conn:
            found = corporate_actions.suspected_splits(conn, symbols, min(first_new[s] for s in symbols), target)
        for hit in found:
            if hit.day >= first_new[hit.symbol]:  # a close this run stored
                self.out.suspected.append(hit)
                log.warning("symbol_batch.possible_unrecorded_split", symbol=hit.symbol, day=str(hit.day), ratio=hit.ratio,
                            prev_close=str(hit.prev_close), close=str(hit.close))

    # grouped-by-date calls: one per day for every symbol the planner put there
    def run_grouped(self, calls, bar) -> None:
        pending_by_symbol: dict[str, int] = defaultdict(int)
        for gc in calls:
            for s in gc.symbols:
                pending_by_symbol[s] += 1
        bad: set[str] = set()
        seen_last_day: dict[str, bool] = {}
        for i, gc in enumerate(calls):
            self.stop.check()
            self.out.attempted.update(gc.symbols)
            try:
                bars = self.call(lambda: self.provider.grouped_closes(gc.day))
            except (QuotaExhausted, ProviderRefused) as exc:
                self.out.stop_reason = exc
                left = {s for g in calls[i:] for s in g.symbols} - bad
                self.out.deferred.extend(sorted(left))
                return
            except TransientProviderError as exc:
                self.fail([s for s in gc.symbols if s not in self.out.failed], exc)
                bad.update(gc.symbols)
                if self.transient_failure():
                    self.out.unreachable, self.out.stop_reason = True, exc
                    self.out.deferred.extend(sorted({s for g in calls[i + 1 :] for s in g.symbols} - bad))
                    return
                bar.advance()
                continue
            except (SymbolNotFound, BadProviderData) as exc:
                self.streak = 0
                self.fail([s for s in gc.symbols if s not in self.out.failed], exc)
                bad.update(gc.symbols)
                bar.advance()
                continue
            self.streak = 0
            wanted = set(gc.symbols)
            mine = [b for b in bars if b.symbol in wanted]
            rows, rejected = validation.validate(mine, gc.day, gc.day, self.today)
            self.reject(rejected)
            self.store(rows)
            got = {r["symbol"] for r in rows}
            for s in gc.symbols:
                pending_by_symbol[s] -= 1
                seen_last_day[s] = s in got  # days are ascending: the last one seen is the symbol's last day
                if pending_by_symbol[s] == 0 and s not in bad:
                    self.out.fetched.add(s)
                    if not seen_last_day[s]:
                        self.out.no_data.add(s)
                    log.debug("symbol_batch.symbol", symbol=s, status="fetched", via="grouped")
            log.debug("symbol_batch.grouped_day", day=str(gc.day), symbols=len(gc.symbols), rows=len(rows), rejected=len(rejected))
            self.beat()
            bar.advance()

    # range calls: one per symbol covering its span
    def run_ranges(self, calls, bar) -> None:
        for i, rc in enumerate(calls):
            self.stop.check()
            what = f"{rc.symbol} {rc.start}..{rc.end}"
            self.out.attempted.add(rc.symbol)
            try:
                bars = self.call(lambda: self.provider.daily_closes(rc.symbol, rc.start, rc.end, size=rc.size))
                rows, rejected = validation.validate([b for b in bars if b.symbol == rc.symbol], rc.start, rc.end, self.today)
                new = self.reject(rejected)
                if new and not rows:  # bars rejected before and again are the same answer, not a new failure
                    raise BadProviderData(f"{self.provider.name}: {what}: every row was rejected ({len(rejected)}), e.g. {rejected[0].reason}")
            except (QuotaExhausted, ProviderRefused) as exc:
                self.out.stop_reason = exc
                self.out.deferred.extend(c.symbol for c in calls[i:])
                return
            except TransientProviderError as exc:
                self.fail([rc.symbol], exc)
                if self.transient_failure():
                    self.out.unreachable, self.out.stop_reason = True, exc
                    self.out.deferred.extend(c.symbol for c in calls[i + 1 :])
                    return
                bar.advance()
                self.beat()
                continue
            except (SymbolNotFound, BadProviderData) as exc:
                self.streak = 0
                self.fail([rc.symbol], exc)
                bar.advance()
                self.beat()
                continue
            self.streak = 0
            self.store(rows)
            self.out.fetched.add(rc.symbol)
            if not any(r["price_date"] == rc.end for r in rows):
                self.out.no_data.add(rc.symbol)
            log.debug("symbol_batch.symbol", symbol=rc.symbol, status="fetched", rows=len(rows), rejected=len(rejected), start=str(rc.start), end=str(rc.end), size=rc.size)
            self.beat()
            bar.advance()


@dataclass(frozen=True)
class _Request:
    """The run's resolved arguments: what to fetch, as of when, and the injectable timing."""

    target: date  # the run's target date (--date, --to, or the effective trading date)
    date_from: date | None  # set for a --from/--to backfill
    symbols: list[str] | None  # --symbols, else None (read from the database)
    now: datetime
    today: date  # New York date of ``now``: later bars are "in the future"
    latest: date  # effective trading date of ``now`` (the provider's newest bar)
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    retry_wait: wait_base
    attempts: int
    progress: bool | None
    stop: StopFlag
    started: float
    alert_failure_ratio: float = ALERT_FAILURE_RATIO
    unavailable_after: int = symbol_health.FAILURES_TO_MARK
    refetch: bool = False  # prices refetch: every day of the range again, cached or not

    @property
    def nightly(self) -> bool:
        """The scheduled run: the symbols the portfolios need, up to the target (dead symbols back off)."""
        return self.date_from is None and self.symbols is None


def run_symbol_batch(
    engine: sa.Engine | Callable[[], sa.Engine],
    settings: Settings,
    *,
    target_date: date | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    symbols=None,
    provider: str | Provider | None = None,
    now: datetime,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] | None = None,
    retry_wait: wait_base | None = None,
    attempts: int = ATTEMPTS,
    progress: bool | None = None,
    stop: StopFlag = STOP,
    run_id: str | None = None,
    alert_failure_ratio: float = ALERT_FAILURE_RATIO,
    unavailable_after: int = symbol_health.FAILURES_TO_MARK,
    refetch: bool = False,
) -> BatchResult:
    """Run one symbol batch (see the module docstring); provider trouble is a result, not an exception.

    Raises UsageError (bad arguments), ConfigError (provider/key/limits) and
    LockHeld before anything is written; Stopped after marking the run
    ``interrupted``. ``now`` is the command's instant (the target and "the future"
    derive from it); ``clock``, ``sleep`` and ``retry_wait`` are for tests; the
    default sleep is ``stop.sleep`` so a SIGTERM cuts a wait short. ``engine`` may be
    a zero-argument callable, called once the arguments are known to be good.
    """
    started = time.monotonic()
    target, rng = targets.symbol_batch_target(target_date, date_from, date_to, now)
    bind_target(target)
    latest = effective_trading_date(now)
    req = _Request(
        target=target,
        date_from=rng.first if rng else None,
        symbols=normalize_symbols(symbols),
        now=now,
        today=new_york_date(now),
        latest=latest,
        clock=clock,
        sleep=sleep or stop.sleep,
        retry_wait=retry_wait or wait_retry_after(wait_exponential(multiplier=RETRY_INITIAL, max=RETRY_MAX) + wait_random(0, RETRY_INITIAL)),
        attempts=attempts,
        progress=progress,
        stop=stop,
        started=started,
        alert_failure_ratio=alert_failure_ratio,
        unavailable_after=unavailable_after,
        refetch=refetch,
    )
    prov = provider if isinstance(provider, Provider) else get_provider(provider, settings)
    engine = engine if isinstance(engine, sa.Engine) else engine()
    try:
        limit = rate_limit_for(prov, settings)
        try:
            with run_lock(engine, LOCK_NAME, wait=False, stop=stop):
                return _run(engine, prov, limit, req, run_id)
        except LockHeld:  # raised only by run_lock: _run never raises it
            raise LockHeld("another symbol batch is running on this database (it would spend the same quota); rerun later") from None
    finally:
        prov.close()


def refetch_prices(
    engine: sa.Engine | Callable[[], sa.Engine],
    settings: Settings,
    symbol: str,
    date_from: date | None,
    date_to: date | None = None,
    *,
    now: datetime,
    **kw,
) -> BatchResult:
    """``prices refetch``: fetch ``symbol``'s closes over ``date_from``..``date_to`` (default: the latest
    closed trading day) again and overwrite them, within the rate limits and the daily budget.

    For a cache filled with split-adjusted closes (Polygon before ``adjusted=false``): the
    overwritten closes are recorded by the close-change triggers (migration 0006), so the next
    portfolio-refresh recomputes the history they valued. Tracked as ``price_refetch``, so it
    never stands for the nightly batch portfolio-refresh waits for.
    """
    if date_from is None:
        raise UsageError("--from is required")
    try:
        sym = validation.symbol(symbol)
    except ValueError:
        raise UsageError(f"--symbol: bad symbol {symbol!r}") from None
    return run_symbol_batch(engine, settings, date_from=date_from, date_to=date_to or effective_trading_date(now), symbols=[sym],
                            now=now, refetch=True, **kw)


def _run(engine: sa.Engine, prov: Provider, limit: RateLimit, req: _Request, run_id: str | None = None) -> BatchResult:
    ranged = req.date_from is not None
    run = tracking.Run(engine, tracking.PRICE_REFETCH if req.refetch else tracking.SYMBOL_BATCH, req.target, run_id).start()
    req = dataclasses.replace(req, sleep=run.keep_alive(req.sleep))  # rate-limit and retry waits heartbeat
    stats = {
        "provider": prov.name,
        "mode": "refetch" if req.refetch else "range" if ranged else "nightly",
        "target_date": req.target.isoformat(),
        "date_from": req.date_from.isoformat() if ranged else None,
        "date_to": req.target.isoformat() if ranged else None,
        "symbols_requested": 0,
        "symbols_up_to_date": 0,
        "calls_planned": 0,
        "provider_calls": 0,
        "rows_upserted": 0,
        "rows_rejected": 0,
        "rows_rejected_new": 0,
        "symbols_skipped_unavailable": [],
        "rate_limit": limit.describe(),
    }
    batch = None
    try:
        with engine.connect() as conn:
            wanted = req.symbols if req.symbols is not None else symbols_needed(conn, req.date_from or req.target, req.target)
            health = fetch_memory.load_health(conn, wanted)
            stats["symbols_unavailable"] = sorted(s for s, h in health.items() if h.unavailable)
            if req.nightly:  # a symbol marked unavailable waits for its next attempt; --symbols and --from/--to always try
                skipped = sorted(s for s in wanted if not symbol_health.due(health.get(s), req.target))
                stats["symbols_skipped_unavailable"] = skipped
                wanted = [s for s in wanted if s not in set(skipped)]
            spent = tracking.calls_spent_today(conn, prov.name, req.now, exclude_run=run.run_id) if limit.per_day else 0
            if req.refetch:  # overwrite the range whatever the cache holds
                needs = fetch_plan.range_needs(wanted, {}, req.date_from, req.target)
            elif ranged:
                known = planning_sql.read_cached_days(conn, wanted, req.date_from, req.target)
                for sym, days in fetch_memory.rejected_days(conn, wanted, req.date_from, req.target).items():
                    known[sym] |= days  # a rejected bar is an answer, not a missing day
                needs = fetch_plan.range_needs(wanted, known, req.date_from, req.target)
            else:
                last = last_cached(conn, wanted, req.target)
                for sym, day in fetch_memory.last_rejected(conn, wanted, req.target).items():
                    last[sym] = max(day, last.get(sym, day))
                needs = fetch_plan.nightly_needs(wanted, last, req.target)
        the_plan = fetch_plan.plan(needs, prov.capabilities, req.latest)
        stats.update(symbols_requested=len(wanted), symbols_up_to_date=len(the_plan.up_to_date), calls_planned=the_plan.calls)
        bucket = TokenBucket(limit, name=prov.name, spent_today=spent, clock=req.clock, sleep=req.sleep)
        batch = _Batch(engine, prov, bucket, run, req, stats)
        log.info(
            "symbol_batch.plan",
            run_id=run.run_id,
            provider=prov.name,
            target_date=str(req.target),
            symbols=len(wanted),
            up_to_date=len(the_plan.up_to_date),
            range_calls=len(the_plan.range_calls),
            grouped_calls=len(the_plan.grouped_calls),
            daily_budget_left=bucket.remaining_today,
        )
        with progress_bar(f"symbol-batch {prov.name}", total=the_plan.calls, enabled=req.progress) as bar:
            batch.run_grouped(list(the_plan.grouped_calls), bar)
            if batch.out.stop_reason is None:
                batch.run_ranges(list(the_plan.range_calls), bar)
            else:  # the provider stopped answering during the grouped calls
                batch.out.deferred.extend(rc.symbol for rc in the_plan.range_calls)
        if req.nightly and batch.out.stop_reason is None:
            batch.run_splits(wanted)
        batch.find_suspected_splits({s: n.missing[0] for s, n in needs.items() if n}, req.target)
        stats["daily_budget_left"] = bucket.remaining_today
        _update_health(engine, batch.out, health, req)
        return _finish(run, batch, req)
    except Stopped as exc:  # a signal or --max-runtime: the call in flight was stored
        _finish_early(run, batch, stats, req.started, "interrupted", str(exc))
        raise
    except BaseException as exc:
        _finish_early(run, batch, stats, req.started, "failed", tracking.error_with_traceback(exc))
        raise


def _finish_early(run, batch, stats, started, status, error) -> None:
    stats = batch.snapshot_stats() if batch is not None else dict(stats)
    stats["duration_s"] = round(time.monotonic() - started, 3)
    run.finish(status, stats, error=redact(error)[: tracking.ERROR_CHARS])


def _update_health(engine: sa.Engine, o: _Outcome, health: dict, req: _Request) -> None:
    """Count the nightly failures of unknown or silent symbols, mark the dead, clear the living."""
    dead_kind = {s for s, e in o.errors.items() if isinstance(e, SymbolNotFound)} | (o.no_data - set(o.failed))
    recovered = sorted(((o.fetched - o.no_data) - set(o.failed)) & set(health))
    with engine.begin() as conn:
        for s in recovered:
            if health[s].unavailable:
                o.back.append(s)
                log.warning("symbol_batch.symbol_back", symbol=s, unavailable_since=str(health[s].unavailable_since))
        fetch_memory.clear_health(conn, recovered)
        if not req.nightly:
            return
        for s in sorted(dead_kind & o.attempted):
            before = health.get(s)
            error = o.failed.get(s) or "no close from the provider for the target date"
            after, marked = symbol_health.after_failure(before, s, req.target, req.now, error, req.unavailable_after)
            fetch_memory.save_health(conn, after)
            if before is not None and before.unavailable:
                o.expected_failures.add(s)  # known dead: a retry that fails changes nothing
            if marked:
                o.marked.append(s)
                log.warning("symbol_batch.symbol_unavailable", symbol=s, failures=after.consecutive_failures,
                            next_attempt_on=str(after.next_attempt_on), error=redact(error))


def batch_outcome(o: _Outcome) -> tuple[str, ExitCode, str | None]:
    """The one rule from what happened to the symbols to (run status, exit code, error line).

    ``completed`` means the batch went through every symbol it set out to fetch, whatever
    each one's fate; exit 1 names the symbols that failed. ``failed`` is for a batch that
    could not do its job as a whole: the provider unreachable (69), or every symbol's data
    unusable (65). A refused key (78) or an exhausted quota (75) stop it: ``aborted``.
    A symbol already marked unavailable that fails again is expected, not a failure.
    """
    if isinstance(o.stop_reason, ProviderRefused):
        return "aborted", o.stop_reason.exit_code, f"provider refused the request, run aborted: {o.stop_reason}"
    if isinstance(o.stop_reason, QuotaExhausted):
        deferred = len(set(o.deferred))
        return "aborted", o.stop_reason.exit_code, (
            f"daily quota exhausted, {deferred} symbol(s) deferred to the next run: {o.stop_reason}"
        )
    if o.unreachable:
        return "failed", ExitCode.UNAVAILABLE, (
            f"provider unreachable ({UNREACHABLE_AFTER} calls in a row failed after retries): {o.stop_reason}"
        )
    failed = _failed(o)
    if not failed:
        return "completed", ExitCode.OK, None
    errors = [o.errors[s] for s in failed if s in o.errors]
    line = f"{len(failed)} of {len(o.attempted)} symbol(s) failed: {', '.join(failed[:20])}"
    if not o.fetched and errors and all(isinstance(e, TransientProviderError) for e in errors):
        return "failed", ExitCode.UNAVAILABLE, line
    if not o.fetched and errors and all(isinstance(e, BadProviderData) for e in errors):
        return "failed", ExitCode.DATAERR, f"every symbol's data was unusable: {line}"
    return "completed", exit_code_for_failures(len(failed)), line


def _failed(o: _Outcome) -> list[str]:
    return sorted(set(o.failed) - o.expected_failures)


def batch_alert(o: _Outcome, status: str, code: int, error: str | None, ratio: float) -> str | None:
    """The alert line, or None: a failed or aborted run alerts; exit 1 only over ``ratio`` of the
    symbols tried; a symbol newly marked unavailable, or back, alerts once (whatever the exit code),
    and so does a close stored by this run that moved like a split with none on file."""
    parts = []
    if code not in (ExitCode.OK, ExitCode.PARTIAL):
        parts.append(error or status)
    elif code == ExitCode.PARTIAL:
        failed, tried = len(_failed(o)), max(1, len(o.attempted))
        if failed / tried > ratio:
            parts.append(f"{error} ({failed / tried:.0%} of the symbols tried, threshold {ratio:.0%})")
    if o.marked:
        parts.append(f"marked unavailable (retried with a growing backoff): {', '.join(sorted(o.marked))}")
    if o.back:
        parts.append(f"available again: {', '.join(sorted(o.back))}")
    if o.suspected:
        parts.append(f"possible unrecorded split: {', '.join(x.describe() for x in o.suspected)}")
    return "; ".join(parts) if parts else None


def _finish(run: tracking.Run, batch: _Batch, req: _Request) -> BatchResult:
    o = batch.out
    stats = batch.snapshot_stats()
    stats["duration_s"] = round(time.monotonic() - req.started, 3)
    stats["symbols_failed"] = _failed(o)
    stats["symbols_unavailable_failed_again"] = sorted(o.expected_failures)
    # every symbol the portfolios need that is marked unavailable now, until it comes back or nobody needs it
    stats["symbols_unavailable"] = sorted((set(stats.get("symbols_unavailable", [])) | set(o.marked)) - set(o.back))
    status, code, error = batch_outcome(o)
    error = redact(error)[:1000] if error else None
    alert = batch_alert(o, status, int(code), error, req.alert_failure_ratio)
    run.finish(status, stats, error=error)
    (log.info if code == ExitCode.OK else log.warning)(
        "symbol_batch.done",
        run_id=run.run_id,
        status=status,
        exit_code=int(code),
        **{k: stats[k] for k in ("symbols_requested", "symbols_fetched", "symbols_up_to_date", "provider_calls", "rows_upserted", "rows_rejected", "duration_s")},
        symbols_failed=len(stats["symbols_failed"]),
        symbols_deferred=len(stats["symbols_deferred"]),
    )
    return BatchResult(run.run_id, status, int(code), stats, run.target_date, error, redact(alert) if alert else None)
