"""structlog set up once per process: JSON lines off a TTY, readable console on one.

Every event passes a redaction processor that replaces registered secrets (API
keys, the database password, webhook URLs) wherever they appear, so no code path
can leak one by formatting an exception or a URL.

One stream, one shape: the standard library's records (httpx's requests, alembic's
migrations, Python warnings such as SQLAlchemy's) go through the same processors
and renderer (``structlog.stdlib.ProcessorFormatter``), so they are JSON lines too,
redacted, and carry the run's context. A job run binds ``run_id`` and ``job``
(:func:`bind_run`, by the monitor) and ``target_date`` once the job has resolved it
(:func:`bind_target`) in structlog's context variables: every line of the run
carries them, including lines from the standard library and from worker threads
(which run in a copy of the caller's context, :func:`in_this_context`).
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Callable
from datetime import date
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


_HANDLER_NAME = "snapshotter"
# one line per HTTP request; one per plugin Alembic loads (it is imported only when used): shown at --log-level debug
QUIET_UNLESS_DEBUG = ("httpx", "httpcore", "alembic.runtime.plugins")


class _AlembicChatter(logging.Filter):
    """Alembic says which dialect it uses at INFO each time the revision is read; the
    migrations it runs ("Running upgrade 0004 -> 0005, ...") are what is worth a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.getMessage().startswith(("Context impl", "Will assume")))


def configure(fmt: str | None = None, level: str = "info") -> str:
    """Configure structlog, and route the standard library's loggers through the same
    processors; ``fmt`` is 'json', 'console' or None (auto by TTY). Calling it again
    replaces the previous set-up (and binds the ``sys.stderr`` of the moment)."""
    if fmt is None:
        # Console only for a person at a terminal; cron, CI and pipes get JSON lines.
        fmt = "console" if sys.stderr.isatty() and sys.stdout.isatty() else "json"
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = getattr(logging, level.upper())
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, _redact_processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(renderer, shared, numeric)
    return fmt


def _route_stdlib(renderer, shared: list, level: int) -> None:
    """One handler on the root logger renders stdlib records like structlog's own events."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact_processor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    migration = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, _AlembicChatter) for f in migration.filters):
        migration.addFilter(_AlembicChatter())
    for name in QUIET_UNLESS_DEBUG:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
    logging.captureWarnings(True)  # warnings.warn (SQLAlchemy's SAWarning, ...) as records of "py.warnings"


def bind_run(run_id: str, job: str) -> None:
    """Every log line from here on, in this context, names the run (the monitor calls it)."""
    structlog.contextvars.bind_contextvars(run_id=run_id, job=job)


def bind_target(target: date | None) -> None:
    """The run's target day, once the job has resolved it: added to the run the monitor bound
    (and unbinds with it). A job called outside a monitored run (a test, a script) binds nothing,
    so it leaves nothing behind in its caller's context."""
    if target is not None and "run_id" in structlog.contextvars.get_contextvars():
        structlog.contextvars.bind_contextvars(target_date=target.isoformat())


def unbind_run() -> None:
    structlog.contextvars.unbind_contextvars("run_id", "job", "target_date")


def in_this_context(fn: Callable) -> Callable:
    """``fn`` to run in another thread with a copy of this thread's context (the run's log fields)."""
    ctx = contextvars.copy_context()
    return lambda *args, **kwargs: ctx.run(fn, *args, **kwargs)


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
