"""The ``snapshotter`` command line: thin Typer commands over the job functions.

Each command parses its options, calls one function and maps the outcome to an
exit code from :mod:`snapshotter.errors`. Click's own usage errors (exit 2) are
mapped to 64 so every bad argument exits with EX_USAGE.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Optional

import typer

from snapshotter import db, logs
from snapshotter.config import Settings, mask_url, secrets_in_env
from snapshotter.errors import ExitCode, SnapshotterError, UsageError

log = logs.get_logger("snapshotter")

app = typer.Typer(
    name="snapshotter",
    help="Nightly batch jobs: cache daily closes, then build portfolio snapshots.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Schema migrations (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")


class LogFormat(str, Enum):
    json = "json"
    console = "console"


@dataclass
class State:
    settings: Settings
    migrate: bool = True
    _engine: object = field(default=None, repr=False)

    def engine(self, migrate: bool | None = None):
        """Connect (with retries) and bring the schema to head unless --no-migrate."""
        if self._engine is None:
            self._engine = db.connect(self.settings.database_url)
            db.ensure_schema(self._engine, self.migrate if migrate is None else migrate)
        return self._engine


def parse_date(value: Optional[str]) -> Optional[date]:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def emit_json(payload: dict) -> None:
    sys.stdout.write(json.dumps(payload, default=str, sort_keys=True) + "\n")
    sys.stdout.flush()


def command(fn):
    """Map SnapshotterError (and anything unexpected) to one line and an exit code."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            code = fn(*args, **kwargs)
        except typer.Exit:
            raise
        except SnapshotterError as exc:
            msg = logs.redact(str(exc))
            log.error("command.failed", error=msg.splitlines()[0], exit_code=int(exc.exit_code))
            typer.echo(f"snapshotter: error: {msg}", err=True)
            raise typer.Exit(int(exc.exit_code))
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            msg = logs.redact(f"{type(exc).__name__}: {exc}".splitlines()[0])
            log.exception("command.crashed", error=msg)
            typer.echo(f"snapshotter: internal error: {msg}", err=True)
            raise typer.Exit(int(ExitCode.SOFTWARE))
        raise typer.Exit(int(code or 0))

    return wrapper


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Optional[str] = typer.Option(
        None, "--database-url", envvar="DATABASE_URL", help="SQLAlchemy URL [default: sqlite:///snapshotter.db]", show_envvar=True
    ),
    log_format: Optional[LogFormat] = typer.Option(None, "--log-format", help="json or console [default: json unless a TTY]"),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error"),
    no_migrate: bool = typer.Option(False, "--no-migrate", help="Fail instead of upgrading a schema that is behind."),
) -> None:
    logs.configure(log_format.value if log_format else None, log_level)
    logs.register_secrets(secrets_in_env())
    settings = Settings.from_env(database_url=database_url)
    ctx.obj = State(settings=settings, migrate=not no_migrate)


@db_app.command("upgrade")
@command
def db_upgrade(ctx: typer.Context, revision: str = typer.Argument("head")) -> int:
    """Create or upgrade the schema to the latest migration."""
    state: State = ctx.obj
    engine = db.connect(state.settings.database_url)
    before, after = db.upgrade(engine, revision)
    typer.echo(f"{mask_url(state.settings.database_url)}: {before or 'empty'} -> {after}")
    return 0


@db_app.command("current")
@command
def db_current(ctx: typer.Context) -> int:
    """Print the schema revision of the database and of this version."""
    state: State = ctx.obj
    engine = db.connect(state.settings.database_url)
    typer.echo(f"current: {db.current_revision(engine) or 'none'}\nhead: {db.head_revision()}")
    return 0


@app.command("load")
@command
def load(
    ctx: typer.Context,
    portfolios: Optional[Path] = typer.Option(None, help="portfolios.csv"),
    positions: Optional[Path] = typer.Option(None, help="positions.csv (one lot per row)"),
    cash: Optional[Path] = typer.Option(None, help="cash transactions csv"),
    watchlist: Optional[Path] = typer.Option(None, help="watchlist.csv"),
    prices: Optional[Path] = typer.Option(None, help="daily prices csv: symbol,price_date,open,high,low,close,volume"),
    sample: bool = typer.Option(False, "--sample", help="Load the sample portfolios shipped in the package."),
) -> int:
    """Import CSV files (formats in README). A file with a bad row is rejected whole."""
    from snapshotter.loader import load_files, sample_files

    files = sample_files() if sample else {}
    files.update({k: v for k, v in dict(portfolios=portfolios, positions=positions, cash=cash, watchlist=watchlist, prices=prices).items() if v})
    if not files:
        raise UsageError("nothing to load: give --portfolios/--positions/--cash/--watchlist/--prices or --sample")
    counts = load_files(ctx.obj.engine(), files)
    for kind, n in counts.items():
        typer.echo(f"{kind}: {n} rows")
    return 0


@app.command("status")
@command
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> int:
    """Schema version, table sizes, the last runs and how fresh the snapshots are."""
    from snapshotter.report import print_status
    from snapshotter.status import status_report

    engine = db.connect(ctx.obj.settings.database_url)
    report = status_report(engine)
    if as_json:
        emit_json(report)
    else:
        print_status(report)
    return 0


def main() -> None:
    """Entry point: Click reports usage errors with exit 2; the SPEC wants 64."""
    try:
        app(prog_name="snapshotter")
    except SystemExit as exc:
        code = exc.code
        if code == 2:
            sys.exit(int(ExitCode.USAGE))
        if code == 1 and not isinstance(code, bool) and _aborted(exc):
            sys.exit(int(ExitCode.SIGINT))
        raise


def _aborted(exc: SystemExit) -> bool:
    return isinstance(exc.__context__, KeyboardInterrupt)
