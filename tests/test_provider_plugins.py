"""Providers are found through the ``snapshotter.providers`` entry points, built-in or from another package.

The plugin here is a distribution installed nowhere but a temporary directory:
a module and a ``.dist-info`` directory with ``entry_points.txt``, found by
importlib.metadata because the directory is on ``sys.path`` (``PYTHONPATH`` for
the CLI subprocess), exactly as a ``pip install acme-prices`` would be found.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from snapshotter.config import SAMPLE_PRICES_DIR, Settings
from snapshotter.data import schema
from snapshotter.errors import ConfigError, ExitCode
from snapshotter.ops import logs
from snapshotter.providers.alphavantage import AlphaVantageProvider
from snapshotter.providers.base import ENTRY_POINT_GROUP, DEFAULT_TIMEOUT, Provider, available_providers, get_provider
from snapshotter.providers.csv_dir import CsvDirProvider
from snapshotter.providers.polygon import PolygonProvider
from tests.conftest import ROOT, run_cli, table_rows

BUILT_IN = ["alphavantage", "csv", "polygon"]
ACME_KEY = "acme-secret-key-42"

ACME_MODULE = '''
"""A price source from outside snapshotter: fixed closes, a key from SNAPSHOTTER_ACME_API_KEY."""

from datetime import date
from decimal import Decimal

from snapshotter.core.bars import Bar
from snapshotter.errors import ProviderRefused
from snapshotter.providers.base import Provider

CLOSES = {
    date(2026, 9, 11): "99.00",  # before the range asked for: not this run's business
    date(2026, 9, 14): "101.25",
    date(2026, 9, 15): "102.50",
    date(2026, 9, 16): "100.125",
    date(2026, 9, 17): "103.000001",
    date(2026, 9, 18): "104.75",
}


class AcmeProvider(Provider):
    name = "acme"

    def __init__(self, key):
        self.key = key
        self.calls = []

    @classmethod
    def from_settings(cls, settings):
        return cls(cls.setting(settings, "API_KEY", required=True, secret=True))

    def daily_closes(self, symbol, start, end, *, size=None):
        self.calls.append((symbol, start, end))
        if self.key != "acme-secret-key-42":
            raise ProviderRefused(f"acme: key {self.key} refused")
        return [Bar(symbol, d, Decimal(c)) for d, c in CLOSES.items() if d <= end]
'''

METADATA = "Metadata-Version: 2.1\nName: acme-prices\nVersion: 0.1\n"
ENTRY_POINTS = textwrap.dedent(
    f"""\
    [{ENTRY_POINT_GROUP}]
    acme = acme_prices:AcmeProvider
    broken = acme_broken:BrokenProvider
    notaprovider = acme_prices:CLOSES
    """
)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    """A directory holding an "installed" acme-prices distribution."""
    d = tmp_path_factory.mktemp("site")
    (d / "acme_prices.py").write_text(ACME_MODULE)
    (d / "acme_broken.py").write_text("import acme_no_such_module  # the plugin's own dependency is missing\n")
    info = d / "acme_prices-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(METADATA)
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return d


@pytest.fixture
def plugin_on_path(plugin_dir, monkeypatch):
    """The plugin visible in this process, forgotten afterwards."""
    monkeypatch.syspath_prepend(str(plugin_dir))
    yield plugin_dir
    for mod in ("acme_prices", "acme_broken"):
        sys.modules.pop(mod, None)


def plugin_env(plugin_dir: Path, **extra: str) -> dict:
    path = os.pathsep.join(filter(None, [str(plugin_dir), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, **extra}


def error_lines(r) -> list[str]:
    return [l for l in r.stderr.splitlines() if l.startswith("snapshotter: error:")]


# --- the built-ins, through their entry points ----------------------------------------------


def test_builtin_providers_are_registered_entry_points():
    assert available_providers() == BUILT_IN


def test_get_provider_builds_the_three_builtins_from_settings(tmp_path):
    csv = get_provider("csv", Settings(prices_dir=tmp_path))
    assert type(csv) is CsvDirProvider and csv.name == "csv" and csv.directory == tmp_path
    assert get_provider(None, Settings()).directory == SAMPLE_PRICES_DIR  # the default provider, the default dir

    av_key, poly_key = "AV-unit-test-key-1", "POLY-unit-test-key-2"
    av = get_provider(" AlphaVantage ", Settings(alphavantage_api_key=av_key, alphavantage_base_url="http://127.0.0.1:9/q"))
    assert type(av) is AlphaVantageProvider and av.name == "alphavantage"
    assert av._http.base_url == "http://127.0.0.1:9/q" and av._http.client.timeout.read == DEFAULT_TIMEOUT
    assert logs.redact(f"apikey {av_key}") == "apikey ***"  # registered for redaction
    av.close()

    poly = get_provider(None, Settings(provider="polygon", polygon_api_key=poly_key, polygon_base_url="http://127.0.0.1:9", provider_timeout="2.5"))
    assert type(poly) is PolygonProvider and poly.name == "polygon" and poly.capabilities.supports_grouped
    assert poly._http.client.timeout.read == 2.5 and poly._http.client.headers["Authorization"] == f"Bearer {poly_key}"
    assert logs.redact(poly_key) == "***"
    poly.close()


def test_get_provider_config_errors_for_builtins():
    for name, var in (("alphavantage", "ALPHAVANTAGE_API_KEY"), ("polygon", "POLYGON_API_KEY")):
        with pytest.raises(ConfigError, match=f"^provider {name} needs {var}$") as e:
            get_provider(name, Settings())
        assert e.value.exit_code == ExitCode.CONFIG
    with pytest.raises(ConfigError, match=r"^unknown provider 'yahoo': use one of alphavantage, csv, polygon$"):
        get_provider("yahoo", Settings())


def test_core_imports_nothing_of_the_shell():
    code = (
        "import sys, snapshotter.core.bars, snapshotter.core.fetch_plan, snapshotter.core.validation\n"
        "print(sorted(m for m in sys.modules if m.startswith('snapshotter.') and not m.startswith('snapshotter.core')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert r.stdout.strip() == "[]"


# --- a plugin, in process ---------------------------------------------------------------------


def test_plugin_is_listed_and_built_with_its_own_settings(plugin_on_path):
    assert available_providers() == ["acme", "alphavantage", "broken", "csv", "notaprovider", "polygon"]
    env = {"SNAPSHOTTER_ACME_API_KEY": ACME_KEY, "SNAPSHOTTER_PROVIDER": "acme"}
    p = get_provider(None, Settings.from_env(env))
    assert type(p).__module__ == "acme_prices" and isinstance(p, Provider) and p.name == "acme"
    assert p.key == ACME_KEY and logs.redact(ACME_KEY) == "***"
    assert [b.close for b in p.daily_closes("XYZ", date(2026, 9, 14), date(2026, 9, 15))] == [
        Decimal("99.00"), Decimal("101.25"), Decimal("102.50")
    ]


def test_plugin_errors_are_config_errors_naming_the_provider(plugin_on_path):
    with pytest.raises(ConfigError, match="^provider acme needs SNAPSHOTTER_ACME_API_KEY$"):
        get_provider("acme", Settings.from_env({}))
    with pytest.raises(ConfigError) as e:
        get_provider("broken", Settings())
    assert str(e.value) == (
        "provider 'broken' (acme_broken:BrokenProvider) cannot be loaded: "
        "ModuleNotFoundError: No module named 'acme_no_such_module'"
    )
    with pytest.raises(ConfigError, match=r"^provider 'notaprovider' \(acme_prices:CLOSES\) is not a snapshotter Provider class$"):
        get_provider("notaprovider", Settings())
    with pytest.raises(ConfigError, match=r"^unknown provider 'nope': use one of acme, alphavantage, broken, csv, notaprovider, polygon$"):
        get_provider("nope", Settings())


# --- a plugin, through the real CLI ----------------------------------------------------------


@pytest.mark.slow
def test_cli_symbol_batch_with_a_plugin_provider_stores_its_rows(db_url, engine, plugin_dir):
    env = plugin_env(plugin_dir, SNAPSHOTTER_ACME_API_KEY=ACME_KEY)
    r = run_cli("symbol-batch", "--provider", "acme", "--symbols", "XYZ", "--from", "2026-09-14", "--to", "2026-09-18",
                "--json", db_url=db_url, env=env)
    assert r.returncode == 0, r.stderr
    assert ACME_KEY not in r.stdout + r.stderr
    rows = table_rows(engine, schema.symbol_prices_daily, order_by=[schema.symbol_prices_daily.c.price_date])
    assert [(row["symbol"], row["price_date"], row["close"], row["source"]) for row in rows] == [
        ("XYZ", date(2026, 9, 14), Decimal("101.25"), "acme"),
        ("XYZ", date(2026, 9, 15), Decimal("102.5"), "acme"),
        ("XYZ", date(2026, 9, 16), Decimal("100.125"), "acme"),
        ("XYZ", date(2026, 9, 17), Decimal("103.000001"), "acme"),
        ("XYZ", date(2026, 9, 18), Decimal("104.75"), "acme"),
    ]


@pytest.mark.slow
def test_cli_unknown_or_misconfigured_plugin_exits_78(db_url, engine, plugin_dir):
    args = ("symbol-batch", "--symbols", "XYZ", "--from", "2026-09-14", "--to", "2026-09-18")
    r = run_cli(*args, "--provider", "nope", db_url=db_url, env=plugin_env(plugin_dir))
    assert r.returncode == 78, r.stderr
    assert error_lines(r) == [
        "snapshotter: error: unknown provider 'nope': use one of acme, alphavantage, broken, csv, notaprovider, polygon"
    ]

    r = run_cli(*args, "--provider", "broken", db_url=db_url, env=plugin_env(plugin_dir))
    assert r.returncode == 78, r.stderr
    assert error_lines(r) == [
        "snapshotter: error: provider 'broken' (acme_broken:BrokenProvider) cannot be loaded: "
        "ModuleNotFoundError: No module named 'acme_no_such_module'"
    ]

    r = run_cli(*args, db_url=db_url, env=plugin_env(plugin_dir, SNAPSHOTTER_PROVIDER="acme"))
    assert r.returncode == 78, r.stderr
    assert error_lines(r) == ["snapshotter: error: provider acme needs SNAPSHOTTER_ACME_API_KEY"]

    # the plugin's own refusal (exit 78), its key redacted although the message quotes it
    r = run_cli(*args, "--provider", "acme", db_url=db_url, env=plugin_env(plugin_dir, SNAPSHOTTER_ACME_API_KEY="wrong-acme-key"))
    assert r.returncode == 78, r.stderr
    assert "wrong-acme-key" not in r.stdout + r.stderr
    assert error_lines(r) == ["snapshotter: error: provider refused the request, run aborted: acme: key *** refused"]
    assert table_rows(engine, schema.symbol_prices_daily) == []
