"""Adapter for ``batch_run_tracking``: one row per run, heartbeats, and dead-run cleanup."""

from __future__ import annotations

import os
import socket
import time
import traceback
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Callable

import sqlalchemy as sa

from snapshotter.data.schema import batch_run_tracking as brt
from snapshotter.clock import utcnow
from snapshotter.errors import Stopped
from snapshotter.ops.logs import redact

SYMBOL_BATCH = "symbol_batch"
PRICE_REFETCH = "price_refetch"  # snapshotter prices refetch: not a nightly batch (portfolio-refresh does not wait for it)
FETCHES = (SYMBOL_BATCH, PRICE_REFETCH)  # runs that spend provider calls
PORTFOLIO_REFRESH = "portfolio_refresh"
PORTFOLIO_BACKFILL = "portfolio_backfill"
PORTFOLIO_RECOMPUTE = "portfolio_recompute"  # snapshotter recompute: invalidated history only
PRUNE = "prune"  # snapshotter prune: retention; nothing waits for it or counts it as a snapshot run
STALE_AFTER = timedelta(minutes=10)
ERROR_CHARS = 8000  # a failed run's error: its one line, then the traceback
KEEPALIVE_S = 60.0  # a long wait heartbeats this often, far inside STALE_AFTER


class Run:
    """A tracked run; heartbeats are throttled so hot loops can call them freely."""

    def __init__(self, engine: sa.Engine, batch_type: str, target_date: date | None, run_id: str | None = None):
        self.engine = engine
        self.batch_type = batch_type
        self.target_date = target_date
        self.run_id = run_id or str(uuid.uuid4())  # the canonical UUID form, as the monitor's
        self._last_beat = None

    def start(self) -> "Run":
        now = utcnow()
        with self.engine.begin() as conn:
            mark_dead_runs(conn, self.batch_type)
            conn.execute(
                brt.insert().values(
                    run_id=self.run_id,
                    batch_type=self.batch_type,
                    target_date=self.target_date,
                    status="running",
                    started_at=now,
                    heartbeat_at=now,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    stats={},
                )
            )
        self._last_beat = now
        return self

    def heartbeat(self, stats: dict | None = None, force: bool = False) -> None:
        now = utcnow()
        if not force and self._last_beat and now - self._last_beat < timedelta(seconds=15):
            return
        values = {"heartbeat_at": now}
        if stats is not None:
            values["stats"] = stats
        with self.engine.begin() as conn:
            conn.execute(brt.update().where(brt.c.run_id == self.run_id).values(**values))
        self._last_beat = now

    def keep_alive(self, sleep: Callable[[float], None]) -> Callable[[float], None]:
        """Wrap ``sleep`` so a wait longer than a minute (a capped Retry-After, a long
        --poll-interval) still heartbeats: a live run must never look dead."""

        def sleep_alive(seconds: float) -> None:
            left = seconds
            while left > KEEPALIVE_S:
                sleep(KEEPALIVE_S)
                left -= KEEPALIVE_S
                self.heartbeat(force=True)
            if left > 0:
                sleep(left)

        return sleep_alive

    def finish_raised(self, exc: BaseException, stats: dict, started: float) -> None:
        """The run ended by ``exc``: ``interrupted`` for a stop (a signal, --max-runtime), else
        ``failed`` with the traceback; ``stats`` get the duration since ``started`` (monotonic)."""
        stats["duration_s"] = round(time.monotonic() - started, 3)
        if isinstance(exc, Stopped):
            self.finish("interrupted", stats, str(exc))
        else:
            self.finish("failed", stats, error_with_traceback(exc))

    def finish(self, status: str, stats: dict | None = None, error: str | None = None) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                brt.update()
                .where(brt.c.run_id == self.run_id)
                .values(status=status, finished_at=now, heartbeat_at=now, stats=stats or {}, error=error)
            )


def record_stats(conn: sa.Connection, run_id: str, stats: dict) -> None:
    """A run's stats written in the caller's transaction: what a chunk did, committed with it
    (a heartbeat has its own transaction, and a crash between the two would lose the record)."""
    conn.execute(brt.update().where(brt.c.run_id == run_id).values(stats=stats, heartbeat_at=utcnow()))


def unfinished_stats(conn: sa.Connection, batch_type: str, before_run: str) -> dict | None:
    """The stats of the latest run of ``batch_type`` started before ``before_run``, when it did not complete."""
    me = sa.select(brt.c.id).where(brt.c.run_id == before_run).scalar_subquery()
    row = conn.execute(sa.select(brt.c.status, brt.c.stats).where(brt.c.batch_type == batch_type, brt.c.id < me)
                       .order_by(brt.c.id.desc()).limit(1)).first()
    return dict(row.stats or {}) if row is not None and row.status != "completed" else None


def error_with_traceback(exc: BaseException) -> str:
    """A failed run's ``error``: the one line an operator reads first, then the traceback (redacted)."""
    line = f"{type(exc).__name__}: {exc}".splitlines()[0]
    trace = "".join(traceback.format_exception(exc))
    return redact(f"{line}\n{trace}")[:ERROR_CHARS]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_dead(row, now: datetime, host: str | None = None, alive=pid_alive) -> bool:
    """The one rule for a dead run: ``running`` with a heartbeat older than STALE_AFTER (or
    none), or ``running`` on this host (``host``) under a pid that no longer exists.

    ``row`` maps status, heartbeat_at, host and pid. Used by every job (to mark the dead
    rows of its kind ``interrupted``) and by ``status`` (to flag them).
    """
    if row["status"] != "running":
        return False
    beat = row["heartbeat_at"]
    if beat is None:
        return True
    if beat.tzinfo is None:
        beat = beat.replace(tzinfo=timezone.utc)
    if now - beat > STALE_AFTER:
        return True
    me = host or socket.gethostname()
    pid = row["pid"]
    return row["host"] == me and pid is not None and pid != os.getpid() and not alive(pid)


def mark_dead_runs(conn: sa.Connection, batch_type: str | None = None) -> int:
    """Mark ``running`` rows of killed processes ``interrupted`` so they never count as done."""
    q = sa.select(brt.c.id, brt.c.status, brt.c.host, brt.c.pid, brt.c.heartbeat_at).where(brt.c.status == "running")
    if batch_type:
        q = q.where(brt.c.batch_type == batch_type)
    now = utcnow()
    dead = [row.id for row in conn.execute(q) if is_dead(row._mapping, now)]
    if dead:
        conn.execute(
            brt.update()
            .where(brt.c.id.in_(dead), brt.c.status == "running")
            .values(status="interrupted", finished_at=now, error="process died without finishing (stale heartbeat)")
        )
    return len(dead)


def batch_completed(conn: sa.Connection, batch_type: str, target_date: date) -> bool:
    """A ``completed`` batch for ``target_date`` or a later day: a batch brings the cache up to
    its target, so one completed for Tuesday covers a refresh of Monday."""
    return (
        conn.execute(
            sa.select(sa.literal(1))
            .where(brt.c.batch_type == batch_type, brt.c.target_date >= target_date, brt.c.status == "completed")
            .limit(1)
        ).first()
        is not None
    )



def calls_spent_today(conn: sa.Connection, provider: str, now: datetime, exclude_run: str | None = None) -> int:
    """Provider calls recorded by today's (UTC) symbol-batch and refetch runs, for the daily budget."""
    midnight = datetime(now.year, now.month, now.day, tzinfo=timezone.utc)
    q = sa.select(brt.c.run_id, brt.c.stats).where(brt.c.batch_type.in_(FETCHES), brt.c.started_at >= midnight)
    total = 0
    for run_id, stats in conn.execute(q):
        if run_id != exclude_run and isinstance(stats, dict) and stats.get("provider") == provider:
            total += int(stats.get("provider_calls") or 0)
    return total
