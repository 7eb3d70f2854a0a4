"""Running on Citus (README "Running on Citus"): the distribution plan as data, Citus's schema
rules as a check, and the SQL that converts a database at head.

The plan: ``portfolios`` distributed by ``id``; ``positions``, ``cash_transactions`` and
``portfolio_snapshots`` (and ``portfolio_frontier``) by ``portfolio_id``, co-located with it (a portfolio's rows on one
node); ``symbol_prices_daily`` and the other small tables the engine joins or the triggers
write are reference tables (a copy on every node); ``batch_run_tracking`` and
``alembic_version`` stay plain tables on the coordinator (nothing joins them).

Citus's rules (:func:`violations`): every primary key, unique constraint and unique index of a
distributed table includes its distribution column (uniqueness is checked on one shard); a
foreign key between distributed tables pairs their distribution columns and joins two
co-located tables; no foreign key from a reference or local table to a distributed one, nor
from a distributed table to a local one (to a reference table is fine).

The SPEC keys break the first rule: ``positions.id``, ``cash_transactions.id`` and
``portfolio_snapshots.id`` are primary keys alone. The default schema keeps them (applications
rely on them); :func:`prepare` is the conversion that adds the distribution column to such a key
(``PRIMARY KEY (id, portfolio_id)``), run once when a database moves to Citus, and
:func:`distribute` the Citus calls after it. Both read the database as it is (:func:`reflect`),
so they follow whatever keys later migrations give a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


class Distributed(NamedTuple):
    column: str  # the distribution column
    colocate_with: str | None = None  # the table whose shards this one's follow; None: the group's first table


@dataclass(frozen=True)
class Plan:
    distributed: dict[str, Distributed]  # in the order they are distributed (a group's first table first)
    reference: tuple[str, ...]
    local: tuple[str, ...]  # plain tables on the coordinator

    def kind(self, table: str) -> str | None:
        if table in self.distributed:
            return "distributed"
        if table in self.reference:
            return "reference"
        if table in self.local:
            return "local"
        return None

    def group(self, table: str) -> str:
        """The co-location group of a distributed table: its group's first table."""
        seen = set()
        while table in self.distributed and (nxt := self.distributed[table].colocate_with) is not None and table not in seen:
            seen.add(table)
            table = nxt
        return table


PLAN = Plan(
    distributed={
        "portfolios": Distributed("id"),
        "positions": Distributed("portfolio_id", "portfolios"),
        "cash_transactions": Distributed("portfolio_id", "portfolios"),
        "portfolio_snapshots": Distributed("portfolio_id", "portfolios"),
        "portfolio_frontier": Distributed("portfolio_id", "portfolios"),
    },
    reference=(
        "symbol_prices_daily", "watchlist", "symbol_splits", "symbol_changes", "price_rejections", "symbol_fetch_failures",
        # written by the triggers of 0006/0007, which on Citus run where the rows are (the workers);
        # joined with positions on symbol (invalidation_sql._holders)
        "snapshot_invalidations",
    ),
    local=("batch_run_tracking", "alembic_version"),
)


def _cols(columns) -> list[str]:
    return [c.name for c in columns]


def _fmt(names) -> str:
    return "(" + ", ".join(names) + ")"


def violations(metadata: sa.MetaData, plan: Plan = PLAN) -> list[str]:
    """Every place where ``metadata`` (the shipped schema, or a database through :func:`reflect`)
    breaks Citus's rules under ``plan``, one line each, sorted; empty when Citus can take it."""
    return sorted(message for _rule, message, _subject in _check(metadata, plan))


def _check(metadata: sa.MetaData, plan: Plan) -> list[tuple[str, str, object]]:
    """(rule, message, the constraint) triples; the rule ``key`` (a primary key or unique
    constraint without the distribution column) is the one :func:`prepare` fixes."""
    out: list[tuple[str, str, object]] = []
    tables = metadata.tables
    for name in tables:
        if plan.kind(name) is None:
            out.append(("plan", f"{name}: in no group of the plan (distributed, reference or local)", None))
    for name in [*plan.distributed, *plan.reference]:
        if name not in tables:
            out.append(("plan", f"{name}: planned as {plan.kind(name)} but not in the schema", None))
    for name, dist in plan.distributed.items():
        t = tables.get(name)
        if t is None:
            continue
        if dist.column not in t.c:
            out.append(("plan", f"{name}: no distribution column {dist.column}", None))
            continue
        if dist.colocate_with is not None and plan.kind(dist.colocate_with) != "distributed":
            out.append(("plan", f"{name}: co-located with {dist.colocate_with}, which is not distributed", None))
        pk = _cols(t.primary_key.columns)
        if pk and dist.column not in pk:
            out.append(("key", f"{name}: primary key {_fmt(pk)} lacks the distribution column {dist.column}", t.primary_key))
        for c in t.constraints:
            if isinstance(c, sa.UniqueConstraint) and dist.column not in _cols(c.columns):
                out.append(("key", f"{name}: unique constraint {c.name} {_fmt(_cols(c.columns))} lacks the distribution column {dist.column}", c))
        for ix in t.indexes:
            if ix.unique and dist.column not in _cols(ix.columns):
                out.append(("index", f"{name}: unique index {ix.name} {_fmt(_cols(ix.columns))} lacks the distribution column {dist.column}", ix))
    for t in tables.values():
        for fk in t.foreign_key_constraints:
            out.extend(("fk", v, fk) for v in _fk_violations(t, fk, plan))
    return out


def _fk_violations(t: sa.Table, fk: sa.ForeignKeyConstraint, plan: Plan) -> list[str]:
    src, dst = t.name, fk.referred_table.name
    k_src, k_dst = plan.kind(src), plan.kind(dst)
    pairs = [(e.parent.name, e.column.name) for e in fk.elements]
    what = f"{src}: foreign key {_fmt(p for p, _ in pairs)} -> {dst}{_fmt(r for _, r in pairs)}"
    if k_src is None or k_dst is None:
        return []  # reported as unplanned
    if k_dst == "distributed" and k_src != "distributed":
        return [f"{what}: from a {k_src} table to a distributed one"]
    if k_src == "distributed" and k_dst == "local":
        return [f"{what}: from a distributed table to a local one"]
    if k_src == k_dst == "distributed":
        if plan.group(src) != plan.group(dst):
            return [f"{what}: between tables that are not co-located"]
        if (plan.distributed[src].column, plan.distributed[dst].column) not in pairs:
            return [f"{what}: does not pair the distribution columns "
                    f"{src}.{plan.distributed[src].column} and {dst}.{plan.distributed[dst].column}"]
    return []


def reflect(conn: sa.Connection) -> sa.MetaData:
    """The database's tables (PostgreSQL, the current schema) as SQLAlchemy reflects them; the
    partitions of a partitioned table are left out (Citus distributes them with their parent)."""
    names = conn.execute(sa.text(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
        "AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
    )).scalars().all()
    md = sa.MetaData()
    md.reflect(conn, only=list(names))
    return md


class CitusPlanError(Exception):
    """The database cannot be converted by :func:`prepare` alone: what must change first, one per line."""


_PG = postgresql.dialect()


def _q(name: str) -> str:
    return _PG.identifier_preparer.quote(name)


def prepare(metadata: sa.MetaData, plan: Plan = PLAN) -> list[str]:
    """The DDL that makes a database (``metadata`` from :func:`reflect`) satisfy Citus's rules:
    each key of a distributed table that lacks its distribution column gets it, last, under the
    same name (``ALTER TABLE positions DROP CONSTRAINT pk_positions, ADD CONSTRAINT pk_positions
    PRIMARY KEY (id, portfolio_id)``). A foreign key that references such a key from a co-located
    table is dropped first and added again over both distribution columns. Plain PostgreSQL: it
    runs on the server before (or without) the extension. Empty when there is nothing to change;
    :class:`CitusPlanError` when something else breaks the rules (a table in no group, a foreign
    key Citus refuses, a unique index, a key referenced from elsewhere)."""
    tables = metadata.tables
    problems, before, alter, after, rewritten = [], [], [], [], set()
    for name, dist in plan.distributed.items():
        t = tables.get(name)
        if t is None or dist.column not in t.c:
            continue
        changes = []
        keys = [("PRIMARY KEY", t.primary_key)] + [("UNIQUE", c) for c in t.constraints if isinstance(c, sa.UniqueConstraint)]
        for kind, key in keys:
            cols = _cols(key.columns)
            if not cols or dist.column in cols:
                continue
            new = [*cols, dist.column]
            changes += [f"DROP CONSTRAINT {_q(key.name)}", f"ADD CONSTRAINT {_q(key.name)} {kind} {_fmt(map(_q, new))}"]
            for other in tables.values():
                for fk in other.foreign_key_constraints:
                    if fk.referred_table is not t or sorted(e.column.name for e in fk.elements) != sorted(cols):
                        continue
                    src = plan.distributed.get(other.name)
                    if src is None or plan.group(other.name) != plan.group(name):
                        problems.append(f"{other.name}: foreign key {fk.name} references {name}{_fmt(cols)}, which becomes "
                                        f"{_fmt(new)}: only a co-located distributed table can follow it")
                        continue
                    rewritten.add(fk)
                    before.append(f"ALTER TABLE {_q(other.name)} DROP CONSTRAINT {_q(fk.name)}")
                    local = [*(e.parent.name for e in fk.elements), src.column]
                    remote = [*(e.column.name for e in fk.elements), dist.column]
                    after.append(f"ALTER TABLE {_q(other.name)} ADD CONSTRAINT {_q(fk.name)} FOREIGN KEY {_fmt(map(_q, local))} "
                                 f"REFERENCES {_q(name)} {_fmt(map(_q, remote))}")
        if changes:
            alter.append(f"ALTER TABLE {_q(name)} " + ", ".join(changes))
    # what else breaks a rule must change first (a unique index: by hand, its definition may be partial)
    problems += [message for rule, message, subject in _check(metadata, plan) if rule != "key" and subject not in rewritten]
    if problems:
        raise CitusPlanError("\n".join(sorted(set(problems))))
    return [*before, *alter, *after]


def distribute(plan: Plan = PLAN) -> list[str]:
    """The calls that distribute the tables, on the Citus coordinator after :func:`prepare`: the
    reference tables first (a distributed table's foreign keys may point at them), then each
    co-location group's first table, then the tables co-located with it.

    ``citus.enable_unsafe_triggers``: Citus refuses to distribute a table with triggers unless
    it is on, and the invalidation triggers of migrations 0006 and 0007 are on positions,
    cash_transactions, portfolios, symbol_prices_daily, symbol_splits and symbol_changes."""
    out = ["SET citus.enable_unsafe_triggers TO on"]
    out += [f"SELECT create_reference_table('{name}')" for name in plan.reference]
    for name, dist in plan.distributed.items():
        colocate = "" if dist.colocate_with is None else f", colocate_with => '{dist.colocate_with}'"
        out.append(f"SELECT create_distributed_table('{name}', '{dist.column}'{colocate})")
    return out


def script(metadata: sa.MetaData, plan: Plan = PLAN, prepare_only: bool = False) -> str:
    """:func:`prepare` and :func:`distribute` as one psql script (``snapshotter db citus-plan``)."""
    lines = ["-- 1. prepare: keys that include the distribution column (plain PostgreSQL; one transaction)", "BEGIN;"]
    lines += [f"{s};" for s in prepare(metadata, plan)] or ["-- nothing to change"]
    lines.append("COMMIT;")
    if not prepare_only:
        lines += ["", "-- 2. distribute (on the Citus coordinator, with the workers added)"]
        lines += [f"{s};" for s in distribute(plan)]
    return "\n".join(lines) + "\n"
