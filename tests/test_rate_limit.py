"""Token bucket: spacing, bursts, refill while working, the daily budget; a fake clock, no real waits."""

import pytest

from snapshotter.config import Settings
from snapshotter.errors import ConfigError, QuotaExhausted
from snapshotter.providers.alphavantage import AlphaVantageProvider
from snapshotter.providers.base import rate_limit_for
from snapshotter.providers.csv_dir import CsvDirProvider
from snapshotter.providers.polygon import PolygonProvider
from snapshotter.core.rate_limit import RateLimit, TokenBucket
from tests.factories import FakeClock


def bucket(limit, **kw):
    clock = FakeClock()
    return TokenBucket(limit, clock=clock, sleep=clock.sleep, **kw), clock


def test_one_per_second_spaces_calls_a_second_apart():
    b, clock = bucket(RateLimit(per_second=1.0, burst=1))
    waits = [b.acquire() for _ in range(4)]
    assert waits == [0.0, 1.0, 1.0, 1.0]
    assert clock.sleeps == [1.0, 1.0, 1.0]
    assert b.spent == 4


def test_five_per_minute_burst_one_is_twelve_seconds_apart():
    b, clock = bucket(PolygonProvider.default_limit)
    for _ in range(3):
        b.acquire()
    assert clock.sleeps == [12.0, 12.0]


def test_burst_then_steady_rate():
    b, clock = bucket(RateLimit.per_minute(60, burst=3))
    for _ in range(5):
        b.acquire()
    assert clock.sleeps == [1.0, 1.0]


def test_time_spent_working_counts_towards_the_next_token():
    b, clock = bucket(RateLimit(per_second=1.0, burst=1))
    b.acquire()
    clock.t += 0.75  # parsing and writing took 0.75 s
    assert b.acquire() == pytest.approx(0.25)
    clock.t += 5  # a long pause does not bank more than the burst
    b.acquire()
    assert b.acquire() == pytest.approx(1.0)


def test_daily_budget_counts_earlier_runs_and_stops_without_waiting():
    b, clock = bucket(RateLimit(per_second=1.0, burst=1, per_day=4), spent_today=2, name="alphavantage")
    assert b.remaining_today == 2
    b.acquire()
    b.acquire()
    assert b.remaining_today == 0
    sleeps = list(clock.sleeps)
    with pytest.raises(QuotaExhausted, match="daily call budget of 4 spent \\(2 by earlier runs today, 2 by this run\\)"):
        b.acquire()
    assert clock.sleeps == sleeps and b.spent == 2


def test_unlimited_never_sleeps():
    b, clock = bucket(CsvDirProvider.default_limit)
    for _ in range(100):
        b.acquire()
    assert clock.sleeps == [] and b.remaining_today is None


def test_provider_defaults_are_the_free_tiers():
    assert AlphaVantageProvider.default_limit == RateLimit(per_second=1.0, burst=1, per_day=25)
    assert PolygonProvider.default_limit.per_second * 60 == pytest.approx(5)
    assert PolygonProvider.default_limit.per_day is None


def test_limits_are_configurable_from_settings():
    av = AlphaVantageProvider("k" * 8, "http://127.0.0.1:1", 1.0)
    try:
        limit = rate_limit_for(av, Settings(calls_per_minute="75", calls_per_day="unlimited"))
        assert limit.per_second == pytest.approx(1.25) and limit.per_day is None
        limit = rate_limit_for(av, Settings(calls_per_day="500"))
        assert limit.per_second == 1.0 and limit.per_day == 500
        for bad in (Settings(calls_per_minute="fast"), Settings(calls_per_day="-3"), Settings(calls_per_day="2.5")):
            with pytest.raises(ConfigError):
                rate_limit_for(av, bad)
    finally:
        av.close()
