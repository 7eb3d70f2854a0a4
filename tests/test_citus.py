"""README "Running on Citus": the distribution plan, Citus's schema rules, the preparation DDL,
and the rule that the engine joins distributed tables only on their distribution columns.

The Citus extension is not installable here: nothing in this file runs a Citus function. What
is checked is what plain PostgreSQL and the expression trees can show (README says which).
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from snapshotter.core.valuation import portfolio_activity
from snapshotter.ops import status
from snapshotter.data import citus, frontier_sql, invalidation_sql, market_value_sql, planning_sql, schema, snapshot_sql, spans, steps_sql
from tests.citus_joins import check
from tests.conftest import ROOT, invoke, row_counts, scratch_database

SPEC_KEYS = {"positions": ["id"], "cash_transactions": ["id"], "portfolio_snapshots": ["id"]}


# --- the rules over a MetaData -------------------------------------------------------------


def test_the_shipped_schema_breaks_citus_rules_only_with_the_spec_keys():
    """positions.id, cash_transactions.id and portfolio_snapshots.id are primary keys alone (the
    contract's keys; portfolio_snapshots' is whatever the schema has, e.g. (id, snapshot_date)
    once it is partitioned): each lacks portfolio_id. Nothing else breaks a rule, and every
    table of the schema is in the plan."""
    expected = sorted(
        f"{name}: primary key ({', '.join(c.name for c in schema.metadata.tables[name].primary_key.columns)}) "
        "lacks the distribution column portfolio_id"
        for name in SPEC_KEYS
    )
    assert citus.violations(schema.metadata) == expected
    assert [c.name for c in schema.positions.primary_key.columns] == ["id"]
    assert [c.name for c in schema.cash_transactions.primary_key.columns] == ["id"]
    assert [c.name for c in schema.portfolios.primary_key.columns] == ["id"]
    planned = {*citus.PLAN.distributed, *citus.PLAN.reference, *citus.PLAN.local}
    assert set(schema.metadata.tables) <= planned


def _md(*tables):
    md = sa.MetaData()
    for build in tables:
        build(md)
    return md


def _portfolios(md):
    sa.Table("portfolios", md, sa.Column("id", sa.Uuid, primary_key=True))


def _lots(md, *extra):
    sa.Table("positions", md, sa.Column("id", sa.Uuid, primary_key=True), sa.Column("portfolio_id", sa.Uuid, sa.ForeignKey("portfolios.id")),
             sa.Column("symbol", sa.Text), *extra)


def test_each_rule_is_reported():
    plan = citus.Plan(
        distributed={"portfolios": citus.Distributed("id"), "positions": citus.Distributed("portfolio_id", "portfolios"),
                     "other": citus.Distributed("owner", None)},
        reference=("prices",), local=("runs",),
    )
    md = _md(_portfolios, lambda md: _lots(md, sa.UniqueConstraint("symbol", name="uq_sym"), sa.Index("ix_u", "symbol", unique=True)))
    sa.Table("other", md, sa.Column("owner", sa.Uuid, primary_key=True), sa.Column("lot", sa.Uuid, sa.ForeignKey("positions.id")))
    sa.Table("prices", md, sa.Column("symbol", sa.Text, primary_key=True), sa.Column("pid", sa.Uuid, sa.ForeignKey("portfolios.id")))
    sa.Table("runs", md, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("stray", md, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("notes", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("pid", sa.Uuid, sa.ForeignKey("portfolios.id")),
             sa.Column("run", sa.Integer))
    got = citus.violations(md, plan)
    assert got == sorted([
        "notes: in no group of the plan (distributed, reference or local)",
        "stray: in no group of the plan (distributed, reference or local)",
        "positions: primary key (id) lacks the distribution column portfolio_id",
        "positions: unique constraint uq_sym (symbol) lacks the distribution column portfolio_id",
        "positions: unique index ix_u (symbol) lacks the distribution column portfolio_id",
        "other: foreign key (lot) -> positions(id): between tables that are not co-located",
        "prices: foreign key (pid) -> portfolios(id): from a reference table to a distributed one",
    ])
    # co-located, but not over both distribution columns; and a distributed table pointing at a local one
    plan2 = citus.Plan({"portfolios": citus.Distributed("id"), "positions": citus.Distributed("portfolio_id", "portfolios")},
                       reference=(), local=("runs",))
    md2 = _md(_portfolios)
    sa.Table("runs", md2, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("positions", md2, sa.Column("id", sa.Uuid), sa.Column("portfolio_id", sa.Uuid), sa.Column("run", sa.Integer, sa.ForeignKey("runs.id")),
             sa.PrimaryKeyConstraint("id", "portfolio_id"), sa.ForeignKeyConstraint(["id"], ["portfolios.id"]))
    assert citus.violations(md2, plan2) == [
        "positions: foreign key (id) -> portfolios(id): does not pair the distribution columns positions.portfolio_id and portfolios.id",
        "positions: foreign key (run) -> runs(id): from a distributed table to a local one",
    ]


def test_prepare_adds_the_distribution_column_and_carries_a_co_located_foreign_key_along():
    plan = citus.Plan({"portfolios": citus.Distributed("id"), "positions": citus.Distributed("portfolio_id", "portfolios"),
                       "fills": citus.Distributed("portfolio_id", "portfolios")}, reference=(), local=())
    md = _md(_portfolios)
    sa.Table("positions", md, sa.Column("id", sa.Uuid), sa.Column("portfolio_id", sa.Uuid, sa.ForeignKey("portfolios.id", name="fk_pf")),
             sa.PrimaryKeyConstraint("id", name="pk_positions"))
    sa.Table("fills", md, sa.Column("id", sa.Uuid), sa.Column("portfolio_id", sa.Uuid), sa.Column("lot_id", sa.Uuid),
             sa.PrimaryKeyConstraint("id", "portfolio_id", name="pk_fills"), sa.ForeignKeyConstraint(["lot_id"], ["positions.id"], name="fk_lot"))
    assert citus.prepare(md, plan) == [
        "ALTER TABLE fills DROP CONSTRAINT fk_lot",
        "ALTER TABLE positions DROP CONSTRAINT pk_positions, ADD CONSTRAINT pk_positions PRIMARY KEY (id, portfolio_id)",
        "ALTER TABLE fills ADD CONSTRAINT fk_lot FOREIGN KEY (lot_id, portfolio_id) REFERENCES positions (id, portfolio_id)",
    ]
    # the same key referenced from a reference table: the conversion cannot carry it, it says so
    plan_ref = citus.Plan({k: v for k, v in plan.distributed.items() if k != "fills"}, reference=("audit",), local=())
    md.remove(md.tables["fills"])
    sa.Table("audit", md, sa.Column("lot_id", sa.Uuid, sa.ForeignKey("positions.id", name="fk_audit"), primary_key=True))
    with pytest.raises(citus.CitusPlanError, match=r"audit: foreign key fk_audit references positions\(id\)"):
        citus.prepare(md, plan_ref)


def test_distribute_makes_reference_tables_first_then_the_co_located_group():
    calls = citus.distribute()
    assert calls[0] == "SET citus.enable_unsafe_triggers TO on"
    assert calls[1:8] == [f"SELECT create_reference_table('{t}')" for t in citus.PLAN.reference]
    assert calls[8:] == [
        "SELECT create_distributed_table('portfolios', 'id')",
        "SELECT create_distributed_table('positions', 'portfolio_id', colocate_with => 'portfolios')",
        "SELECT create_distributed_table('cash_transactions', 'portfolio_id', colocate_with => 'portfolios')",
        "SELECT create_distributed_table('portfolio_snapshots', 'portfolio_id', colocate_with => 'portfolios')",
        "SELECT create_distributed_table('portfolio_frontier', 'portfolio_id', colocate_with => 'portfolios')",
    ]


# --- joins ------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 25, 12, tzinfo=timezone.utc)
D1, D2 = date(2026, 11, 2), date(2026, 11, 24)


def _chunks():
    for actions in (False, True):
        for age in (0, 3):
            yield snapshot_sql.Chunk(1, 2, D1, D2, D2, age, actions)


def engine_statements():
    """Every statement the engine's SQL builders make, over the branches that change their shape
    (corporate actions on file or not, --max-price-age or not, heal, force, each dialect's form)."""
    out = []
    for ch in _chunks():
        for active in (True, False):
            for ignore in (True, False):
                out.append(("fill_chunk", snapshot_sql.fill_chunk(ch, require_active=active, ignore_existing=ignore)))
        out += [("fill_pairs_heal", snapshot_sql.fill_pairs_heal(ch)), ("fill_pairs_heal_stale", snapshot_sql.fill_pairs_heal_stale(ch)),
                ("rewrite_stored", snapshot_sql.rewrite_stored(ch, NOW))]
        for heal in (False, True):
            out.append(("valuation_select", snapshot_sql.valuation_select(ch, heal, NOW)))
            for dialect_insert in (postgresql.insert, sqlite.insert):
                for force, differing in ((False, False), (True, False), (True, True)):
                    out.append(("insert_snapshots", snapshot_sql.insert_snapshots(dialect_insert, ch, heal, force, NOW, differing)))
        if ch.max_price_age:
            out += [("stale_valued", snapshot_sql.stale_valued(ch)), ("stale_heals", snapshot_sql.stale_heals(ch))]
    out += [("fill_stale_closes", snapshot_sql.fill_stale_closes(D1, D2)), ("fill_pairs_after_last", snapshot_sql.fill_pairs_after_last()),
            ("fill_pairs_holes", snapshot_sql.fill_pairs_holes()), ("pair_counts", snapshot_sql.pair_counts()),
            ("backfilled_days", snapshot_sql.backfilled_days(D2)), ("existing_pairs", snapshot_sql.existing_pairs()),
            ("stale_written", snapshot_sql.stale_written()), ("stale_written", snapshot_sql.stale_written(new_only=False)), *(("clear_chunk", s) for s in snapshot_sql.clear_chunk())]
    for actions in (False, True):
        out += [("fill_latest_closes", s) for s in market_value_sql.fill_latest_closes(actions)]
        span = spans.in_span(spans.Span(0, 10), "postgresql")
        for scope in (market_value_sql.portfolio_range(1, 2), span, sa.and_(market_value_sql.portfolio_range(1, 2), span)):
            out.append(("update_market_values", market_value_sql.update_market_values(scope, actions)))
    out.append(("portfolios_in_span", spans.portfolios_in_span(spans.Span(0, 10), "postgresql")))
    out += [("fill_day_closes", s) for s in steps_sql.fill_day_closes()]
    priced_by = [("META", "FB", D1)]
    for pb in ((), priced_by):
        out.append(("affected_portfolios", invalidation_sql.affected_portfolios(pb)))
        for name in ("postgresql", "sqlite"):
            out += [("expand_symbols", s) for s in invalidation_sql.expand_symbols(name, 10, pb)]
    for name in ("postgresql", "sqlite"):
        out += [("claim", s) for s in invalidation_sql.claim(name, 1, 2, 10)]
    out += [("high_water", invalidation_sql.high_water()), ("pending", invalidation_sql.pending(D1, 10)),
            ("affected_ids", invalidation_sql.affected_ids(10, 1, 100, 1)), *(("describe", s) for s in invalidation_sql.describe(1, 2, D2)), ("may_have_stale", invalidation_sql.may_have_stale()), ("fill_pairs", invalidation_sql.fill_pairs(1, 2, D1, D2)),
            ("delete_stale", invalidation_sql.delete_stale(1, 2, D1, D2)), *(("clear", s) for s in invalidation_sql.clear())]
    out += [("priced_days_between", planning_sql.priced_days_between(D1, D2)),
            ("days_without_snapshots", planning_sql.days_without_snapshots(D1, D2)),
            ("live_portfolio_ids", planning_sql.live_portfolio_ids(1, 100)), ("live_portfolio_count", planning_sql.live_portfolio_count()),
            ("portfolio_state", planning_sql.portfolio_state(1)),
            ("symbols_needed", planning_sql.symbols_needed(D2)), ("symbols_needed", planning_sql.symbols_needed(D2, [("FB", "META")])),
            *(("last_cached", s) for s in planning_sql.last_cached(["A", "B"], D2)),
            *(("cached_days", s) for s in planning_sql.cached_days(["A", "B"], D1, D2)),
            ("portfolio_activity", sa.select(portfolio_activity(D2)))]
    for ins in (postgresql.insert, sqlite.insert):
        out += [("record_chunk", frontier_sql.record_chunk(ins, 1, 2, D2, from_chunk=f)) for f in (True, False)]
        out.append(("forget_recomputed", frontier_sql.forget_recomputed(ins, sa.select(invalidation_sql.affected.c.portfolio_id))))
    out += [("frontier_counts", frontier_sql.counts(D2)), ("any_pending", frontier_sql.any_pending()),
            ("unknown_ids", frontier_sql.unknown_ids(D2, 1, 10)), ("exact_freshness", status._exact_freshness(D2, [1, 2]))]
    return out


def test_the_engine_joins_distributed_tables_only_on_their_distribution_columns():
    reports = [(name, check(stmt)) for name, stmt in engine_statements()]
    assert [(name, p) for name, r in reports for p in r.problems] == []
    # not vacuous: the valuation, the chunk's plan and the recompute do join distributed tables
    joined = {name for name, r in reports if len(r.instances) > 1}
    assert {"fill_chunk", "valuation_select", "insert_snapshots", "rewrite_stored", "describe",
            "stale_heals", "portfolio_activity", "symbols_needed"} <= joined
    # The valuation joins lots and cash (and writes snapshots) per (portfolio, day) of _snap_pairs: its
    # distribution columns meet only through that scratch table's portfolio_id, which on Citus is local
    # to the coordinator (README "Running on Citus", what is not verified).
    assert {name for name, r in reports if r.through_scratch} == {
        "valuation_select", "insert_snapshots", "rewrite_stored", "stale_valued", "stale_heals"}


def test_the_join_check_sees_a_join_on_another_column_and_a_missing_join():
    p, c, s = schema.positions, schema.cash_transactions, schema.portfolio_snapshots
    on_date = sa.select(p.c.id).join(c, c.c.txn_date == p.c.entry_date)
    assert check(on_date).problems == [
        "distributed tables not joined on their distribution columns: positions | cash_transactions",
        "distributed tables joined on cash_transactions.txn_date, positions.entry_date",
    ]
    # through a derived column and a temporary table: still the chain decides
    pairs = snapshot_sql.pairs_t
    sub = sa.select(p.c.symbol.label("k")).subquery()
    through = sa.select(pairs.c.d).join(sub, sub.c.k == pairs.c.portfolio_id).join(s, s.c.portfolio_id == pairs.c.portfolio_id)
    assert check(through).problems == [
        "distributed tables not joined on their distribution columns: positions | portfolio_snapshots",
        "distributed tables joined on positions.symbol",
    ]
    # a subquery that names the outer table but does not correlate to it (the enclosing EXISTS lacks it)
    pf = schema.portfolios
    inner = sa.exists().where(pf.c.id == s.c.portfolio_id)
    uncorrelated_copy = s.delete().where(sa.exists().where(pairs.c.portfolio_id == s.c.portfolio_id, inner))
    assert check(uncorrelated_copy).problems == ["portfolio_snapshots read again by a subquery that does not correlate to it"]
    uncorrelated = sa.select(s.c.id).where(s.c.snapshot_date == sa.select(sa.func.max(p.c.entry_date)).scalar_subquery())
    assert check(uncorrelated).problems == ["distributed tables not joined on their distribution columns: portfolio_snapshots | positions"]
    # INSERT ... SELECT fills portfolio_id from another column
    wrong_insert = s.insert().from_select(["portfolio_id", "snapshot_date"], sa.select(p.c.id, p.c.entry_date))
    assert check(wrong_insert).problems
    assert check(s.insert().from_select(["portfolio_id", "snapshot_date"], sa.select(p.c.portfolio_id, p.c.entry_date))).problems == []


# --- a real PostgreSQL database, prepared as README says ------------------------------------

NOW_ARG = "2026-11-25T12:00:00Z"  # effective trading date 2026-11-24, the last sample close
README = ROOT / "README.md"


def readme_script() -> str:
    """The ```sql block of README's "Running on Citus" that `db citus-plan` prints."""
    text = README.read_text()
    section = text[text.index("## Running on Citus\n"):]
    section = section[: section.index("\n## ", 1)]
    return re.search(r"```sql\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def fresh_pg(pg_server_url):
    """A new database on the test server (this test changes keys), dropped afterwards; its URL."""
    admin = sa.create_engine(sa.engine.make_url(pg_server_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with scratch_database(admin, "snapshotter_citus") as url:
            yield url
    finally:
        admin.dispose()


def _run_script(url: str, script: str) -> None:
    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")  # the script's own BEGIN and COMMIT
    try:
        with eng.connect() as c:
            c.exec_driver_sql(script)
    finally:
        eng.dispose()


def _reflected(url: str) -> sa.MetaData:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as c:
            return citus.reflect(c)
    finally:
        eng.dispose()


def cli(*args: str, url: str):
    r = invoke("--now", NOW_ARG, *args, db_url=url)
    assert r.returncode == 0, (args, r.stderr[-3000:])
    return r


def last_json(r) -> dict:
    return json.loads(r.stdout.strip().splitlines()[-1])


class Captured:
    """Every SQLAlchemy statement any engine of this process executes while it is open."""

    def __enter__(self):
        self.statements: list = []
        self._fn = lambda conn, clause, *rest: self.statements.append(clause)
        sa.event.listen(sa.engine.Engine, "before_execute", self._fn)
        return self

    def __exit__(self, *exc):
        sa.event.remove(sa.engine.Engine, "before_execute", self._fn)


def test_a_database_prepared_for_citus_keeps_its_rules_and_runs_the_whole_chain(fresh_pg, tmp_path):
    """README's preparation on a real database at head (everything but the Citus calls, which need
    the extension): Citus's rules then hold on the reflected database, and the jobs run on it
    with the same results as on the default schema (the counts below are test_demo's sample
    run's, the same on both). Every statement they executed is put through the join check."""
    url = fresh_pg
    cli("db", "upgrade", url=url)
    before = _reflected(url)
    # the migrations give the shipped keys, but for the snapshots' on PostgreSQL: partitioned by month (0008)
    shipped = [v.replace("primary key (id) lacks", "primary key (id, snapshot_date) lacks") if v.startswith("portfolio_snapshots:") else v
               for v in citus.violations(schema.metadata)]
    assert citus.violations(before) == shipped
    full = cli("db", "citus-plan", url=url).stdout
    assert full == readme_script()  # README shows exactly what the command prints for this version
    script = cli("db", "citus-plan", "--prepare-only", url=url).stdout
    assert full.startswith(script) and "create_distributed_table" not in script
    _run_script(url, script)
    after = _reflected(url)
    assert citus.violations(after) == []
    assert [c.name for c in after.tables["positions"].primary_key.columns] == ["id", "portfolio_id"]
    assert [c.name for c in after.tables["cash_transactions"].primary_key.columns] == ["id", "portfolio_id"]
    assert [c.name for c in after.tables["portfolios"].primary_key.columns] == ["id"]
    assert "-- nothing to change" in cli("db", "citus-plan", "--prepare-only", url=url).stdout  # a second run changes nothing

    with Captured() as seen:
        cli("load", "--sample", url=url)
        batch = last_json(cli("symbol-batch", "--provider", "csv", "--from", "2025-11-24", "--to", "2026-11-24", "--json", url=url))
        assert batch["status"] == "completed"
        r = last_json(cli("portfolio-refresh", "--json", url=url))
        assert (r["snapshots_created"], r["portfolios_active"], r["portfolios_failed"], r["days_backfilled"], r["positions_valued"]) == (
            1163, 5, 0, 244, 18)
        cli("load", "--sample", url=url)  # a reload upserts by (id, portfolio_id): nothing new
        (tmp_path / "splits.csv").write_text("symbol,ex_date,split_from,split_to\nKO,2026-06-01,1,2\n")
        cli("load", "--splits", str(tmp_path / "splits.csv"), url=url)  # history changes: the triggers record it
        r = last_json(cli("portfolio-refresh", "--json", url=url))
        assert (r["portfolios_invalidated"], r["snapshots_recomputed_by_invalidation"], r["snapshots_created"]) == (3, 372, 0)
        r = last_json(cli("refresh", "--date", "2026-11-24", "--force", "--json", url=url))
        assert (r["snapshots_created"], r["snapshots_recomputed"]) == (0, 5)
        r = last_json(cli("portfolio-refresh", "--max-price-age", "3", "--json", url=url))
        assert (r["snapshots_created"], r["snapshots_recomputed"]) == (0, 0)
        pid = "927774d2-11e2-58fa-9b74-1cf4c240933a"  # Retirement
        r = last_json(cli("backfill", "--portfolio", pid, "--from", "2026-11-02", "--to", "2026-11-24", "--force", "--json", url=url))
        assert (r["snapshots_created"], r["snapshots_recomputed"]) == (0, 17)
        cli("status", "--json", url=url)
        assert len(cli("snapshots", "--json", url=url).stdout.splitlines()) == 5
    eng = sa.create_engine(url)
    try:
        counts = row_counts(eng)
    finally:
        eng.dispose()
    assert (counts["portfolios"], counts["positions"], counts["cash_transactions"], counts["portfolio_snapshots"]) == (5, 25, 11, 1163)

    clauses = [s for s in seen.statements if isinstance(s, sa.sql.ClauseElement)]
    assert len(clauses) > 100
    problems = sorted({p for s in clauses for p in check(s).problems})
    assert problems == []
    upserts = [str(s.compile(dialect=postgresql.dialect())) for s in clauses
               if isinstance(s, sa.sql.dml.Insert) and s.table.name in ("positions", "cash_transactions")]
    assert upserts and all("ON CONFLICT (id, portfolio_id)" in u for u in upserts)


def test_the_preparation_follows_the_keys_the_database_has(fresh_pg):
    """portfolio_snapshots range-partitioned by snapshot_date, as PostgreSQL forces it, has the key
    (id, snapshot_date): the preparation adds portfolio_id to that key, on the parent and so on
    every partition, and reads the parent only."""
    url = fresh_pg
    cli("db", "upgrade", url=url)
    _run_script(url, """
        DROP TABLE portfolio_snapshots;
        CREATE TABLE portfolio_snapshots (
            id bigserial NOT NULL, portfolio_id uuid NOT NULL, snapshot_date date NOT NULL,
            CONSTRAINT pk_portfolio_snapshots PRIMARY KEY (id, snapshot_date),
            CONSTRAINT uq_portfolio_snapshots_portfolio_id_snapshot_date UNIQUE (portfolio_id, snapshot_date),
            CONSTRAINT fk_portfolio_snapshots_portfolio_id_portfolios FOREIGN KEY (portfolio_id) REFERENCES portfolios (id)
        ) PARTITION BY RANGE (snapshot_date);
        CREATE TABLE portfolio_snapshots_2026_11 PARTITION OF portfolio_snapshots FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
    """)
    md = _reflected(url)
    assert "portfolio_snapshots_2026_11" not in md.tables
    assert "portfolio_snapshots: primary key (id, snapshot_date) lacks the distribution column portfolio_id" in citus.violations(md)
    statements = citus.prepare(md)
    assert statements[-1] == ("ALTER TABLE portfolio_snapshots DROP CONSTRAINT pk_portfolio_snapshots, "
                              "ADD CONSTRAINT pk_portfolio_snapshots PRIMARY KEY (id, snapshot_date, portfolio_id)")
    _run_script(url, ";\n".join(statements))
    assert citus.violations(_reflected(url)) == []
    eng = sa.create_engine(url)
    try:
        with eng.connect() as c:
            key = c.execute(sa.text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'portfolio_snapshots_2026_11'::regclass AND contype = 'p'"
            )).scalar_one()
    finally:
        eng.dispose()
    assert key == "PRIMARY KEY (id, snapshot_date, portfolio_id)"
