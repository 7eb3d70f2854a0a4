"""Adapter for ``batch_run_tracking``: one row per run, heartbeats, and dead-run cleanup."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import date, timedelta
from typing import Callable

import sqlalchemy as sa

from snapshotter.data.schema import batch_run_tracking as brt
from snapshotter.data.store import utcnow

SYMBOL_BATCH = "symbol_batch"
PORTFOLIO_REFRESH = "portfolio_refresh"
STALE_AFTER = timedelta(minutes=10)
KEEPALIVE_S = 60.0  # a long wait heartbeats this often, far inside STALE_AFTER


class Run:
    """A tracked run; heartbeats are throttled so hot loops can call them freely."""

    def __init__(self, engine: sa.Engine, batch_type: str, target_date: date | None, run_id: str | None = None):
        self.engine = engine
        self.batch_type = batch_type
        self.target_date = target_date
        self.run_id = run_id or uuid.uuid4().hex
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

    def finish(self, status: str, stats: dict | None = None, error: str | None = None) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                brt.update()
                .where(brt.c.run_id == self.run_id)
                .values(status=status, finished_at=now, heartbeat_at=now, stats=stats or {}, error=error)
            )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead_runs(conn: sa.Connection, batch_type: str | None = None) -> int:
    """Mark ``running`` rows of killed processes ``interrupted`` so they never count as done.

    Dead means: heartbeat older than STALE_AFTER, or same host and the pid is gone.
    """
    q = sa.select(brt.c.id, brt.c.host, brt.c.pid, brt.c.heartbeat_at).where(brt.c.status == "running")
    if batch_type:
        q = q.where(brt.c.batch_type == batch_type)
    now = utcnow()
    me = socket.gethostname()
    dead = []
    for row in conn.execute(q):
        beat = row.heartbeat_at
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=now.tzinfo)
        stale = beat is None or now - beat > STALE_AFTER
        gone = row.host == me and row.pid is not None and row.pid != os.getpid() and not _pid_alive(row.pid)
        if stale or gone:
            dead.append(row.id)
    if dead:
        conn.execute(
            brt.update()
            .where(brt.c.id.in_(dead), brt.c.status == "running")
            .values(status="interrupted", finished_at=now, error="process died without finishing (stale heartbeat)")
        )
    return len(dead)


def batch_completed(conn: sa.Connection, batch_type: str, target_date: date) -> bool:
    return (
        conn.execute(
            sa.select(sa.literal(1))
            .where(brt.c.batch_type == batch_type, brt.c.target_date == target_date, brt.c.status == "completed")
            .limit(1)
        ).first()
        is not None
    )


def last_runs(conn: sa.Connection, limit: int = 5) -> list[dict]:
    rows = conn.execute(sa.select(brt).order_by(brt.c.started_at.desc(), brt.c.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]
