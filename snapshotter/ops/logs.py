"""structlog set up once per process: JSON lines off a TTY, readable console on one.

Every event passes a redaction processor that replaces registered secrets (API
keys, the database password, webhook URLs) wherever they appear, so no code path
can leak one by formatting an exception or a URL.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Iterable

import structlog

_SECRETS: set[str] = set()
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?=@)", re.I)
_QUERY_SECRET = re.compile(r"(?P<k>(?:api_?key|apikey|token|access_token|key)=)(?P<v>[^&\s\"']+)", re.I)


def register_secrets(values: Iterable[str]) -> None:
    for v in values:
        if v and len(v) >= 4:
            _SECRETS.add(v)


def redact(text: str) -> str:
    """Remove registered secrets, URL passwords and key= query values from a string."""
    for s in sorted(_SECRETS, key=len, reverse=True):
        if s in text:
            text = text.replace(s, "***")
    text = _URL_PASSWORD.sub(lambda m: m.group("scheme") + "***", text)
    return _QUERY_SECRET.sub(lambda m: m.group("k") + "***", text)


def _redact_value(v: Any) -> Any:
    if isinstance(v, str):
        return redact(v)
    if isinstance(v, dict):
        return {k: _redact_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_redact_value(x) for x in v)
    return v


def _redact_processor(_logger, _name, event_dict):
    return {k: _redact_value(v) for k, v in event_dict.items()}


def configure(fmt: str | None = None, level: str = "info") -> str:
    """Configure structlog; ``fmt`` is 'json', 'console' or None (auto by TTY)."""
    if fmt is None:
        # Console only for a person at a terminal; cron, CI and pipes get JSON lines.
        fmt = "console" if sys.stderr.isatty() and sys.stdout.isatty() else "json"
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    return fmt


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
