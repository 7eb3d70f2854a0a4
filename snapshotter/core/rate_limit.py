"""A token bucket per provider: a steady call rate plus a per-day call budget.

Why a bucket and not a fixed sleep: a run that spends most of its time parsing and
writing should not also sleep a full interval before every call; the bucket only
waits for the part of the interval that has not already passed. Why a daily budget
here and not only the provider's own refusal: Alpha Vantage's free key allows 25
calls a day and says so with an HTTP 200 body, so the batch counts its own calls
(seeded with the calls earlier runs made today) and stops cleanly before it asks
for a refusal. Clock and sleep are injectable so tests never wait for real.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from snapshotter.errors import QuotaExhausted


@dataclass(frozen=True)
class RateLimit:
    """``per_second``: refill rate (None = unlimited); ``burst``: bucket size; ``per_day``: budget."""

    per_second: float | None = None
    burst: int = 1
    per_day: int | None = None

    @classmethod
    def per_minute(cls, calls: float, burst: int = 1, per_day: int | None = None) -> "RateLimit":
        return cls(per_second=calls / 60.0, burst=burst, per_day=per_day)

    def describe(self) -> str:
        rate = "unlimited" if self.per_second is None else f"{self.per_second * 60:g}/min (burst {self.burst})"
        day = "no daily budget" if self.per_day is None else f"{self.per_day}/day"
        return f"{rate}, {day}"


class TokenBucket:
    """Call :meth:`acquire` before every provider request (retries included)."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        name: str = "provider",
        spent_today: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.limit = limit
        self.name = name
        self.spent = 0  # calls this process made
        self.spent_before = spent_today  # calls earlier runs made today
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(limit.burst)
        self._stamp = clock()

    @property
    def remaining_today(self) -> int | None:
        if self.limit.per_day is None:
            return None
        return max(0, self.limit.per_day - self.spent_before - self.spent)

    def _refill(self) -> None:
        now = self._clock()
        if self.limit.per_second is not None:
            self._tokens = min(float(self.limit.burst), self._tokens + (now - self._stamp) * self.limit.per_second)
        self._stamp = now

    def acquire(self) -> float:
        """Take one token, sleeping as long as needed; returns the seconds waited.

        Raises QuotaExhausted, without waiting, once the daily budget is spent.
        """
        if self.remaining_today == 0:
            raise QuotaExhausted(
                f"{self.name}: daily call budget of {self.limit.per_day} spent "
                f"({self.spent_before} by earlier runs today, {self.spent} by this run)"
            )
        waited = 0.0
        if self.limit.per_second is not None:
            self._refill()
            if self._tokens < 1.0:
                waited = (1.0 - self._tokens) / self.limit.per_second
                self._sleep(waited)
                self._refill()
                self._tokens = max(self._tokens, 1.0)  # a sleep that returned early must not stall
            self._tokens -= 1.0
        self.spent += 1
        return waited
