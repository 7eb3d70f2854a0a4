"""The one place the wall clock is read (UTC). Commands read it once and pass ``now`` down."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
