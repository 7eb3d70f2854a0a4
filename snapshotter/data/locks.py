"""One snapshot writer at a time: a PostgreSQL advisory lock, or a file lock for SQLite.

Both locks belong to the process: the server drops an advisory lock when the
session ends and the kernel drops an ``flock`` when the process dies, so a killed
run never leaves a lock behind (no stale-lock cleanup needed). In-memory SQLite
databases are private to the process and need no lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from contextlib import contextmanager

import sqlalchemy as sa

from snapshotter.errors import LockHeld
from snapshotter.ops.logs import get_logger
from snapshotter.ops.signals import STOP, StopFlag

log = get_logger(__name__)
LOCK_NAME = "snapshotter.portfolio_snapshots"


def advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def run_lock(engine: sa.Engine, name: str = LOCK_NAME, wait: bool = False, stop: StopFlag = STOP, poll: float = 1.0):
    if engine.dialect.name == "postgresql":
        with _pg_lock(engine, name, wait, stop, poll):
            yield
    else:
        with _file_lock(engine, name, wait, stop, poll):
            yield


def _held(name: str) -> LockHeld:
    return LockHeld(f"another run holds the lock {name!r}; rerun later or pass --wait-for-lock")


@contextmanager
def _pg_lock(engine, name, wait, stop, poll):
    key = advisory_key(name)
    conn = engine.connect()
    held = False
    try:
        while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            conn.rollback()
            if not wait:
                raise _held(name)
            log.debug("lock.waiting", name=name)
            stop.sleep(poll)
        held = True
        conn.commit()
        log.debug("lock.acquired", name=name)
        yield
    finally:
        try:
            if held:  # an error taking it (a role without the right) must surface, not a failed unlock
                conn.rollback()
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        finally:
            conn.close()


@contextmanager
def _file_lock(engine, name, wait, stop, poll):
    path = engine.url.database
    if not path or path == ":memory:":
        yield
        return
    # One file per lock name (the snapshot lock keeps "<db>.lock"): portfolio-refresh holds
    # its lock while it waits for the symbol batch, so the two must not share a file.
    suffix = "lock" if name == LOCK_NAME else f"{name.rsplit('.', 1)[-1]}.lock"
    fd = os.open(f"{os.path.abspath(path)}.{suffix}", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise _held(name) from None
                log.debug("lock.waiting", name=name)
                stop.sleep(poll)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {time.time():.0f}\n".encode())
        log.debug("lock.acquired", name=name)
        yield
    finally:
        os.close(fd)  # closing releases the flock
