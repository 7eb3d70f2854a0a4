from datetime import date, datetime, timezone

import pytest

from snapshotter.core.calendar import (
    close_time,
    effective_trading_date,
    is_half_day,
    is_trading_day,
    previous_trading_day,
    trading_days_between,
)

D = date.fromisoformat


@pytest.mark.parametrize(
    "day",
    ["2001-09-11", "2001-09-12", "2001-09-13", "2001-09-14", "2012-10-29", "2012-10-30", "2018-12-05", "2025-01-09",
     "2026-11-26", "2026-12-25", "2026-01-01", "2022-06-20", "2023-06-19", "2026-11-28", "2026-11-29"],
)
def test_closed_days(day):
    assert not is_trading_day(D(day))


@pytest.mark.parametrize("day", ["2001-09-17", "2012-10-31", "2018-12-06", "2025-01-10", "2021-06-18", "2026-11-27", "2026-11-25"])
def test_open_days(day):
    assert is_trading_day(D(day))


def test_juneteenth_only_from_2022():
    assert is_trading_day(D("2021-06-18"))  # Juneteenth 2021 (observed Friday) was a trading day
    assert is_trading_day(D("2020-06-19"))
    assert not is_trading_day(D("2022-06-20"))  # observed Monday
    assert not is_trading_day(D("2024-06-19"))


def test_half_day_closes_at_13():
    assert is_half_day(D("2026-11-27"))
    assert close_time(D("2026-11-27")).hour == 13
    assert not is_half_day(D("2026-11-25"))
    assert close_time(D("2026-11-25")).hour == 16


def test_trading_days_between_over_sept_2001():
    assert trading_days_between(D("2001-09-07"), D("2001-09-18")) == [D("2001-09-07"), D("2001-09-10"), D("2001-09-17"), D("2001-09-18")]
    assert trading_days_between(D("2026-11-25"), D("2026-11-24")) == []


def test_previous_trading_day():
    assert previous_trading_day(D("2001-09-17")) == D("2001-09-10")
    assert previous_trading_day(D("2026-11-30")) == D("2026-11-27")
    assert previous_trading_day(D("2012-10-31")) == D("2012-10-26")


def utc(s):
    return datetime.fromisoformat(s).replace(tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "now,expected",
    [
        # Winter (EST, UTC-5): the 16:00 close is 21:00 UTC.
        ("2026-11-25T20:59:00", "2026-11-24"),
        ("2026-11-25T21:00:00", "2026-11-25"),
        # Railway-style 02:00 UTC Thursday run is still Wednesday evening in New York.
        ("2026-11-26T02:00:00", "2026-11-25"),
        # Thanksgiving (closed) all day -> Wednesday.
        ("2026-11-26T23:00:00", "2026-11-25"),
        # Half day: closes 13:00 EST = 18:00 UTC.
        ("2026-11-27T17:59:00", "2026-11-25"),
        ("2026-11-27T18:00:00", "2026-11-27"),
        # Weekend -> Friday.
        ("2026-11-29T12:00:00", "2026-11-27"),
        # Summer (EDT, UTC-4): close is 20:00 UTC; 01:00 UTC next day is still that day's evening.
        ("2026-07-15T19:59:00", "2026-07-14"),
        ("2026-07-15T20:00:00", "2026-07-15"),
        ("2026-07-16T01:00:00", "2026-07-15"),
        # DST switch days: 2026-03-08 (spring forward, Sunday) and 2026-11-01 (fall back, Sunday).
        ("2026-03-09T20:00:00", "2026-03-09"),  # Monday after spring forward: EDT close 20:00 UTC
        ("2026-03-06T20:30:00", "2026-03-05"),  # Friday before, still EST: close 21:00 UTC
        ("2026-11-02T20:30:00", "2026-10-30"),  # Monday after fall back: EST close 21:00 UTC not yet
        ("2026-11-02T21:00:00", "2026-11-02"),
    ],
)
def test_effective_trading_date(now, expected):
    assert effective_trading_date(utc(now)) == D(expected)


def test_effective_trading_date_ignores_machine_timezone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert effective_trading_date(utc("2026-11-26T02:00:00")) == D("2026-11-25")
        naive = datetime(2026, 11, 26, 2, 0)  # naive means UTC
        assert effective_trading_date(naive) == D("2026-11-25")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_the_nyse_class_loaded_alone_is_holidays_nyse_and_imports_no_country():
    """calendar._nyse reads the NYSE module alone (start-up time): the same closures and half days
    as ``holidays.NYSE`` for every year it knows, and no other market or country imported."""
    import subprocess
    import sys

    import holidays

    from snapshotter.core import calendar

    years = range(1980, 2061)
    for category in ("public", "half_day"):
        assert sorted(calendar._nyse()(years=years, categories=(category,)).items()) == sorted(
            holidays.NYSE(years=years, categories=(category,)).items())
    probe = ("import sys; from datetime import date; from snapshotter.core.calendar import is_half_day, is_trading_day; "
             "assert not is_trading_day(date(2025, 1, 9)) and is_half_day(date(2026, 11, 27)); "
             "print(sorted(m for m in sys.modules if m.startswith(('holidays.countries', 'holidays.financial'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_nyse_class_falls_back_to_the_package_when_its_module_moved(monkeypatch):
    import sys

    import holidays

    from snapshotter.core import calendar

    monkeypatch.setattr(holidays, "__file__", "/nonexistent/holidays/__init__.py")
    assert calendar._nyse.__wrapped__() is holidays.NYSE
    assert "snapshotter._holidays_nyse" not in sys.modules or sys.modules["snapshotter._holidays_nyse"].NYSE is calendar._nyse()
