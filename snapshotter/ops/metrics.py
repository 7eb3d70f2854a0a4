"""A job's last-run metrics, pushed to a Prometheus Pushgateway when it ends.

Prometheus scrapes services; a batch job is gone before any scrape, so the
documented convention is to push its result to a Pushgateway once, at the end,
and let Prometheus scrape that. With ``PUSHGATEWAY_URL`` set, every monitored job
run (not dry runs) pushes, in the job's group ``/metrics/job/<command>``:

* ``snapshotter_last_run_duration_seconds``
* ``snapshotter_last_run_exit_code``
* ``snapshotter_last_run_finished_timestamp_seconds``
* ``snapshotter_last_run_snapshots_created``
* ``snapshotter_last_run_symbols_failed``
* ``snapshotter_last_success_timestamp_seconds``, only when the exit code is 0

It POSTs (``pushadd_to_gateway``): a push replaces the metrics it carries and
keeps the others, so the last success timestamp survives the failed runs after
it, and ``time() - snapshotter_last_success_timestamp_seconds`` is the alert
("no successful symbol batch for 26 hours"). There is no ``instance`` label: the
job is one service-level batch, wherever it ran; grouped by host or pod (a new
name every Kubernetes run), every run would leave a group of its own behind with
its stale values.

Like the pings, this never raises and never changes the exit code: a failure is
a ``metrics.push_failed`` warning (the error, never the URL: it is a secret,
credentials included; ``https://user:pass@host`` is sent as basic auth).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from snapshotter.ops import logs

log = logs.get_logger("snapshotter.ops.metrics")
TIMEOUT_S = 5.0
PREFIX = "snapshotter_"


def push_run_metrics(settings, job: str, exit_code: int, summary: dict | None, duration_s: float, finished_at: float) -> bool:
    """Push the run's metrics; True when the Pushgateway accepted them, False when unset or failed."""
    url = getattr(settings, "pushgateway_url", None)
    if not url:
        return False
    try:
        from prometheus_client import CollectorRegistry, Gauge
        from prometheus_client.exposition import basic_auth_handler, default_handler, pushadd_to_gateway

        logs.register_secrets([url])
        registry = CollectorRegistry()  # this run's metrics only, never the process's default registry

        def gauge(name: str, doc: str, value: float) -> None:
            Gauge(PREFIX + name, doc, registry=registry).set(value)

        summary = summary or {}
        failed = summary.get("symbols_failed")
        gauge("last_run_duration_seconds", "Wall-clock duration of the last run.", duration_s)
        gauge("last_run_exit_code", "Exit code of the last run (0 success, 1 partial, 75 rerun later, ...).", exit_code)
        gauge("last_run_finished_timestamp_seconds", "When the last run ended (Unix time).", finished_at)
        gauge("last_run_snapshots_created", "Portfolio snapshots the last run created.", int(summary.get("snapshots_created") or 0))
        gauge("last_run_symbols_failed", "Symbols the last run failed to fetch.",
              len(failed) if isinstance(failed, (list, tuple)) else int(failed or 0))
        if exit_code == 0:
            gauge("last_success_timestamp_seconds", "When the last successful (exit 0) run ended (Unix time).", finished_at)

        gateway, handler = _gateway(url, basic_auth_handler, default_handler)
        pushadd_to_gateway(gateway, job=job, registry=registry, timeout=TIMEOUT_S, handler=handler)
        log.debug("metrics.pushed", exit_code=exit_code)
        return True
    except Exception as exc:  # noqa: BLE001 - metrics never fail a job
        log.warning("metrics.push_failed", error=_describe(exc))
        return False


def _gateway(url: str, basic_auth_handler, default_handler):
    """The URL without credentials, and the handler that sends them as basic auth."""
    parts = urlsplit(url)
    if not parts.username:
        return url, default_handler
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    user, password = parts.username, parts.password or ""

    def handler(url, method, timeout, headers, data):
        return basic_auth_handler(url, method, timeout, headers, data, username=user, password=password)

    return urlunsplit(parts._replace(netloc=netloc)), handler


def _describe(exc: BaseException) -> str:
    """The error without the URL: urllib's HTTPError and URLError name neither."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return f"HTTP {code}"
    reason = getattr(exc, "reason", None)
    text = f"{type(exc).__name__}: {reason if reason is not None else exc}"
    return logs.redact(text.splitlines()[0])
