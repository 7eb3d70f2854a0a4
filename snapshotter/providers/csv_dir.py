"""The ``csv`` provider: a directory of ``SYMBOL.csv`` files (date,open,high,low,close,volume).

The embedded default (the sample prices shipped in the package) makes the demo
and the tests work offline; pointed at another directory (SNAPSHOTTER_PRICES_DIR)
it imports prices exported from anywhere. A file costs no quota, so there is no
rate limit. Closes must be as traded (not split-adjusted): splits are listed apart, in
``splits.csv`` in the same directory (symbol,ex_date,split_from,split_to; 10-for-1 is 1,10),
read by :meth:`CsvDirProvider.splits` once a day. Cells are parsed as text into Decimal; bad cells become bars that
validation rejects with a reason, so one bad line never hides the others.
"""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

from snapshotter.config import Settings
from snapshotter.errors import BadProviderData, ConfigError, SymbolNotFound
from snapshotter.core.bars import Bar, Capabilities, Split, SplitsPage
from snapshotter.providers.base import Provider, to_date, to_decimal
from snapshotter.core.rate_limit import RateLimit

COLUMNS = ("date", "open", "high", "low", "close", "volume")
SPLITS_FILE = "splits.csv"
SPLIT_COLUMNS = ("symbol", "ex_date", "split_from", "split_to")


class CsvDirProvider(Provider):
    name = "csv"
    capabilities = Capabilities(splits_every_days=1)
    default_limit = RateLimit()  # unlimited

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    @classmethod
    def from_settings(cls, settings: Settings) -> "CsvDirProvider":
        directory = Path(settings.prices_dir)
        if not directory.is_dir():
            raise ConfigError(f"csv provider: prices directory {directory} does not exist (SNAPSHOTTER_PRICES_DIR / --prices-dir)")
        return cls(directory)

    def _path(self, symbol: str) -> Path:
        if not symbol or any(c in symbol for c in "/\\\0") or symbol.startswith("."):
            raise SymbolNotFound(f"csv: {symbol!r} is not a usable file name")
        return self.directory / f"{symbol}.csv"

    def splits(self, symbols: list[str], since: date, cursor: str | None = None) -> SplitsPage:
        """The rows of ``splits.csv`` for ``symbols`` (no file: no splits), in one read."""
        path = self.directory / SPLITS_FILE
        wanted = {s.upper() for s in symbols}
        try:
            fh = path.open(newline="", encoding="utf-8-sig")
        except FileNotFoundError:
            return SplitsPage([], None, tuple(sorted(wanted)))
        except OSError as exc:
            raise BadProviderData(f"csv: cannot read {path}: {exc.strerror}") from None
        with fh:
            reader = csv.DictReader(fh)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            if any(c not in header for c in SPLIT_COLUMNS):
                raise BadProviderData(f"csv: {path}: header must have {', '.join(SPLIT_COLUMNS)}, got {header}")
            reader.fieldnames = header
            out = []
            for row in reader:
                sym = (row.get("symbol") or "").strip().upper()
                s = Split(sym, to_date(row.get("ex_date") or ""), to_decimal(row.get("split_from")), to_decimal(row.get("split_to")))
                if sym in wanted and (s.ex_date is None or s.ex_date >= since):
                    out.append(s)
        return SplitsPage(out, None, tuple(sorted(wanted)))

    def daily_closes(self, symbol: str, start: date, end: date, *, size: str | None = None) -> list[Bar]:
        path = self._path(symbol)
        try:
            fh = path.open(newline="", encoding="utf-8-sig")
        except FileNotFoundError:
            raise SymbolNotFound(f"csv: no file {path.name} in {self.directory}") from None
        except OSError as exc:
            raise BadProviderData(f"csv: cannot read {path}: {exc.strerror}") from None
        with fh:
            reader = csv.DictReader(fh)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            if "date" not in header or "close" not in header:
                raise BadProviderData(f"csv: {path}: header must have date and close columns, got {header}")
            reader.fieldnames = header
            bars = []
            for row in reader:
                d = to_date(row.get("date") or "")
                if d is not None and not start <= d <= end:
                    continue
                bars.append(
                    Bar(
                        symbol=symbol,
                        price_date=d,
                        open=to_decimal(row.get("open")),
                        high=to_decimal(row.get("high")),
                        low=to_decimal(row.get("low")),
                        close=to_decimal(row.get("close")),
                        volume=to_decimal(row.get("volume")),
                    )
                )
        return bars
