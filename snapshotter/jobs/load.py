"""``snapshotter load``: import portfolios, positions, cash, watchlist, prices, splits and ticker changes from CSV.

Each file is validated completely before anything is written, then upserted in one
transaction: a file with any bad row is rejected whole, with every bad row reported
as ``file:line: reason``. Loading the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

from snapshotter.data import schema
from snapshotter.config import SAMPLE_DIR
from snapshotter.errors import InputError
from snapshotter.core import validation
from snapshotter.core.bars import Bar, Split, SymbolChange
from snapshotter.core.calendar import new_york_date
from snapshotter.data import corporate_actions
from snapshotter.data.dialect import stored_primary_key, upsert

MAX_REPORTED = 20


def _uuid(v: str) -> uuid.UUID:
    return uuid.UUID(v)


def _date(v: str) -> date:
    return date.fromisoformat(v)


def _ts(v: str) -> datetime:
    d = datetime.fromisoformat(v)
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def _dec(v: str) -> Decimal:
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise ValueError(f"not a decimal: {v!r}") from None
    if not d.is_finite():
        raise ValueError(f"not a finite decimal: {v!r}")
    return d


def _positive(v: str) -> Decimal:
    d = _dec(v)
    if d <= 0:
        raise ValueError(f"must be positive: {v!r}")
    return d


def _numeric(precision: int, scale: int, positive: bool = False) -> Callable[[str], Decimal]:
    """A decimal cell that fits its column (NUMERIC(precision, scale)) exactly."""

    def parse(v: str) -> Decimal:
        d = _positive(v) if positive else _dec(v)
        return validation.fit_numeric(d, precision, scale, v)

    return parse


_quantity = _numeric(28, 10, positive=True)
_price = _numeric(20, 6, positive=True)
_amount = _numeric(28, 6)


_symbol = validation.symbol


def _currency(v: str) -> str:
    if len(v) != 3 or not v.isalpha():
        raise ValueError(f"bad currency {v!r}")
    return v.upper()


def _int(v: str) -> int:
    return int(v)


def _split(row: dict, today: date) -> dict:
    return validation.check_split(Split(row["symbol"], row["ex_date"], row["split_from"], row["split_to"]), today)


def _symbol_change(row: dict, today: date) -> dict:
    return validation.check_symbol_change(SymbolChange(row["old_symbol"], row["new_symbol"], row["effective_date"]), today)


def _upsert(kind: "Kind", conn: sa.Connection, rows: list[dict], now: datetime) -> int:
    # By the primary key as stored: on a database prepared for Citus a lot's or cash row's is
    # (id, portfolio_id), so the conflict target names both and the update never moves a row to
    # another portfolio (Citus cannot change a row's distribution column).
    key = stored_primary_key(conn, kind.table) if rows else kind.key
    keep = set(key) | {"created_at", "added_at"}  # first-seen times survive a reload
    update = [c for c in rows[0] if c not in keep] if rows else []
    return upsert(conn, kind.table, rows, key, update)


IMPORTED = "csv-import"  # ``source`` of the rows an operator loads


@dataclass(frozen=True)
class Kind:
    table: sa.Table
    key: tuple[str, ...]
    required: dict[str, Callable]
    optional: dict[str, Callable]
    defaults: Callable[[datetime], dict] = lambda now: {}
    check: Callable[[dict, date], dict] | None = None  # the row as validation.py stores it, or ValueError
    same: Callable[[dict, dict], bool] | None = None  # a repeated key describing the same thing is not an error
    store: Callable = _upsert  # (kind, conn, rows, now) -> rows written


KINDS: dict[str, Kind] = {
    "portfolios": Kind(
        schema.portfolios,
        ("id",),
        {"id": _uuid, "name": str},
        {"owner_id": str, "base_currency": _currency, "created_at": _ts, "deleted_at": _ts},
        lambda now: {"owner_id": None, "base_currency": "USD", "created_at": now, "deleted_at": None},
    ),
    "positions": Kind(
        schema.positions,
        ("id",),
        {"id": _uuid, "portfolio_id": _uuid, "symbol": _symbol, "quantity": _quantity, "entry_price": _price, "entry_date": _date},
        {"exit_date": _date, "exit_price": _price, "deleted_at": _ts},
        lambda now: {"exit_date": None, "exit_price": None, "deleted_at": None},
    ),
    "cash": Kind(
        schema.cash_transactions,
        ("id",),
        {"id": _uuid, "portfolio_id": _uuid, "txn_date": _date, "amount": _amount},
        {},
    ),
    "watchlist": Kind(schema.watchlist, ("symbol",), {"symbol": _symbol}, {"added_at": _ts}, lambda now: {"added_at": now}),
    "prices": Kind(
        schema.symbol_prices_daily,
        ("symbol", "price_date"),
        {"symbol": _symbol, "price_date": _date, "close": _positive},
        {"open": _positive, "high": _positive, "low": _positive, "volume": _int},
        lambda now: {"open": None, "high": None, "low": None, "volume": None, "source": IMPORTED, "fetched_at": now},
    ),
    "splits": Kind(
        schema.symbol_splits,
        ("symbol", "ex_date"),
        {"symbol": str, "ex_date": _date, "split_from": _dec, "split_to": _dec},
        {},
        check=_split,
        same=validation.same_ratio,
        store=lambda kind, conn, rows, now: sum(corporate_actions.store_splits(conn, rows, IMPORTED, now).values()),
    ),
    "symbol_changes": Kind(
        schema.symbol_changes,
        ("old_symbol", "effective_date"),
        {"old_symbol": str, "new_symbol": str, "effective_date": _date},
        {},
        check=_symbol_change,
        same=validation.same_change,
        store=lambda kind, conn, rows, now: sum(corporate_actions.store_symbol_changes(conn, rows, IMPORTED, now).values()),
    ),
}
ORDER = ["portfolios", "positions", "cash", "watchlist", "prices", "splits", "symbol_changes"]


def parse_file(kind_name: str, path: Path, now: datetime) -> list[dict]:
    """Parse and validate one file; raise InputError listing every bad row.

    Price rows go through the same rule as the providers' bars
    (:func:`snapshotter.core.validation.check_bar`): a trading day, not after the New
    York date of ``now``, positive prices that fit NUMERIC(20, 6).
    """
    today = new_york_date(now)
    kind = KINDS[kind_name]
    errors: list[str] = []
    rows: list[dict] = []
    seen: dict[tuple, tuple[int, int]] = {}  # key -> (line, index in rows)
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    with fh:
        reader = csv.DictReader(fh)
        try:
            header = reader.fieldnames or []
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        missing = [c for c in kind.required if c not in header]
        if missing:
            raise InputError(f"{path}:1: missing column(s) {', '.join(missing)} for {kind_name}")
        lines = enumerate(reader, start=2)
        while True:
            try:
                lineno, raw = next(lines)
            except StopIteration:
                break
            except UnicodeDecodeError:
                raise _not_utf8(path) from None
            try:
                row = kind.defaults(now)
                for col, parse in {**kind.required, **kind.optional}.items():
                    val = (raw.get(col) or "").strip()
                    if val:
                        row[col] = parse(val)
                    elif col in kind.required:
                        raise ValueError(f"{col} is empty")
                if kind_name == "positions":
                    if row["exit_date"] and row["exit_date"] < row["entry_date"]:
                        raise ValueError("exit_date before entry_date")
                if kind_name == "prices":
                    fields = {k: row.get(k) for k in ("open", "high", "low", "close")}
                    bar = Bar(row["symbol"], row["price_date"], volume=None if row["volume"] is None else Decimal(row["volume"]), **fields)
                    row.update(validation.check_bar(bar, today))
                if kind.check is not None:
                    row = kind.check(row, today)
                k = tuple(row[c] for c in kind.key)
                if k in seen:
                    first, index = seen[k]
                    if kind.same is not None and kind.same(rows[index], row):
                        continue  # the same split listed twice is one split
                    what = f"{' and '.join(kind.key)} listed more than once with different values" if kind.same else "duplicate key"
                    raise ValueError(f"{what}, first on line {first}")
                seen[k] = (lineno, len(rows))
                rows.append(row)
            except (ValueError, KeyError) as exc:
                errors.append(f"{path}:{lineno}: {exc}")
    if errors:
        more = f" (and {len(errors) - MAX_REPORTED} more)" if len(errors) > MAX_REPORTED else ""
        raise InputError("\n".join(errors[:MAX_REPORTED]) + more)
    return rows


def _not_utf8(path: Path) -> InputError:
    """file:line of the first byte that is not UTF-8 (the reader decodes ahead, so find it in the bytes)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
        return InputError(f"{path}: not UTF-8 text; save the file as UTF-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return InputError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8")


def _check_portfolios_exist(conn: sa.Connection, path: Path, rows: list[dict]) -> None:
    ids = {r["portfolio_id"] for r in rows}
    known: set = set()
    id_list = list(ids)
    for i in range(0, len(id_list), 1000):
        known |= set(
            conn.execute(sa.select(schema.portfolios.c.id).where(schema.portfolios.c.id.in_(id_list[i : i + 1000]))).scalars()
        )
    unknown = ids - known
    if unknown:
        bad = next(n for n, r in enumerate(rows, start=2) if r["portfolio_id"] in unknown)
        raise InputError(f"{path}:{bad}: unknown portfolio_id {sorted(map(str, unknown))[0]} ({len(unknown)} unknown)")


def load_files(engine, files: dict[str, Path], now: datetime) -> dict[str, int]:
    """Load files in dependency order; each file is its own transaction.

    Every file is parsed and checked before ``engine`` is touched (it may be a
    zero-argument callable, the CLI's lazy connect).
    """
    parsed = {k: parse_file(k, files[k], now) for k in ORDER if k in files}
    engine = engine if isinstance(engine, sa.Engine) else engine()
    counts = {}
    for kind_name, rows in parsed.items():
        kind = KINDS[kind_name]
        with engine.begin() as conn:
            if kind_name in ("positions", "cash"):
                _check_portfolios_exist(conn, files[kind_name], rows)
            counts[kind_name] = kind.store(kind, conn, rows, now)
    return counts


def sample_files() -> dict[str, Path]:
    return {k: SAMPLE_DIR / f"{k}.csv" for k in ("portfolios", "positions", "cash", "watchlist")}
