"""The two PostgreSQL roles of README "Database roles", exactly as written there: the SQL
blocks of that section run on a fresh database with fresh roles, the owner migrates
(`db upgrade`) and loads the sample portfolios, and the whole nightly chain then runs
through the CLI as the job role with SNAPSHOTTER_ENV=production."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.conftest import ROOT, drop_database

README = ROOT / "README.md"
NOW = "2026-11-25T12:00:00Z"  # effective trading date 2026-11-24, the last sample close
TARGET = "2026-11-24"


def readme_sql() -> list[list[str]]:
    """The statements of each ```sql block of README's "Database roles" section, in order."""
    text = README.read_text()
    section = text[text.index("### Database roles\n"):]
    section = section[: section.index("\n## ", 1) if "\n## " in section[1:] else len(section)]
    section = section[: section.index("\n### ", 1)] if "\n### " in section[1:] else section
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    return [[st.strip() for st in b.split(";") if st.strip()] for b in blocks]


def test_the_readme_names_the_three_steps():
    admin, in_db, owner = readme_sql()
    assert any(s.startswith("CREATE ROLE snapshotter_owner") for s in admin)
    assert any(s.startswith("CREATE ROLE snapshotter_job") for s in admin)
    assert all("snapshotter_job" in s for s in in_db)
    assert all(s.startswith(("GRANT", "ALTER DEFAULT PRIVILEGES")) for s in owner)
    assert not any(re.search(r"\b(CREATE|ALL PRIVILEGES|TRUNCATE|REFERENCES|TRIGGER)\b", s) for s in owner)


@pytest.fixture
def roles(pg_server_url):
    """A fresh database and two fresh roles, named uniquely (the server is shared); dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = {"snapshotter_owner": f"snap_owner_{tag}", "snapshotter_job": f"snap_job_{tag}", "snapshotter": f"snap_roles_{tag}"}
    admin_url = make_url(pg_server_url).set(database="postgres")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")

    def named(stmt: str) -> str:
        stmt = re.sub(r"PASSWORD '[^']*'", "PASSWORD 'test-only'", stmt)
        for k in ("snapshotter_owner", "snapshotter_job"):  # role names first: they contain the database name
            stmt = re.sub(rf"\b{k}\b", names[k], stmt)
        return re.sub(r"\bsnapshotter\b", names["snapshotter"], stmt)

    urls = {role: admin_url.set(username=names[role], password="test-only", database=names["snapshotter"])
            .render_as_string(hide_password=False) for role in ("snapshotter_owner", "snapshotter_job")}
    in_db_admin = sa.create_engine(admin_url.set(database=names["snapshotter"]), isolation_level="AUTOCOMMIT")
    try:
        yield names, named, urls, admin, in_db_admin
    finally:
        in_db_admin.dispose()
        with admin.connect() as c:
            drop_database(c, names["snapshotter"])
            for role in ("snapshotter_job", "snapshotter_owner"):
                c.execute(sa.text(f'DROP ROLE IF EXISTS "{names[role]}"'))
        admin.dispose()


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHAVANTAGE", "POLYGON", "ALERT_", "HEALTHCHECK", "SNAPSHOTTER_", "DATABASE_URL"))}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "snapshotter", "--now", NOW, *args], capture_output=True, text=True,
                          env=full, timeout=300, cwd=ROOT)


def test_the_nightly_chain_runs_as_the_job_role_with_exactly_the_readme_grants(roles):
    names, named, urls, admin, in_db_admin = roles
    admin_sql, in_db_sql, owner_sql = readme_sql()
    with admin.connect() as c:
        for stmt in admin_sql:
            c.execute(sa.text(named(stmt)))
    with in_db_admin.connect() as c:
        # a hardened server: nothing for PUBLIC but what PostgreSQL 15 itself gives (USAGE on public)
        c.execute(sa.text("REVOKE EXECUTE ON FUNCTION pg_try_advisory_lock(bigint), pg_advisory_unlock(bigint) FROM PUBLIC"))
        for stmt in in_db_sql:
            c.execute(sa.text(named(stmt)))

    owner = {"DATABASE_URL": urls["snapshotter_job"], "SNAPSHOTTER_MIGRATION_DATABASE_URL": urls["snapshotter_owner"]}
    r = cli("db", "upgrade", env=owner)  # the migration URL, not DATABASE_URL (the job's)
    assert r.returncode == 0, r.stderr
    assert names["snapshotter_owner"] in r.stdout and "test-only" not in r.stdout + r.stderr
    owner_engine = sa.create_engine(urls["snapshotter_owner"])
    try:
        with owner_engine.begin() as c:
            for stmt in owner_sql:
                c.execute(sa.text(named(stmt)))
    finally:
        owner_engine.dispose()
    r = cli("load", "--sample", env={"DATABASE_URL": urls["snapshotter_owner"]})  # an import: the owner's
    assert r.returncode == 0, r.stderr

    job = {"DATABASE_URL": urls["snapshotter_job"], "SNAPSHOTTER_ENV": "production"}
    r = cli("symbol-batch", "--provider", "csv", "--json", env=job)
    assert r.returncode == 0, r.stderr
    batch = json.loads(r.stdout)
    assert (batch["status"], batch["target_date"]) == ("completed", TARGET) and batch["rows_upserted"] > 0
    r = cli("portfolio-refresh", "--json", env=job)
    assert r.returncode == 0, r.stderr
    refresh = json.loads(r.stdout)
    assert refresh["snapshots_created"] > 0 and refresh["portfolios_failed"] == 0 and refresh["positions_valued"] > 0
    r = cli("refresh", "--date", TARGET, "--force", "--json", env=job)
    assert r.returncode == 0 and json.loads(r.stdout)["snapshots_recomputed"] > 0, r.stderr
    with in_db_admin.connect() as c:
        pid = c.execute(sa.text("SELECT min(id::text) FROM portfolios")).scalar_one()
    r = cli("backfill", "--portfolio", pid, "--from", "2026-11-02", "--to", TARGET, "--force", "--json", env=job)
    assert r.returncode == 0, r.stderr
    r = cli("portfolio-refresh", "--explain", "plan", "--json", env=job)  # the DBA's view works as the job role too
    assert r.returncode == 0 and json.loads(r.stdout)["steps"], r.stderr
    r = cli("status", "--json", env=job)
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["newest_snapshot_date"] == TARGET
    r = cli("check", "--max-lag", "0", env=job)
    assert (r.returncode, r.stdout.split(":")[0]) == (0, "ok"), r.stdout + r.stderr

    with in_db_admin.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM portfolio_snapshots")).scalar_one() == refresh["snapshots_created"]
        runs = c.execute(sa.text("SELECT batch_type, status FROM batch_run_tracking ORDER BY id")).all()
        assert runs == [("symbol_batch", "completed"), ("portfolio_refresh", "completed"), ("portfolio_refresh", "completed"),
                        ("portfolio_backfill", "completed")]
        job_role = names["snapshotter_job"]
        # the job role can change no schema: no CREATE on the schema or the database, owns nothing
        assert c.execute(sa.text("SELECT has_schema_privilege(:r, 'public', 'CREATE')"), {"r": job_role}).scalar() is False
        assert c.execute(sa.text("SELECT has_database_privilege(:r, current_database(), 'CREATE')"), {"r": job_role}).scalar() is False
        assert c.execute(sa.text("SELECT count(*) FROM pg_class WHERE relowner = CAST(:r AS regrole)"), {"r": job_role}).scalar() == 0
        assert c.execute(sa.text("SELECT has_table_privilege(:r, 'portfolios', 'INSERT')"), {"r": job_role}).scalar() is False

    # retention as the job role: a 30-day window and horizon, so the year of sample history is thinned
    r = cli("prune", "--keep-daily", "30d", "--then", "monthly", "--max-backfill-days", "30", "--json", env=job)
    assert r.returncode == 0, r.stderr
    pruned = json.loads(r.stdout)
    assert pruned["snapshots_deleted"] > 0 and pruned["portfolios_pruned"] > 0
    with in_db_admin.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM portfolio_snapshots")).scalar_one() == refresh["snapshots_created"] - pruned["snapshots_deleted"]
        assert c.execute(sa.text("SELECT status FROM batch_run_tracking WHERE batch_type = 'prune'")).scalar_one() == "completed"

    # an upgrade whose job role was not granted the partition function: fine while the months exist;
    # a month to create stops the run with the fix (exit 78), and once the owner made it, the run goes
    with in_db_admin.connect() as c:
        c.execute(sa.text(f"REVOKE EXECUTE ON FUNCTION snapshotter_ensure_snapshot_partitions(date, date) FROM {job_role}"))
    r = cli("refresh", "--date", TARGET, "--force", env=job)
    assert r.returncode == 0, r.stderr
    with in_db_admin.connect() as c:
        c.execute(sa.text("DROP TABLE portfolio_snapshots_2026_11"))
        left = c.execute(sa.text("SELECT count(*) FROM portfolio_snapshots")).scalar_one()
    r = cli("backfill", "--portfolio", pid, "--from", "2026-11-02", "--to", TARGET, env=job)
    assert r.returncode == 78, r.stderr
    assert "may not create the monthly partitions of portfolio_snapshots" in r.stderr and "Traceback" not in r.stderr
    with in_db_admin.connect() as c:
        assert c.execute(sa.text("SELECT snapshotter_ensure_snapshot_partitions('2026-11-01', '2026-11-30')")).scalar_one() == 1
    r = cli("backfill", "--portfolio", pid, "--from", "2026-11-02", "--to", TARGET, "--json", env=job)
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)["snapshots_created"]
    with in_db_admin.connect() as c:
        assert created > 0 and c.execute(sa.text("SELECT count(*) FROM portfolio_snapshots_2026_11")).scalar_one() == created
        assert c.execute(sa.text("SELECT count(*) FROM portfolio_snapshots")).scalar_one() == left + created


def test_a_job_in_production_does_not_migrate_and_says_how(roles):
    names, named, urls, admin, in_db_admin = roles
    admin_sql, in_db_sql, _owner_sql = readme_sql()
    with admin.connect() as c:
        for stmt in admin_sql:
            c.execute(sa.text(named(stmt)))
    job = {"DATABASE_URL": urls["snapshotter_owner"], "SNAPSHOTTER_ENV": "production"}
    r = cli("portfolio-refresh", "--no-wait", env=job)
    assert r.returncode == 78, r.stderr
    assert "database schema is at nothing, this version needs" in r.stderr and "run `snapshotter db upgrade`" in r.stderr
    with in_db_admin.connect() as c:
        assert c.execute(sa.text("SELECT to_regclass('public.batch_run_tracking')")).scalar() is None  # no DDL ran
    r = cli("--migrate", "portfolio-refresh", "--no-wait", env=job)  # a single-role installation forces it
    assert r.returncode == 0, r.stderr
    with in_db_admin.connect() as c:
        assert c.execute(sa.text("SELECT to_regclass('public.batch_run_tracking')")).scalar() is not None
