"""The ``snapshotter`` command line: thin Typer commands over the job functions.

Each command parses its options, calls one job function and maps the outcome to an
exit code through :mod:`snapshotter.errors` (the only home of that mapping). The
clock is read once per command (``State.now``); settings are read once from the
environment (:meth:`Settings.from_env`), then the global options override them.
Option ranges are Typer's ``min``/``max``; defaults come from the jobs' own
``Options``; durations go through :func:`snapshotter.core.durations.parse_duration`.

The job commands are declared with ``@command(job=NAME)``: that one decorator
installs the SIGTERM/SIGINT handlers and wraps the body in a
:class:`snapshotter.ops.monitoring.JobMonitor` (start ping, finish ping with the
exit code and summary, at most one alert), whatever way the body ends.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from enum import Enum
from functools import partial, wraps
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from snapshotter import __version__
from snapshotter.clock import utcnow
from snapshotter.config import Settings, mask_url
from snapshotter.core.durations import format_duration, parse_duration
from snapshotter.core.retention import Horizon, Policy, parse_horizon
from snapshotter.core.valuation import MAX_PRICE_AGE
from snapshotter.data import db
from snapshotter.errors import ConfigError, SnapshotterError, UsageError, exit_code_for, exit_code_for_failures
from snapshotter.jobs.snapshots import Options
from snapshotter.jobs.symbol_batch import ALERT_FAILURE_RATIO, MAX_RUNTIME_S as SYMBOL_BATCH_MAX_RUNTIME_S
from snapshotter.ops import logs
from snapshotter.ops.signals import STOP, install_handlers, max_runtime as runtime_limit

if TYPE_CHECKING:  # imported by the job commands only (with httpx): not every poll of `check` needs it
    from snapshotter.ops.monitoring import JobMonitor

log = logs.get_logger("snapshotter")

app = typer.Typer(
    name="snapshotter",
    help="Nightly batch jobs: cache daily closes, then build portfolio snapshots.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Schema migrations (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")
prices_app = typer.Typer(help="Operator commands on the cached closes.", no_args_is_help=True)
app.add_typer(prices_app, name="prices")


class LogFormat(str, Enum):
    json = "json"
    console = "console"


class OnTimeout(str, Enum):
    abort = "abort"
    proceed = "proceed"


class ExplainMode(str, Enum):
    sql = "sql"
    plan = "plan"
    analyze = "analyze"


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@dataclass
class State:
    settings: Settings
    now: datetime  # the command's instant: read once, passed to every job
    migrate: bool = True
    monitor: JobMonitor | None = None  # set for job commands by @command(job=...)
    _engine: object = field(default=None, repr=False)

    def engine(self, migrate: bool | None = None):
        """Connect (with retries) and bring the schema to head unless --no-migrate."""
        if self._engine is None:
            engine = self.connect()
            db.check_writable(engine)
            db.ensure_schema(engine, self.migrate if migrate is None else migrate)
            self._engine = engine
        return self._engine

    def reader(self):
        """A connection for read-only commands: never migrates, never writes."""
        return self.connect()

    def connect(self, url: str | None = None):
        """An engine for ``url`` (default DATABASE_URL) with the session limits of the settings."""
        return db.connect(url or self.settings.database_url, **self.settings.pg_timeouts())


def parse_date(value: Optional[str]) -> Optional[date]:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{value!r} is not a date (YYYY-MM-DD)") from None  # exit 64, one line


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _runtime(value: str) -> float:
    """--max-runtime: a duration, or off/0 for none."""
    return 0.0 if value.strip().lower() in ("off", "0", "none") else _duration(value)


def _instant(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO instant (e.g. 2026-11-24T23:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def emit_json(payload: dict) -> None:
    sys.stdout.write(json.dumps(payload, default=str, sort_keys=True) + "\n")
    sys.stdout.flush()


def command(fn=None, *, job: str | None = None, max_runtime_s: float | None = None):
    """Map SnapshotterError (and anything unexpected) to one line and an exit code.

    With ``job`` (the job's command name) the run is monitored: signal handlers
    are installed, ``state.monitor`` holds the run id the body passes to the job,
    and the pings and alert go out on every exit (not for ``--dry-run``). The body
    runs within its maximum run time: the command's ``--max-runtime``, else
    ``SNAPSHOTTER_MAX_RUNTIME``, else ``max_runtime_s``; when it is over, the stop
    flag is set as SIGTERM would set it and the job ends with exit 75.
    """
    if fn is None:
        return partial(command, job=job, max_runtime_s=max_runtime_s)

    @wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = kwargs.get("ctx")
        monitor = None
        body = fn
        if job and ctx is not None and isinstance(ctx.obj, State):
            from snapshotter.ops.monitoring import JobMonitor

            STOP.reset()  # a new command: no stop asked yet
            install_handlers()
            quiet = kwargs.get("dry_run") or kwargs.get("explain")  # nothing runs for real: no pings, no alert
            monitor = ctx.obj.monitor = JobMonitor(ctx.obj.settings, job, enabled=not quiet)
            monitor.start()
            body = partial(_within_max_runtime, fn, ctx.obj, kwargs.get("max_runtime"), max_runtime_s)
        code, error = _call(body, args, kwargs, monitor.run_id if monitor else None)
        if monitor is not None:
            if code and error is None and monitor.error:
                typer.echo(f"snapshotter: error: {logs.redact(monitor.error)}", err=True)
            monitor.finish(code, error, ctx.obj._engine)
        raise typer.Exit(code)

    return wrapper


def _within_max_runtime(fn, state: State, option: float | None, default: float | None, *args, **kwargs):
    """Run a job command's body with the stop flag armed to fire after its maximum run time."""
    seconds = option if option is not None else state.settings.max_runtime_s(default or 0.0)
    if seconds:
        log.debug("job.max_runtime", max_runtime=format_duration(seconds))
    with runtime_limit(seconds):
        return fn(*args, **kwargs)


def _call(fn, args, kwargs, run_id: str | None = None) -> tuple[int, str | None]:
    """Run a command body: (exit code, the one-line error when it raised)."""
    try:
        return int(fn(*args, **kwargs) or 0), None
    except typer.Exit as exc:
        return int(exc.exit_code or 0), None
    except SnapshotterError as exc:
        msg = logs.redact(str(exc))
        code = exit_code_for(exc)
        log.error("command.failed", error=msg.splitlines()[0], exit_code=int(code))
        typer.echo(f"snapshotter: error: {msg}", err=True)
        return int(code), msg.splitlines()[0] if msg else type(exc).__name__
    except KeyboardInterrupt as exc:  # SIGINT before the handlers were installed
        typer.echo("snapshotter: error: interrupted", err=True)
        return int(exit_code_for(exc)), "interrupted (SIGINT)"
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, the traceback at debug level
        msg = logs.redact(f"{type(exc).__name__}: {exc}".splitlines()[0])
        log.error("command.crashed", error=msg, run_id=run_id)
        log.debug("command.traceback", exc_info=True)
        where = f" in run {run_id}" if run_id else ""
        typer.echo(f"snapshotter: internal error{where}: {msg} (the traceback is logged at --log-level debug)", err=True)
        return int(exit_code_for(exc)), f"internal error: {msg}"


def _setting(flag: str, envvar: str, help: str, secret: bool = False):
    """A global option standing for an environment variable (read once, by Settings.from_env)."""
    help = f"{help} [env: {envvar}]"
    if secret:
        help += " Prefer the environment variable: a command line is visible to other users (ps)."
    return typer.Option(None, flag, help=help)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"snapshotter {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Optional[str] = _setting("--database-url", "DATABASE_URL", "SQLAlchemy URL [default: sqlite:///snapshotter.db]"),
    log_format: Optional[LogFormat] = typer.Option(None, "--log-format", help="json or console [default: json unless a TTY]"),
    log_level: LogLevel = typer.Option(LogLevel.info, "--log-level", help="Least severe log events shown."),
    migrate: Optional[bool] = typer.Option(None, "--migrate/--no-migrate",
                                           help="Upgrade a schema that is behind before a job works, or fail (exit 78) "
                                                "[default: --migrate, --no-migrate when SNAPSHOTTER_ENV=production]."),
    prices_dir: Optional[Path] = _setting("--prices-dir", "SNAPSHOTTER_PRICES_DIR", "Directory of SYMBOL.csv files for the csv provider [default: the sample prices]."),
    alphavantage_api_key: Optional[str] = _setting("--alphavantage-api-key", "ALPHAVANTAGE_API_KEY", "Alpha Vantage key.", secret=True),
    alphavantage_base_url: Optional[str] = _setting("--alphavantage-base-url", "ALPHAVANTAGE_BASE_URL", "Alpha Vantage endpoint."),
    polygon_api_key: Optional[str] = _setting("--polygon-api-key", "POLYGON_API_KEY", "Polygon/Massive key.", secret=True),
    polygon_base_url: Optional[str] = _setting("--polygon-base-url", "POLYGON_BASE_URL", "Polygon/Massive endpoint."),
    alert_webhook_url: Optional[str] = _setting("--alert-webhook-url", "ALERT_WEBHOOK_URL", "Slack-compatible webhook for alerts.", secret=True),
    healthcheck_url: Optional[str] = _setting("--healthcheck-url", "HEALTHCHECK_URL", "healthchecks.io-style ping URL.", secret=True),
    now: Optional[datetime] = typer.Option(None, "--now", parser=_instant, hidden=True,
                                           help="Run as of this instant instead of the clock (tests, replays)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    logs.configure(log_format.value if log_format else None, log_level.value)
    try:
        settings = Settings.from_env(
            database_url=database_url, prices_dir=prices_dir, alphavantage_api_key=alphavantage_api_key,
            alphavantage_base_url=alphavantage_base_url, polygon_api_key=polygon_api_key, polygon_base_url=polygon_base_url,
            alert_webhook_url=alert_webhook_url, healthcheck_url=healthcheck_url,
        )
    except SnapshotterError as exc:
        typer.echo(f"snapshotter: error: {logs.redact(str(exc))}", err=True)
        raise typer.Exit(int(exit_code_for(exc))) from None
    logs.register_secrets(settings.secrets())  # from the options as well as the environment
    # Production migrates in its own step (`db upgrade`, as the schema's owner): the jobs never run DDL.
    ctx.obj = State(settings=settings, now=now or utcnow(), migrate=(not settings.production) if migrate is None else migrate)


@db_app.command("upgrade")
@command
def db_upgrade(ctx: typer.Context, revision: str = typer.Argument("head")) -> int:
    """Create or upgrade the schema to the latest migration (as SNAPSHOTTER_MIGRATION_DATABASE_URL when set)."""
    state: State = ctx.obj
    db.check_revision(revision)  # before connecting: a typo must not create a database file
    url = state.settings.migration_database_url or state.settings.database_url
    before, after = db.upgrade(state.connect(url), revision)
    typer.echo(f"{mask_url(url)}: {before or 'empty'} -> {after}")
    return 0


@db_app.command("current")
@command
def db_current(ctx: typer.Context) -> int:
    """Print the schema revision of the database and of this version."""
    state: State = ctx.obj
    engine = state.connect()
    typer.echo(f"current: {db.current_revision(engine) or 'none'}\nhead: {db.head_revision()}")
    return 0


@db_app.command("citus-plan")
@command
def db_citus_plan(
    ctx: typer.Context,
    prepare_only: bool = typer.Option(False, "--prepare-only", help="Only the key changes (plain PostgreSQL), not the Citus calls."),
) -> int:
    """Print the SQL that moves this PostgreSQL database (at head) to Citus (README "Running on Citus"); runs nothing."""
    from snapshotter.data import citus

    state: State = ctx.obj
    url = state.settings.migration_database_url or state.settings.database_url
    if not url.startswith(("postgres://", "postgresql")):  # before connecting: SQLite would create the file
        raise UsageError("Citus is PostgreSQL: the database URL is not a PostgreSQL one")
    engine = state.connect(url)
    db.ensure_schema(engine, migrate=False)
    with engine.connect() as conn:
        metadata = citus.reflect(conn)
    try:
        typer.echo(citus.script(metadata, prepare_only=prepare_only), nl=False)
    except citus.CitusPlanError as exc:
        raise ConfigError(f"the schema breaks Citus's rules where the conversion cannot help: {exc}".replace("\n", "; ")) from None
    return 0


@app.command("load")
@command
def load(
    ctx: typer.Context,
    portfolios: Optional[Path] = typer.Option(None, help="portfolios.csv"),
    positions: Optional[Path] = typer.Option(None, help="positions.csv (one lot per row)"),
    cash: Optional[Path] = typer.Option(None, help="cash transactions csv"),
    watchlist: Optional[Path] = typer.Option(None, help="watchlist.csv"),
    prices: Optional[Path] = typer.Option(None, help="daily prices csv (as traded): symbol,price_date,open,high,low,close,volume"),
    splits: Optional[Path] = typer.Option(None, help="splits csv: symbol,ex_date,split_from,split_to (10-for-1: 1,10)"),
    symbol_changes: Optional[Path] = typer.Option(None, "--symbol-changes", help="ticker changes csv: old_symbol,new_symbol,effective_date"),
    sample: bool = typer.Option(False, "--sample", help="Load the sample portfolios shipped in the package."),
) -> int:
    """Import CSV files (formats in README). A file with a bad row is rejected whole."""
    from snapshotter.jobs.load import load_files, sample_files

    files = sample_files() if sample else {}
    given = dict(portfolios=portfolios, positions=positions, cash=cash, watchlist=watchlist, prices=prices, splits=splits,
                 symbol_changes=symbol_changes)
    files.update({k: v for k, v in given.items() if v})
    if not files:
        raise UsageError("nothing to load: give --portfolios/--positions/--cash/--watchlist/--prices/--splits/--symbol-changes or --sample")
    state: State = ctx.obj
    for kind, n in load_files(state.engine, files, state.now).items():
        typer.echo(f"{kind}: {n} rows")
    return 0


@app.command("status")
@command
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> int:
    """Last runs of each job (dead ones flagged), snapshot freshness and lag, closes missing for the last trading day."""
    from snapshotter.ops.report import print_status
    from snapshotter.ops.status import status_report

    report = status_report(ctx.obj.reader(), ctx.obj.now)
    emit_json(report) if as_json else print_status(report)
    return 0


@app.command("check")
@command
def check(
    ctx: typer.Context,
    max_lag: int = typer.Option(1, "--max-lag", min=0, help="Trading days the newest snapshot may be behind the latest closed trading day."),
) -> int:
    """For a monitoring system: exit 1 (with a one-line reason) when the snapshots are stale, else 0."""
    from snapshotter.ops.status import check_freshness

    ok, reason = check_freshness(ctx.obj.reader(), max_lag, ctx.obj.now)
    typer.echo(reason)
    return exit_code_for_failures(0 if ok else 1)


@app.command("history")
@command
def history(
    ctx: typer.Context,
    portfolio: str = typer.Option(..., "--portfolio", help="Portfolio id (UUID)."),
    date_from: Optional[str] = typer.Option(None, "--from", help="First day [default: 90 days before --to]."),
    date_to: Optional[str] = typer.Option(None, "--to", help="Last day [default: the portfolio's newest snapshot]."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> int:
    """One portfolio's snapshots: a table and a sparkline of total value, partial days marked."""
    from snapshotter.ops.report import portfolio_history, print_history

    h = portfolio_history(ctx.obj.reader(), portfolio, parse_date(date_from), parse_date(date_to))
    emit_json(h) if as_json else print_history(h)
    return 0


@app.command("snapshots")
@command
def snapshots_cmd(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=0, help="How many portfolios to show."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> int:
    """The latest snapshot of each portfolio (what `make demo` prints)."""
    from snapshotter.ops.report import latest_snapshots, print_latest

    rows = latest_snapshots(ctx.obj.reader(), limit)
    if as_json:
        for r in rows:
            emit_json(r)
    else:
        print_latest(rows)
    return 0


def _finish_snapshots(state: State, result, as_json: bool, dry_run: bool) -> int:
    from snapshotter.ops.report import print_explained, print_preview, refresh_line

    state.monitor.report(result)
    if result.explained:
        emit_json({"target_date": result.stats["target_date"], "steps": result.explained}) if as_json else print_explained(result)
        return int(result.exit_code)
    if dry_run:
        print_preview(result)
    if as_json:
        emit_json({"dry_run": dry_run, **result.summary()})
    elif not dry_run:
        typer.echo(refresh_line(result))
        for f in result.stats["failed_portfolios"]:
            typer.echo(f"  failed {f['portfolio_id']}: {f['error']}", err=True)
    return int(result.exit_code)


D = Options  # the defaults below are the jobs' own, declared once in Options
DryRun = typer.Option(False, "--dry-run", help="Print what would be created; write nothing.")
Explain = typer.Option(None, "--explain", help="Print the statements of the first chunk for a DBA: sql, plan (EXPLAIN) or "
                       "analyze (EXPLAIN ANALYZE on PostgreSQL, run and rolled back); write nothing.")
AsJson = typer.Option(False, "--json", help="Print the final summary as one JSON line on stdout.")
WaitForLock = typer.Option(D.wait_for_lock, "--wait-for-lock", help="Wait for a running refresh instead of exiting 75.")
ChunkSize = typer.Option(D.chunk_size, "--chunk-size", min=1, help="Most portfolios per transaction.")
Workers = typer.Option(D.workers, "--workers", min=1, max=8, help="Database connections working on chunks at once (PostgreSQL; SQLite uses 1).")
MaxBackfill = typer.Option(None, "--max-backfill-days", min=1, show_default=False,
                           help="How far back (calendar days) gaps are filled "
                                f"[env: SNAPSHOTTER_MAX_BACKFILL_DAYS; default: {D.max_backfill_days}].")
MaxPriceAge = typer.Option(None, "--max-price-age", min=0, max=MAX_PRICE_AGE, show_default=False,
                           help="Value a lot without a close on D at its symbol's latest close within this many trading days "
                                "before D (listed in stale_symbols, not partial) [env: SNAPSHOTTER_MAX_PRICE_AGE; default: 0, "
                                "the day's own close only].")


def _backfill_days(state: State, option: int | None) -> int:
    """--max-backfill-days, else SNAPSHOTTER_MAX_BACKFILL_DAYS (read once by Settings; a bad value exits 78), else 365."""
    return option if option is not None else state.settings.backfill_days(D.max_backfill_days)


def _price_age(state: State, option: int | None) -> int:
    """--max-price-age, else SNAPSHOTTER_MAX_PRICE_AGE (read once by Settings; a bad value exits 78)."""
    return option if option is not None else state.settings.price_age()


def MaxRuntime(default_s: float):  # noqa: N802 - an option declaration, like the constants above
    return typer.Option(None, "--max-runtime", parser=_runtime, metavar="DURATION",
                        help="Stop like SIGTERM after this long: finish the unit of work, mark the run interrupted, exit 75 "
                             f"(off: never) [default: {format_duration(default_s)}; env: SNAPSHOTTER_MAX_RUNTIME].")


@app.command("portfolio-refresh")
@command(job="portfolio-refresh", max_runtime_s=D.max_runtime_s)
def portfolio_refresh_cmd(
    ctx: typer.Context,
    date_: Optional[str] = typer.Option(None, "--date", help="Target trading day [default: the latest closed trading day]."),
    wait_timeout: float = typer.Option("60m", "--wait-timeout", parser=_duration, help="How long to wait for the symbol batch (deadline)."),
    poll_interval: float = typer.Option("5m", "--poll-interval", parser=_duration, help="How often to check batch_run_tracking while waiting."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Do not wait for the symbol batch; use the cache as it is."),
    on_timeout: OnTimeout = typer.Option(OnTimeout.abort, "--on-timeout",
                                         help="Batch not completed by the deadline: abort (exit 75, nothing written) or "
                                              "proceed (value from the cache: partial snapshots heal later; exit 1)."),
    wait_for_lock: bool = WaitForLock,
    max_backfill_days: Optional[int] = MaxBackfill,
    max_price_age: Optional[int] = MaxPriceAge,
    chunk_size: int = ChunkSize,
    workers: int = Workers,
    alert_failure_ratio: float = typer.Option(D.alert_failure_ratio, "--alert-failure-ratio", min=0.0, max=1.0,
                                              help="Alert when more than this share of portfolios fail."),
    dry_run: bool = DryRun,
    explain: Optional[ExplainMode] = Explain,
    as_json: bool = AsJson,
    max_runtime: Optional[float] = MaxRuntime(D.max_runtime_s),
) -> int:
    """Wait for the symbol batch, then snapshot every active portfolio's missing trading days."""
    from snapshotter.jobs.snapshots import portfolio_refresh

    state: State = ctx.obj
    opts = Options(
        wait_timeout_s=wait_timeout, poll_interval_s=poll_interval, wait_for_batch=not no_wait, on_timeout=on_timeout.value,
        wait_for_lock=wait_for_lock,
        max_backfill_days=_backfill_days(state, max_backfill_days), chunk_size=chunk_size, workers=workers,
        alert_failure_ratio=alert_failure_ratio,
        dry_run=dry_run, explain=explain and explain.value, max_price_age=_price_age(state, max_price_age),
    )
    result = portfolio_refresh(state.engine, parse_date(date_), opts, now=state.now, run_id=state.monitor.run_id)
    return _finish_snapshots(state, result, as_json, dry_run)


@app.command("refresh")
@command(job="refresh", max_runtime_s=D.max_runtime_s)
def refresh_cmd(
    ctx: typer.Context,
    date_: str = typer.Option(..., "--date", help="The trading day to redo."),
    force: bool = typer.Option(False, "--force", help="Recompute snapshots that already exist."),
    max_price_age: Optional[int] = MaxPriceAge,
    wait_for_lock: bool = WaitForLock,
    chunk_size: int = ChunkSize,
    workers: int = Workers,
    dry_run: bool = DryRun,
    explain: Optional[ExplainMode] = Explain,
    as_json: bool = AsJson,
    max_runtime: Optional[float] = MaxRuntime(D.max_runtime_s),
) -> int:
    """Redo one date for every active portfolio (existing snapshots kept unless --force)."""
    from snapshotter.jobs.snapshots import refresh_date

    state: State = ctx.obj
    opts = Options(wait_for_lock=wait_for_lock, chunk_size=chunk_size, workers=workers, dry_run=dry_run,
                   explain=explain and explain.value, max_price_age=_price_age(state, max_price_age))
    result = refresh_date(state.engine, parse_date(date_), force, opts, now=state.now, run_id=state.monitor.run_id)
    return _finish_snapshots(state, result, as_json, dry_run)


@app.command("backfill")
@command(job="backfill", max_runtime_s=D.max_runtime_s)
def backfill_cmd(
    ctx: typer.Context,
    portfolio: str = typer.Option(..., "--portfolio", help="Portfolio id (UUID)."),
    date_from: Optional[str] = typer.Option(None, "--from", help="First day [default: --to minus --max-backfill-days]."),
    date_to: Optional[str] = typer.Option(None, "--to", help="Last day [default: the latest closed trading day]."),
    force: bool = typer.Option(False, "--force", help="Recompute snapshots that already exist."),
    max_backfill_days: Optional[int] = MaxBackfill,
    max_price_age: Optional[int] = MaxPriceAge,
    wait_for_lock: bool = WaitForLock,
    dry_run: bool = DryRun,
    explain: Optional[ExplainMode] = Explain,
    as_json: bool = AsJson,
    max_runtime: Optional[float] = MaxRuntime(D.max_runtime_s),
) -> int:
    """Snapshot one portfolio over a range of trading days from cached closes."""
    from snapshotter.jobs.snapshots import backfill

    state: State = ctx.obj
    opts = Options(max_backfill_days=_backfill_days(state, max_backfill_days), wait_for_lock=wait_for_lock, dry_run=dry_run,
                   explain=explain and explain.value, max_price_age=_price_age(state, max_price_age))
    result = backfill(state.engine, portfolio, parse_date(date_from), parse_date(date_to), force, opts, now=state.now,
                      run_id=state.monitor.run_id)
    return _finish_snapshots(state, result, as_json, dry_run)


@app.command("recompute")
@command(job="recompute", max_runtime_s=D.max_runtime_s)
def recompute_cmd(
    ctx: typer.Context,
    portfolio: Optional[str] = typer.Option(None, "--portfolio", help="Only this portfolio's pending invalidations (UUID)."),
    max_backfill_days: Optional[int] = MaxBackfill,
    wait_for_lock: bool = WaitForLock,
    chunk_size: int = ChunkSize,
    workers: int = Workers,
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be recomputed, created and deleted; write nothing."),
    max_price_age: Optional[int] = MaxPriceAge,
    as_json: bool = AsJson,
    max_runtime: Optional[float] = MaxRuntime(D.max_runtime_s),
) -> int:
    """Recompute the snapshots whose history other writers changed (pending invalidations), then the market values."""
    from snapshotter.jobs.snapshots import recompute

    state: State = ctx.obj
    opts = Options(max_backfill_days=_backfill_days(state, max_backfill_days), wait_for_lock=wait_for_lock, chunk_size=chunk_size,
                   workers=workers, dry_run=dry_run, max_price_age=_price_age(state, max_price_age))
    result = recompute(state.engine, portfolio, opts, now=state.now, run_id=state.monitor.run_id)
    state.monitor.report(result)
    if as_json:
        emit_json({"dry_run": dry_run, **result.summary()})
    else:
        from snapshotter.ops.report import refresh_line

        typer.echo(("dry run: " if dry_run else "") + refresh_line(result))
        for f in result.stats["failed_portfolios"]:
            typer.echo(f"  failed {f['portfolio_id']}: {f['error']}", err=True)
    return int(result.exit_code)


def _horizon(value: str) -> Horizon:
    try:
        return parse_horizon(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command("prune")
@command(job="prune", max_runtime_s=D.max_runtime_s)
def prune_cmd(
    ctx: typer.Context,
    keep_daily: Horizon = typer.Option(..., "--keep-daily", parser=_horizon, metavar="HORIZON",
                                       help="Keep every snapshot of the last Ny, Nm or Nd (years, months, days; calendar "
                                            "arithmetic from the latest closed trading day); older ones are thinned."),
    then: Policy = typer.Option(..., "--then", help="What each older period keeps: monthly (each portfolio's last snapshot "
                                                  "of each calendar month)."),
    max_backfill_days: Optional[int] = typer.Option(None, "--max-backfill-days", min=1, show_default=False,
                                                    help="The nightly's backfill window (calendar days), which --keep-daily must "
                                                         "cover: pass what portfolio-refresh runs with "
                                                         f"[env: SNAPSHOTTER_MAX_BACKFILL_DAYS; default: {D.max_backfill_days}]."),
    wait_for_lock: bool = WaitForLock,
    chunk_size: int = ChunkSize,
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be deleted; delete nothing (no lock, no tracking row)."),
    as_json: bool = AsJson,
    max_runtime: Optional[float] = MaxRuntime(D.max_runtime_s),
) -> int:
    """Thin snapshot history older than --keep-daily to one snapshot per portfolio per month (retention)."""
    from snapshotter.jobs.prune import PruneOptions, prune
    from snapshotter.ops.report import prune_line

    state: State = ctx.obj
    opts = PruneOptions(keep=keep_daily, policy=then, max_backfill_days=_backfill_days(state, max_backfill_days),
                        chunk_size=chunk_size, dry_run=dry_run, wait_for_lock=wait_for_lock)
    result = prune(state.engine, opts, now=state.now, run_id=state.monitor.run_id)
    state.monitor.report(result)
    emit_json(result.summary()) if as_json else typer.echo(prune_line(result))
    return int(result.exit_code)


@app.command("symbol-batch")
@command(job="symbol-batch", max_runtime_s=SYMBOL_BATCH_MAX_RUNTIME_S)
def symbol_batch_cmd(
    ctx: typer.Context,
    date_: Optional[str] = typer.Option(None, "--date", help="Target trading day [default: the latest closed trading day]."),
    date_from: Optional[str] = typer.Option(None, "--from", help="Backfill from this day (with --to)."),
    date_to: Optional[str] = typer.Option(None, "--to", help="Backfill up to this day (with --from)."),
    symbols: Optional[str] = typer.Option(None, "--symbols", help="Comma-separated symbols instead of those the portfolios need."),
    provider: Optional[str] = typer.Option(None, "--provider", help="csv, alphavantage, polygon or an installed plugin [default: $SNAPSHOTTER_PROVIDER or csv]."),
    alert_failure_ratio: float = typer.Option(ALERT_FAILURE_RATIO, "--alert-failure-ratio", min=0.0, max=1.0,
                                              help="Alert when more than this share of the symbols tried fail."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as one JSON line on stdout."),
    max_runtime: Optional[float] = MaxRuntime(SYMBOL_BATCH_MAX_RUNTIME_S),
) -> int:
    """Fetch the missing daily closes of every symbol the portfolios need, within the provider's rate limits."""
    from snapshotter.jobs.symbol_batch import run_symbol_batch
    from snapshotter.ops.report import batch_line

    state: State = ctx.obj
    result = run_symbol_batch(
        state.engine, state.settings, target_date=parse_date(date_), date_from=parse_date(date_from), date_to=parse_date(date_to),
        symbols=symbols, provider=provider, now=state.now, run_id=state.monitor.run_id, alert_failure_ratio=alert_failure_ratio,
    )
    state.monitor.report(result)
    emit_json(result.summary()) if as_json else typer.echo(batch_line(result))
    return result.exit_code


@prices_app.command("refetch")
@command(job="prices-refetch", max_runtime_s=SYMBOL_BATCH_MAX_RUNTIME_S)
def prices_refetch_cmd(
    ctx: typer.Context,
    symbol: str = typer.Option(..., "--symbol", help="The symbol whose closes to fetch again."),
    date_from: str = typer.Option(..., "--from", help="First day to fetch again."),
    date_to: Optional[str] = typer.Option(None, "--to", help="Last day [default: the latest closed trading day]."),
    provider: Optional[str] = typer.Option(None, "--provider", help="csv, alphavantage, polygon or an installed plugin [default: $SNAPSHOTTER_PROVIDER or csv]."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as one JSON line on stdout."),
    max_runtime: Optional[float] = MaxRuntime(SYMBOL_BATCH_MAX_RUNTIME_S),
) -> int:
    """Fetch one symbol's closes over a range again and overwrite them (e.g. a cache filled with split-adjusted closes)."""
    from snapshotter.jobs.symbol_batch import refetch_prices
    from snapshotter.ops.report import batch_line

    state: State = ctx.obj
    result = refetch_prices(state.engine, state.settings, symbol, parse_date(date_from), parse_date(date_to), provider=provider,
                            now=state.now, run_id=state.monitor.run_id)
    state.monitor.report(result)
    emit_json(result.summary()) if as_json else typer.echo(batch_line(result))
    return result.exit_code


def main() -> None:
    """Entry point. Click's usage errors (its exit 2) become one line and SPEC's 64 (EX_USAGE)."""
    from typer.exceptions import TyperException

    try:
        code = app(prog_name="snapshotter", standalone_mode=False)
    except KeyboardInterrupt as exc:  # Ctrl-C while Click parses, before any handler
        sys.exit(int(exit_code_for(exc)))
    except TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        typer.echo(f"snapshotter: error: {message}{hint}", err=True)
        code = exit_code_for(UsageError(str(exc))) if getattr(exc, "exit_code", 2) == 2 else getattr(exc, "exit_code", 1)
    sys.exit(int(code or 0))
