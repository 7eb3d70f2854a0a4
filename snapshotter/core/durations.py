"""Durations on the command line ('90s', '5m', '1h30m', plain seconds), and back to text. Pure."""

from __future__ import annotations

import re

UNITS = {"h": 3600, "m": 60, "s": 1}
MAX_SECONDS = 7 * 24 * 3600  # a week: longer is a typo, and would overflow a deadline


def parse_duration(value: str) -> float:
    """Seconds in ``value``; ValueError (with the accepted forms) when it is not a duration."""
    text = value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{value!r} is not a duration (e.g. 90s, 5m, 1h30m)")
        seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if seconds > MAX_SECONDS:
        raise ValueError(f"{value!r} is longer than a week")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` the way a person writes it on the command line: 7200 -> '2h', 5400 -> '1h30m',
    2 -> '2s', 1.5 -> '1.5s' (parse_duration reads it back to the same number)."""
    whole = int(seconds)
    if whole != seconds or seconds < 1:
        return f"{seconds:g}s"
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((h, "h"), (m, "m"), (s, "s")) if n) or "0s"
