"""Alerts and monitoring pings: a thin adapter over httpx that never fails a job.

* ``send_alert`` posts ``{"text": ...}`` to ``ALERT_WEBHOOK_URL``, the body a
  Slack incoming webhook takes (Mattermost and Discord's ``/slack`` endpoint
  take it too).
* ``ping_start`` / ``ping_finish`` follow the healthchecks.io convention:
  ``POST <HEALTHCHECK_URL>/start?rid=RUN`` when a job begins and
  ``POST <HEALTHCHECK_URL>/<exit code>?rid=RUN`` with the JSON summary as the
  body when it ends. A ``HEALTHCHECK_URL`` that contains ``{state}``, ``{rid}``
  or ``{exit_code}`` is a template instead (Cronitor-style): the placeholders
  are filled in and nothing is appended (see :func:`ping_url`).

Every call has a short timeout, is retried a little (transport errors, 429 and
5xx), and never raises: a failure is logged as a warning and the function
returns False, so monitoring can never change a job's exit code. Both URLs are
secrets: they are registered for redaction and never logged.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from snapshotter.ops import logs

log = logs.get_logger("snapshotter.ops.notify")

PLACEHOLDERS = ("{state}", "{rid}", "{exit_code}")
STATE_START, STATE_COMPLETE, STATE_FAIL = "run", "complete", "fail"


@dataclass(frozen=True)
class Policy:
    """How hard to try: per-request timeout, attempts, backoff, and a total budget."""

    timeout: float = 5.0  # seconds, for each of connect / read / write
    attempts: int = 3
    backoff: float = 0.5  # first wait between attempts; doubles, capped at 4 s
    budget: float = 12.0  # no new attempt starts after this many seconds


POLICY = Policy()


class _Retryable(Exception):
    """A response worth another try (429, 5xx); carries the status, never the URL."""

    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


class _Rejected(Exception):
    """A 4xx other than 429: trying again would not help."""

    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


class _RedactFilter(logging.Filter):
    """httpx logs every request URL at INFO; make sure a secret URL never leaves that way."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg = logs.redact(record.getMessage())
            record.args = ()
        except Exception:  # noqa: BLE001 - a log filter must not break logging
            pass
        return True


def _install_log_filters() -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactFilter) for f in logger.filters):
            logger.addFilter(_RedactFilter())


_install_log_filters()


def canonical_rid(run_id: str) -> str:
    """The run id as healthchecks.io wants it: a UUID in canonical lowercase form.

    ``batch_run_tracking.run_id`` is ``uuid4().hex``; any string that parses as a
    UUID is rewritten as ``xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``, anything else is
    sent as it is.
    """
    try:
        return str(uuid.UUID(str(run_id)))
    except (ValueError, AttributeError, TypeError):
        return str(run_id)


def is_template(url: str) -> bool:
    return any(p in url for p in PLACEHOLDERS)


def ping_url(base: str, run_id: str, exit_code: int | None = None) -> str:
    """The URL of a start ping (``exit_code`` None) or of a finish ping.

    healthchecks.io style (no placeholder in ``base``): ``/start`` or
    ``/<exit_code>`` is appended to the path and ``rid`` added to the query,
    keeping any query the base already has (``?create=1`` of slug URLs).

    Template style: ``{state}`` becomes ``run`` (start), ``complete`` (exit 0) or
    ``fail`` (any other exit code); ``{rid}`` the canonical run id; ``{exit_code}``
    the exit code, or nothing at start. Query parameters left empty by the
    substitution are dropped, so ``&status_code={exit_code}`` vanishes from the
    start ping.
    """
    rid = canonical_rid(run_id)
    if is_template(base):
        state = STATE_START if exit_code is None else (STATE_COMPLETE if exit_code == 0 else STATE_FAIL)
        values = {"{state}": state, "{rid}": rid, "{exit_code}": "" if exit_code is None else str(int(exit_code))}
        text = base
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        url = httpx.URL(text)
        kept = [(k, v) for k, v in url.params.multi_items() if v != ""]
        return str(url.copy_with(query=None).copy_merge_params(kept)) if kept else str(url.copy_with(query=None))
    url = httpx.URL(base)
    suffix = "start" if exit_code is None else str(int(exit_code))
    path = url.path.rstrip("/") + "/" + suffix
    return str(url.copy_with(path=path).copy_add_param("rid", rid))


def _post(kind: str, url: str, body: bytes, content_type: str | None, policy: Policy | None = None) -> bool:
    """POST with retries; True on a 2xx. Logs (without the URL) and swallows every failure."""
    policy = policy or POLICY
    logs.register_secrets([url])
    headers = {"User-Agent": "snapshotter"}
    if content_type:
        headers["Content-Type"] = content_type
    attempts = 0

    def once() -> int:
        nonlocal attempts
        attempts += 1
        with httpx.Client(timeout=httpx.Timeout(policy.timeout), follow_redirects=True) as client:
            resp = client.post(url, content=body, headers=headers)
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retryable(resp.status_code)
        if resp.status_code >= 400:
            raise _Rejected(resp.status_code)
        return resp.status_code

    try:
        retrying = Retrying(
            stop=stop_after_attempt(max(1, policy.attempts)) | stop_after_delay(policy.budget),
            wait=wait_exponential(multiplier=policy.backoff, min=policy.backoff, max=4),
            retry=retry_if_exception_type((httpx.TransportError, _Retryable)),
            reraise=True,
        )
        status = retrying(once)
    except Exception as exc:  # noqa: BLE001 - monitoring must never fail the job
        _warn(kind, attempts, exc)
        return False
    try:
        log.debug("notify.sent", kind=kind, status=status, attempts=attempts)
    except Exception:  # noqa: BLE001
        pass
    return True


def _warn(kind: str, attempts: int, exc: BaseException) -> None:
    """Log a failure without the URL; even a broken log stream must not raise from here."""
    try:
        log.warning("notify.failed", kind=kind, attempts=attempts, error=logs.redact(_describe(exc)))
    except Exception:  # noqa: BLE001
        pass


def _describe(exc: BaseException) -> str:
    """Error text without the request URL (httpx puts it in some messages)."""
    if isinstance(exc, (_Retryable, _Rejected)):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return f"{type(exc).__name__}: no answer within the timeout"
    if isinstance(exc, httpx.HTTPError):
        return type(exc).__name__
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _register(settings) -> None:
    logs.register_secrets([u for u in (getattr(settings, "alert_webhook_url", None), getattr(settings, "healthcheck_url", None)) if u])


def alert_text(text: str, **fields: Any) -> str:
    """The message posted: ``text``, then one ``key: value`` line per field (None skipped)."""
    lines = [str(text)]
    lines += [f"{k}: {v}" for k, v in fields.items() if v is not None]
    return logs.redact("\n".join(lines))


def send_alert(settings, text: str, **fields: Any) -> bool:
    """POST ``{"text": ...}`` to ALERT_WEBHOOK_URL; a no-op (False) when it is unset.

    Secrets are redacted from the text too: an alert leaves for a third party.
    """
    try:
        url = getattr(settings, "alert_webhook_url", None)
        if not url:
            return False
        _register(settings)
        body = json.dumps({"text": alert_text(text, **fields)}).encode()
        return _post("alert", url, body, "application/json")
    except Exception as exc:  # noqa: BLE001
        _warn("alert", 0, exc)
        return False


def ping_start(settings, run_id: str) -> bool:
    """Tell the monitor a run began (POST, empty body); a no-op (False) without HEALTHCHECK_URL."""
    try:
        base = getattr(settings, "healthcheck_url", None)
        if not base:
            return False
        _register(settings)
        return _post("ping_start", ping_url(base, run_id), b"", None)
    except Exception as exc:  # noqa: BLE001
        _warn("ping_start", 0, exc)
        return False


def ping_finish(settings, run_id: str, exit_code: int, summary: dict | None = None) -> bool:
    """Report the run's exit code with its JSON summary as the body."""
    try:
        base = getattr(settings, "healthcheck_url", None)
        if not base:
            return False
        _register(settings)
        body = logs.redact(json.dumps(summary or {}, default=str, sort_keys=True)).encode()
        return _post("ping_finish", ping_url(base, run_id, int(exit_code)), body, "application/json")
    except Exception as exc:  # noqa: BLE001
        _warn("ping_finish", 0, exc)
        return False
