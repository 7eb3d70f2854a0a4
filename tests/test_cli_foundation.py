"""The CLI's foundation: help, migrations, loading CSV files, exit codes and stored rows.

In-process (conftest.invoke) except one check per exit-code family run as a real
process (conftest.run_cli), so the codes are also checked exactly as cron sees them.
"""

import json
from decimal import Decimal

import pytest

from snapshotter.data import db, schema
from snapshotter.ops import logs
from tests.conftest import invoke, row_counts, run_cli, table_rows

EMPTY = {t.name: 0 for t in schema.metadata.sorted_tables}


def test_help_on_every_command():
    for args in ([], ["db"], ["db", "upgrade"], ["load"], ["status"]):
        r = invoke(*args, "--help")
        assert r.returncode == 0, r.stderr
        assert "Usage" in r.stdout


def test_db_upgrade_then_status_json(db_url, engine):
    r = invoke("db", "upgrade", db_url=db_url)
    assert r.returncode == 0, r.stderr
    r = invoke("status", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["schema_revision"] == report["schema_head"] == db.head_revision()
    assert report["tables"] == EMPTY


@pytest.mark.slow  # a real process
def test_fresh_sqlite_file_is_created_and_migrated(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    r = run_cli("load", "--sample", db_url=url)  # a real process: exit 0 as cron sees it
    assert r.returncode == 0, r.stderr
    assert "portfolios: 5 rows" in r.stdout
    r = invoke("db", "current", db_url=url)
    assert f"current: {db.head_revision()}" in r.stdout


def test_no_migrate_refuses_an_old_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    r = invoke("--no-migrate", "load", "--sample", db_url=url)
    assert r.returncode == 78
    assert "snapshotter db upgrade" in r.stderr


@pytest.mark.slow  # a real process
def test_unreachable_database_exits_69_and_masks_the_password():
    r = run_cli("status", db_url="postgresql+psycopg://app:hunter2secret@127.0.0.1:1/nowhere")  # a real process: 69
    assert r.returncode == 69
    assert "hunter2secret" not in r.stderr + r.stdout
    lines = [l for l in r.stderr.splitlines() if l.startswith("snapshotter: error:")]
    assert len(lines) == 1 and "app:***@127.0.0.1:1" in lines[0]


@pytest.mark.slow  # a real process
def test_unknown_option_exits_64():
    r = run_cli("status", "--bogus")  # a real process: main() maps Click's usage error 2 to 64
    assert r.returncode == 64
    assert "No such option: --bogus" in r.stderr
    r = invoke("status", "--bogus")
    assert r.returncode == 64


@pytest.mark.slow  # a real process
def test_unsupported_database_is_a_config_error():
    r = run_cli("status", db_url="mysql://x@localhost/db")  # a real process: 78
    assert r.returncode == 78


def write(path, text):
    path.write_text(text)
    return path


def test_load_rejects_a_file_with_a_bad_row_whole(db_url, engine, tmp_path):
    pf = write(tmp_path / "p.csv", "id,name\n11111111-1111-1111-1111-111111111111,A\n")
    pos = write(
        tmp_path / "pos.csv",
        "id,portfolio_id,symbol,quantity,entry_price,entry_date\n"
        "21111111-1111-1111-1111-111111111111,11111111-1111-1111-1111-111111111111,AAPL,10,100.5,2026-01-05\n"
        "31111111-1111-1111-1111-111111111111,11111111-1111-1111-1111-111111111111,AAPL,ten,100.5,2026-01-05\n"
        "41111111-1111-1111-1111-111111111111,11111111-1111-1111-1111-111111111111,MSFT,1,1,2026-13-05\n",
    )
    r = invoke("load", "--portfolios", str(pf), "--positions", str(pos), db_url=db_url)
    assert r.returncode == 64
    assert f"{pos}:3: not a decimal: 'ten'" in r.stderr
    assert f"{pos}:4:" in r.stderr
    assert row_counts(engine) == EMPTY  # parsed everything before writing anything


def test_load_unknown_portfolio_is_rejected(db_url, engine, tmp_path):
    pos = write(
        tmp_path / "pos.csv",
        "id,portfolio_id,symbol,quantity,entry_price,entry_date\n"
        "21111111-1111-1111-1111-111111111111,99999999-1111-1111-1111-111111111111,AAPL,10,100.5,2026-01-05\n",
    )
    r = invoke("load", "--positions", str(pos), db_url=db_url)
    assert r.returncode == 64
    assert "unknown portfolio_id" in r.stderr
    assert row_counts(engine)["positions"] == 0


def test_load_is_idempotent_and_exact(db_url, engine, tmp_path):
    pf = write(tmp_path / "p.csv", "id,name,base_currency\n11111111-1111-1111-1111-111111111111,A,usd\n")
    cash = write(tmp_path / "c.csv", "id,portfolio_id,txn_date,amount\n51111111-1111-1111-1111-111111111111,11111111-1111-1111-1111-111111111111,2026-01-02,1000.123456\n")
    prices = write(tmp_path / "px.csv", "symbol,price_date,close\naapl,2026-01-02,190.10\n")
    for _ in range(2):
        r = invoke("load", "--portfolios", str(pf), "--cash", str(cash), "--prices", str(prices), db_url=db_url)
        assert r.returncode == 0, r.stderr
    counts = row_counts(engine)
    assert (counts["portfolios"], counts["cash_transactions"], counts["symbol_prices_daily"]) == (1, 1, 1)
    (p,) = table_rows(engine, schema.portfolios)
    assert p["base_currency"] == "USD"
    (c,) = table_rows(engine, schema.cash_transactions)
    assert c["amount"] == Decimal("1000.123456")
    (px,) = table_rows(engine, schema.symbol_prices_daily)
    assert (px["symbol"], str(px["price_date"]), px["close"], px["source"]) == ("AAPL", "2026-01-02", Decimal("190.100000"), "csv-import")


def test_load_sample(db_url, engine):
    r = invoke("load", "--sample", db_url=db_url)
    assert r.returncode == 0, r.stderr
    counts = row_counts(engine)
    assert counts["portfolios"] == 5 and counts["positions"] > 10 and counts["watchlist"] == 1


def test_a_password_given_with_database_url_is_registered_for_redaction(monkeypatch):
    """--database-url is not in the environment; its password must still never be logged."""
    r = invoke("--database-url", "postgresql://app:0pt1on-secret@127.0.0.1:1/x", "db", "current", "--help")
    assert r.returncode == 0, r.stderr
    assert "0pt1on-secret" in r.secrets  # registered while the command ran (invoke forgets it afterwards)
    monkeypatch.setattr(logs, "_SECRETS", set(r.secrets))
    assert logs.redact("driver said: 0pt1on-secret rejected") == "driver said: *** rejected"
