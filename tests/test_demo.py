"""The README's main job end to end on the shipped sample: load, symbol-batch, portfolio-refresh, snapshots."""

import json
from decimal import Decimal

from snapshotter.data import schema
from tests.conftest import invoke, row_counts, table_rows


def test_sample_main_job_end_to_end(db_url, engine):
    assert invoke("load", "--sample", db_url=db_url).returncode == 0
    r = invoke("symbol-batch", "--from", "2025-11-24", "--to", "2026-11-24", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    batch = json.loads(r.stdout.strip().splitlines()[-1])
    assert (batch["status"], batch["symbols_fetched"], batch["provider_calls"]) == ("completed", 9, 9)
    r = invoke("portfolio-refresh", "--date", "2026-11-24", "--wait-timeout", "10s", "--json", db_url=db_url)
    assert r.returncode == 0, r.stderr
    refresh = json.loads(r.stdout.strip().splitlines()[-1])
    assert refresh["portfolios_failed"] == 0 and refresh["snapshots_created"] == row_counts(engine)["portfolio_snapshots"] > 1000
    r = invoke("snapshots", "--json", db_url=db_url)
    latest = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["name"] for x in latest] == ["Cash heavy", "Dividend", "Growth", "Retirement", "Tech tilt"]
    assert {x["snapshot_date"] for x in latest} == {"2026-11-24"}
    for x in latest:
        assert Decimal(x["total_value"]) == Decimal(x["holdings_value"]) + Decimal(x["cash_balance"])
    # A second night changes nothing.
    r = invoke("portfolio-refresh", "--date", "2026-11-24", "--json", db_url=db_url)
    assert json.loads(r.stdout.strip().splitlines()[-1])["snapshots_created"] == 0
    runs = table_rows(engine, schema.batch_run_tracking, order_by=[schema.batch_run_tracking.c.id])
    assert [(x["batch_type"], x["status"]) for x in runs] == [
        ("symbol_batch", "completed"), ("portfolio_refresh", "completed"), ("portfolio_refresh", "completed"),
    ]
