"""Monitoring of one job run: the start/finish pings and at most one alert.

The CLI's ``command(job=...)`` decorator is the only caller: it creates a
:class:`JobMonitor` before the job command's body runs, the body passes
``monitor.run_id`` to the job (so ``batch_run_tracking.run_id``, the pings and
the alert all carry the same id) and reports the job's summary back with
:meth:`JobMonitor.report`; the decorator calls :meth:`JobMonitor.finish` with
the process exit code on every way out (return, SnapshotterError, Stopped,
crash). Nothing here raises or changes an exit code (:mod:`snapshotter.ops.notify`
swallows every HTTP failure; this module swallows the rest).

Rules (README "Alerts and monitoring"):

* ``ping_start`` when the command body begins; ``ping_finish`` with the exit
  code and the JSON summary when it ends, whatever the code.
* At most one alert per run: ``<job> <target date> exited <code>: <one line>``
  plus the run id. A job that returns a result decides (``result.alert``): a
  failed or aborted run; exit 1 only when more than ``--alert-failure-ratio`` of
  the portfolios or symbols failed; a symbol newly marked unavailable or back
  (even on exit 0). A job that raised alerts on any non-zero exit. The ping
  always tells the monitor the exit code.
* With ``PUSHGATEWAY_URL``, the run's metrics go to a Prometheus Pushgateway after
  the finish ping (:mod:`snapshotter.ops.metrics`).
* ``--dry-run`` runs are not monitored: they write nothing, and a ping would
  tell the monitor the nightly job ran.
"""

from __future__ import annotations

import time
import uuid
from datetime import date
from typing import Any

import sqlalchemy as sa

from snapshotter.clock import utcnow
from snapshotter.ops import logs, metrics, notify
from snapshotter.data.schema import batch_run_tracking as brt

log = logs.get_logger("snapshotter.ops.monitoring")


class JobMonitor:
    def __init__(self, settings, job: str, enabled: bool = True):
        self.settings = settings
        self.job = job
        self.enabled = enabled
        self.run_id = str(uuid.uuid4())  # canonical form: tracking row, logs, pings and alert spell it alike
        self.target: date | None = None  # set by the command once it knows it
        self.summary: dict | None = None
        self.error: str | None = None  # one line, for a non-zero exit the command returned
        self.alert_line: str | None = None  # replaces ``error`` in the alert (failure ratio)
        self._started = time.monotonic()  # reset by start(); the run's duration for the metrics

    # --- called by the command body -------------------------------------------------

    def report(self, result) -> None:
        """A job's result: its summary, its target, its error line and its alert line (exit 1
        alerts only when the job gave one: the snapshot jobs over --alert-failure-ratio)."""
        self.summary = dict(result.summary())
        self.target = result.target
        self.error = result.error
        self.alert_line = result.alert

    # --- called by the decorator ------------------------------------------------------

    def start(self) -> None:
        self._started = time.monotonic()
        logs.bind_run(self.run_id, self.job)  # every log line of the run names it, dry runs too
        if not self.enabled:
            return
        try:
            log.info("job.started")
            notify.ping_start(self.settings, self.run_id)
        except Exception:  # noqa: BLE001 - monitoring never fails a job
            pass

    def finish(self, exit_code: int, error: str | None = None, engine: sa.Engine | None = None) -> dict | None:
        """Send the alert (if due) and the finish ping; returns the summary sent. The run's
        log context ends here."""
        try:
            if not self.enabled:
                return None
            error = error or self.error
            summary = self.final_summary(exit_code, error, engine)
            if self.alert_due(exit_code):
                text = self.alert_text(exit_code, summary, error)
                log.warning("job.alert", exit_code=exit_code, text=text)
                notify.send_alert(self.settings, text, run_id=notify.canonical_rid(self.run_id))
            notify.ping_finish(self.settings, self.run_id, exit_code, summary)
            metrics.push_run_metrics(self.settings, self.job, exit_code, summary,
                                     time.monotonic() - self._started, utcnow().timestamp())
            log.info("job.finished", exit_code=exit_code)
            return summary
        except Exception:  # noqa: BLE001
            return None
        finally:
            logs.unbind_run()

    def alert_due(self, exit_code: int) -> bool:
        """A job that reported its result alerts when it gave an alert line (its own rule:
        a failure ratio, a dead symbol marked or back, a failed run); one that raised alerts
        on any non-zero exit."""
        if self.summary is not None:
            return self.alert_line is not None
        return exit_code != 0

    def alert_text(self, exit_code: int, summary: dict, error: str | None) -> str:
        target = summary.get("target_date")
        head = f"{self.job} {target}" if target else self.job
        line = (self.alert_line or error or f"exit code {exit_code}").splitlines()[0]
        return f"{head} exited {exit_code}: {line}"

    def final_summary(self, exit_code: int, error: str | None, engine: sa.Engine | None) -> dict:
        """The command's summary, or (when the job raised) what the tracking row recorded."""
        base: dict[str, Any] = {
            "job": self.job,
            "run_id": self.run_id,
            "exit_code": int(exit_code),
            "error": logs.redact(error) if error else None,
            "target_date": self.target.isoformat() if self.target else None,
        }
        if self.summary is not None:
            return {**base, **self.summary, "job": self.job, "exit_code": int(exit_code)}
        row = self._tracking_row(engine)
        if row is None:
            return base
        stats = row.stats if isinstance(row.stats, dict) else {}
        return {
            **base,
            **stats,
            "status": row.status,
            "target_date": row.target_date.isoformat() if row.target_date else base["target_date"],
        }

    def _tracking_row(self, engine: sa.Engine | None):
        if engine is None:
            return None
        try:
            with engine.connect() as conn:
                return conn.execute(
                    sa.select(brt.c.status, brt.c.target_date, brt.c.stats).where(brt.c.run_id == self.run_id)
                ).first()
        except Exception:  # noqa: BLE001 - the database may be what failed
            return None
