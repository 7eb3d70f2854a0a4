"""Durations on the command line ('90s', '5m', '1h30m', plain seconds). Pure."""

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
