"""Snapshots stay true when the past changes (migration 0006, snapshotter/data/invalidation_sql.py).

Every edit is made by raw SQL through a separate engine, as another application would;
then a run; then every snapshot of every live portfolio must equal a from-scratch
recompute of the same data (all snapshots deleted, the same nightly run again), row for
row, including the created and the deleted ones.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from snapshotter.core.calendar import trading_days_between
from snapshotter.data import dialect, schema
from snapshotter.jobs import snapshots as job
from snapshotter.ops import status as ops_status
from tests.conftest import invoke
from tests.factories import NOW, D, add_cash, add_closes, add_lot, add_portfolio, crash_on_call, snapshots

DAYS = trading_days_between(D("2026-09-01"), D("2026-09-18"))
T = D("2026-09-18")
KEY = ("portfolio_id", "snapshot_date")
SKIP = {"id", "created_at", "updated_at"}


def opts(**kw):
    return job.Options(**{"workers": 1, "wait_for_batch": False, **kw})


def refresh(engine, target=T, **kw):
    return job.portfolio_refresh(engine, target, opts(**kw), now=NOW)


def rows(engine, exclude=()):
    return {
        (r["portfolio_id"], r["snapshot_date"]): {k: v for k, v in r.items() if k not in SKIP}
        for r in snapshots(engine) if r["portfolio_id"] not in exclude
    }


def pending(engine) -> int:
    with engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(schema.snapshot_invalidations)).scalar_one()


def assert_exact(engine, frozen):
    """The live portfolios' snapshots equal a from-scratch run's; ``frozen`` (deleted portfolios) are kept as they were."""
    now = rows(engine, exclude=frozen)
    assert now == from_scratch(engine, exclude=frozen)


def from_scratch(engine, target=T, exclude=()):
    """Every snapshot deleted (that records nothing), the same nightly run again: the reference."""
    with engine.begin() as c:
        c.execute(schema.portfolio_snapshots.delete())
    assert pending(engine) == 0
    refresh(engine, target)
    return rows(engine, exclude)


class Raw:
    """Another application: its own engine, plain SQL."""

    def __init__(self, url):
        self.eng = sa.create_engine(url)
        self.sqlite = self.eng.dialect.name == "sqlite"

    def id(self, value: uuid.UUID):
        return value.hex if self.sqlite else value

    def __call__(self, sql: str, **params):
        params = {k: self.id(v) if isinstance(v, uuid.UUID) else v for k, v in params.items()}
        with self.eng.begin() as c:
            c.execute(sa.text(sql), params)

    def close(self):
        self.eng.dispose()


@pytest.fixture
def raw(db_url):
    r = Raw(db_url)
    yield r
    r.close()


def closes(start):
    return {d: Decimal(start) + i for i, d in enumerate(DAYS)}


@pytest.fixture
def world(engine):
    """Portfolios with history up to T, each with one kind of edit to come (names say which)."""
    with engine.begin() as c:
        add_closes(c, "AAA", closes("100"))
        add_closes(c, "BBB", {d: v for d, v in closes("50").items() if d != D("2026-09-11")})  # one close arrives late
        p = {n: add_portfolio(c, n) for n in [
            "backdate", "qty", "price", "soft", "hard", "exit", "deposit", "move_a", "move_b", "only", "close", "late",
            "deleted", "restored", "untouched", "symbol_change",
        ]}
        lots = {}
        for n, pid in p.items():
            add_cash(c, pid, "2026-09-14" if n == "only" else "2026-09-03", "1000")
        lots["backdate"] = add_lot(c, p["backdate"], "AAA", "1", "90", "2026-09-10")
        for n in ["qty", "price", "exit", "close", "untouched", "symbol_change"]:
            lots[n] = add_lot(c, p[n], "AAA", "2", "95", "2026-09-02")
        for n in ["soft", "hard"]:
            add_lot(c, p[n], "AAA", "1", "95", "2026-09-02")
            lots[n] = add_lot(c, p[n], "BBB", "3", "40", "2026-09-04")
        lots["move"] = add_lot(c, p["move_a"], "AAA", "5", "99", "2026-09-08")
        add_lot(c, p["move_b"], "BBB", "1", "45", "2026-09-02")
        lots["only"] = add_lot(c, p["only"], "AAA", "1", "98", "2026-09-01")
        lots["late"] = add_lot(c, p["late"], "BBB", "4", "49", "2026-09-02")
        add_lot(c, p["deleted"], "AAA", "1", "97", "2026-09-02")
        add_lot(c, p["restored"], "AAA", "1", "97", "2026-09-02")
    refresh(engine, D("2026-09-14"))
    with engine.begin() as c:
        c.execute(schema.portfolios.update().where(schema.portfolios.c.id == p["restored"]).values(deleted_at=NOW))
    refresh(engine, T)
    assert pending(engine) == 0
    return p, lots


def test_every_kind_of_edit_is_recomputed_exactly(engine, raw, world):
    p, lots = world
    before_deleted = [r for r in snapshots(engine, p["deleted"])]
    raw("INSERT INTO positions (id, portfolio_id, symbol, quantity, entry_price, entry_date) "
        "VALUES (:id, :p, 'BBB', '7', '41', '2026-09-02')", id=uuid.uuid4(), p=p["backdate"])
    raw("UPDATE positions SET quantity = '3.5' WHERE id = :id", id=lots["qty"])
    raw("UPDATE positions SET entry_price = '80' WHERE id = :id", id=lots["price"])
    raw("UPDATE positions SET deleted_at = CURRENT_TIMESTAMP WHERE id = :id", id=lots["soft"])
    raw("DELETE FROM positions WHERE id = :id", id=lots["hard"])
    raw("UPDATE positions SET exit_date = '2026-09-08', exit_price = '105' WHERE id = :id", id=lots["exit"])
    raw("INSERT INTO cash_transactions (id, portfolio_id, txn_date, amount) VALUES (:id, :p, '2026-09-02', '250.5')",
        id=uuid.uuid4(), p=p["deposit"])
    raw("UPDATE positions SET portfolio_id = :b WHERE id = :id", b=p["move_b"], id=lots["move"])
    raw("DELETE FROM positions WHERE id = :id", id=lots["only"])
    raw("UPDATE symbol_prices_daily SET close = '111.5' WHERE symbol = 'AAA' AND price_date = '2026-09-09'")
    raw("INSERT INTO symbol_prices_daily (symbol, price_date, close, source, fetched_at) "
        "VALUES ('BBB', '2026-09-11', '60', 'other', CURRENT_TIMESTAMP)")
    raw("UPDATE positions SET symbol = 'BBB' WHERE id = :id", id=lots["symbol_change"])
    raw("UPDATE portfolios SET deleted_at = CURRENT_TIMESTAMP WHERE id = :id", id=p["deleted"])
    raw("UPDATE portfolios SET deleted_at = NULL WHERE id = :id", id=p["restored"])
    assert pending(engine) >= 14

    r = refresh(engine)
    assert pending(engine) == 0
    s = r.stats
    assert s["portfolios_invalidated"] >= 12
    assert s["snapshots_created_by_invalidation"] > 0 and s["snapshots_deleted_by_invalidation"] > 0
    assert s["snapshots_recomputed_by_invalidation"] > 0
    after = rows(engine, exclude={p["deleted"]})
    assert snapshots(engine, p["deleted"]) == before_deleted  # a deleted portfolio's history is kept as it was
    only = sorted(d for (pid, d) in after if pid == p["only"])
    assert only[0] == D("2026-09-14")  # the days before its new first activity are gone
    backdated = sorted(d for (pid, d) in after if pid == p["backdate"])
    assert backdated[0] == D("2026-09-02")  # history extended back
    restored = sorted(d for (pid, d) in after if pid == p["restored"])
    assert restored[-1] == T and len(restored) == len([d for d in DAYS if d >= D("2026-09-02")])
    assert_exact(engine, {p["deleted"]})


def test_history_no_longer_due_is_deleted_and_counted(engine, raw):
    """A portfolio whose every lot and deposit goes has no day due any more: its history from the
    earliest change is deleted; one whose first activity moves later keeps only the days from it."""
    with engine.begin() as c:
        add_closes(c, "AAA", closes("100"))
        gone, later = add_portfolio(c, "gone"), add_portfolio(c, "later")
        gone_lot = add_lot(c, gone, "AAA", "1", "90", "2026-09-08")
        early = add_lot(c, later, "AAA", "1", "90", "2026-09-02")
        add_lot(c, later, "AAA", "2", "95", "2026-09-15")
    refresh(engine)
    assert len(snapshots(engine, gone)) == len([d for d in DAYS if d >= D("2026-09-08")])
    raw("DELETE FROM positions WHERE id = :id", id=gone_lot)
    raw("UPDATE positions SET deleted_at = CURRENT_TIMESTAMP WHERE id = :id", id=early)
    r = refresh(engine)
    gone_days = len([d for d in DAYS if d >= D("2026-09-08")])
    later_days = len([d for d in DAYS if D("2026-09-02") <= d < D("2026-09-15")])
    assert r.stats["snapshots_deleted_by_invalidation"] == gone_days + later_days
    assert snapshots(engine, gone) == []
    assert [s["snapshot_date"] for s in snapshots(engine, later)] == [d for d in DAYS if d >= D("2026-09-15")]
    assert pending(engine) == 0
    assert_exact(engine, set())


def test_a_symbol_correction_reaches_every_holder_and_only_them(engine, raw, world):
    p, _ = world
    untouched = rows(engine)
    raw("UPDATE symbol_prices_daily SET close = '77' WHERE symbol = 'BBB' AND price_date = '2026-09-16'")
    r = refresh(engine)
    holders = {p[n] for n in ["soft", "hard", "move_b", "late"]}
    assert r.stats["portfolios_invalidated"] == len(holders)
    after = rows(engine)
    changed = {k[0] for k in after if after[k] != untouched.get(k)}
    assert changed == holders
    # recomputed from 09-16; the days after it came out the same and were left as they were
    rewritten = len([k for k in after if after[k] != untouched.get(k)])
    assert r.stats["snapshots_unchanged_by_invalidation"] == r.stats["snapshots_recomputed_by_invalidation"] - rewritten > 0
    assert_exact(engine, {p["deleted"], p["restored"]})


def test_what_changes_nothing_records_nothing(engine, raw, world):
    with engine.begin() as c:  # the nightly batch's upsert of the same closes
        prices = [dict(r._mapping) for r in c.execute(sa.select(schema.symbol_prices_daily))]
        dialect.upsert(c, schema.symbol_prices_daily, prices, ["symbol", "price_date"],
                       ["open", "high", "low", "close", "volume", "source", "fetched_at"])
    raw("UPDATE positions SET last_price = NULL, market_value = NULL, market_value_date = NULL")
    raw("UPDATE portfolios SET name = 'renamed'")
    r = refresh(engine)  # the market-value pass rewrites every open lot; the snapshot writes
    assert r.stats["positions_valued"] > 0
    with engine.begin() as c:
        c.execute(schema.portfolio_snapshots.delete().where(schema.portfolio_snapshots.c.snapshot_date == T))
    refresh(engine)
    assert pending(engine) == 0


def test_many_edits_of_one_portfolio_are_one_recompute_from_the_earliest(engine, raw, world):
    p, lots = world
    for q in ["3", "4", "5"]:
        raw("UPDATE positions SET quantity = :q WHERE id = :id", q=q, id=lots["qty"])
    raw("INSERT INTO cash_transactions (id, portfolio_id, txn_date, amount) VALUES (:id, :p, '2026-09-15', '1')",
        id=uuid.uuid4(), p=p["qty"])
    assert pending(engine) in (3, 4)  # SQLite skips the cash row: an earlier row of that portfolio is pending
    r = refresh(engine)
    assert r.stats["portfolios_invalidated"] == 1
    assert r.stats["snapshots_recomputed_by_invalidation"] == len([d for d in DAYS if d >= D("2026-09-02")])
    assert_exact(engine, {p["deleted"], p["restored"]})


def test_a_crash_between_chunks_loses_nothing(engine, raw, world, monkeypatch):
    p, lots = world
    for n in ["qty", "price", "exit", "close", "untouched"]:
        raw("UPDATE positions SET quantity = '9' WHERE id = :id", id=lots[n])
    raw("UPDATE symbol_prices_daily SET close = '1' WHERE symbol = 'BBB' AND price_date = '2026-09-15'")
    crash_on_call(monkeypatch, "_recompute_chunk", 3)
    with pytest.raises(KeyboardInterrupt):
        refresh(engine, chunk_size=1)
    monkeypatch.undo()
    assert 0 < pending(engine)
    with engine.connect() as c:  # the symbol row became one row per holder before any chunk
        assert c.execute(sa.select(sa.func.count()).where(schema.snapshot_invalidations.c.symbol.is_not(None))).scalar_one() == 0
    refresh(engine, chunk_size=2)
    assert pending(engine) == 0
    assert_exact(engine, {p["deleted"], p["restored"]})


def test_an_invalidation_older_than_the_cap_is_reported(engine, raw, world):
    p, lots = world
    raw("UPDATE positions SET entry_date = '2026-09-02', quantity = '8' WHERE id = :id", id=lots["backdate"])
    r = refresh(engine, max_backfill_days=10)  # window 2026-09-09..18
    assert r.stats["invalidations_before_window"] == 1
    assert r.stats["invalidations_oldest_from"] == "2026-09-02"
    mine = {d: r for (pid, d), r in rows(engine).items() if pid == p["backdate"]}
    assert min(mine) == D("2026-09-03")  # before the window: not recomputed (reported)
    assert mine[D("2026-09-09")]["holdings_value"] == Decimal("840")  # 8 x 105: the window was
    assert mine[D("2026-09-08")]["holdings_value"] == Decimal("0")
    assert pending(engine) == 0


def test_an_invalidation_written_during_the_run_is_kept(engine, raw, world, monkeypatch):
    p, lots = world
    raw("UPDATE positions SET quantity = '6' WHERE id = :id", id=lots["qty"])
    original = job._recompute_chunk

    def writing(*a, **kw):
        raw("UPDATE positions SET quantity = '7' WHERE id = :id", id=lots["price"])
        return original(*a, **kw)

    monkeypatch.setattr(job, "_recompute_chunk", writing)
    refresh(engine)
    monkeypatch.undo()
    assert pending(engine) == 1
    refresh(engine)
    assert pending(engine) == 0
    assert_exact(engine, {p["deleted"], p["restored"]})


def test_recompute_command_status_and_dry_run(db_url, engine, raw, world):
    p, lots = world
    raw("UPDATE positions SET quantity = '6' WHERE id = :id", id=lots["qty"])
    raw("UPDATE positions SET quantity = '6' WHERE id = :id", id=lots["price"])
    rep = ops_status.status_report(engine, NOW)
    assert rep["invalidations"]["pending"] == 2
    assert rep["invalidations"]["portfolios"] == 2
    assert rep["invalidations"]["oldest_from_date"] == "2026-09-02"
    out = invoke("--now", NOW.isoformat(), "status", "--json", db_url=db_url)
    assert '"invalidations"' in out.stdout
    before = rows(engine)
    dry = invoke("--now", NOW.isoformat(), "recompute", "--dry-run", "--json", "--max-backfill-days", "120", db_url=db_url)
    assert dry.returncode == 0, dry.stderr
    assert '"snapshots_recomputed_by_invalidation": 24' in dry.stdout
    assert rows(engine) == before and pending(engine) == 2
    one = invoke("--now", NOW.isoformat(), "recompute", "--portfolio", str(p["qty"]), "--max-backfill-days", "120", db_url=db_url)
    assert one.returncode == 0, one.stderr
    assert pending(engine) == 1
    done = invoke("--now", NOW.isoformat(), "recompute", "--json", "--max-backfill-days", "120", db_url=db_url)
    assert done.returncode == 0 and pending(engine) == 0
    with engine.connect() as c:
        row = c.execute(sa.select(schema.batch_run_tracking.c.stats).where(
            schema.batch_run_tracking.c.batch_type == "portfolio_recompute").order_by(schema.batch_run_tracking.c.id.desc())).first()
    assert row.stats["portfolios_invalidated"] == 1
