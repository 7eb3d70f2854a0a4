"""Which distributed tables a statement joins, and on what: a walk over the SQLAlchemy
expression tree (nothing is compiled or run), for the rule of README "Running on Citus": the
engine joins distributed tables only on their distribution columns (``portfolio_id``, and
``portfolios.id``), so that every statement is a co-located join Citus runs shard by shard.

The walk:

- every column reference is resolved to the table column it stands for: through subqueries
  and CTEs (a derived column that is a plain column, or a label of one, is that column; an
  aggregate or expression is a value of its own), and through DML RETURNING; ``excluded`` of
  ``ON CONFLICT`` is the target row itself. A table under an alias is an instance of its own.
- every equality (``=`` in ON, WHERE, correlated subqueries, HAVING; ``x IN (SELECT y ...)``),
  and the distribution column an ``INSERT ... SELECT`` fills with the select's column (Citus's
  rule for a co-located INSERT ... SELECT), puts its two sides in one class (union-find), so an equality chain through a temporary
  table's column (``_snap_pairs.portfolio_id``) or a derived column counts.
- the distributed-table instances of the statement must all have their distribution columns
  in one class, and no class may hold a non-distribution column of one distributed instance
  with a column of another (a join on ``symbol`` or a date).

Two uses of the same Table object (not aliased) are one instance in the tree; what SQL they
become depends on SQLAlchemy's correlation (a subquery naming the outer table correlates to it
only when the enclosing query has it in its FROM), so the statement is also compiled, and a
WHERE subquery that lists in its FROM a distributed table an enclosing query has in its own is
reported (an uncorrelated copy of the table, a join on nothing; a derived table in FROM that
reads the table again, as ``snapshots``' newest-per-portfolio does, is a join of its own and
is fine). A ``text()`` fragment is opaque (the engine's are the ctid span bounds). A UNION's
columns are values of their own: its branches are checked, and Citus plans them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import operators
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import BinaryExpression, ColumnClause, Label
from sqlalchemy.sql.selectable import CTE, Alias, CompoundSelect, SelectBase, Subquery

from snapshotter.data import schema
from snapshotter.data.citus import PLAN

DISTRIBUTED = {name: d.column for name, d in PLAN.distributed.items()}


def _walk(el, seen=None):
    seen = set() if seen is None else seen
    if id(el) in seen:
        return
    seen.add(id(el))
    yield el
    if isinstance(el, Alias) and isinstance(el.element, sa.Table):
        return  # an aliased table is an instance of its own: its element is not a second use
    if isinstance(el, sa.Table):
        return  # its columns are no references
    if isinstance(el, ColumnClause) and isinstance(el.table, (Subquery, CTE)):
        yield from _walk(el.table, seen)  # UPDATE ... FROM a subquery names it only through its columns
    for child in el.get_children():
        yield from _walk(child, seen)


def _base(t):
    """The Table of a table or of an alias of one (``excluded`` is its target row); else None."""
    if isinstance(t, sa.Table):
        return t
    if isinstance(t, Alias) and isinstance(t.element, sa.Table):
        return t.element
    return None


def origin(col):
    """(instance, column name) that ``col`` stands for; (None, id) for a value of its own."""
    while True:
        t = getattr(col, "table", None)
        if isinstance(t, sa.Table):
            return (t, col.name)
        if isinstance(t, Alias) and isinstance(t.element, sa.Table):
            return (t.element if t.name == "excluded" else t, col.name)
        if isinstance(t, (Subquery, CTE, Alias)) and not isinstance(t.element, CompoundSelect):
            inner = t.element.exported_columns.get(col.key) if hasattr(t.element, "exported_columns") else None
            while isinstance(inner, Label):
                inner = inner.element
            if isinstance(inner, ColumnClause) and inner.table is not None:
                col = inner
                continue
        return (None, id(col))


def _side(el):
    """The column an equality side stands for, or None (a literal, a function, a subquery of many columns)."""
    while isinstance(el, Label) or el.__class__.__name__ == "Grouping":
        el = el.element
    if isinstance(el, SelectBase) and not isinstance(el, CompoundSelect):
        cols = list(el.selected_columns)
        return _side(cols[0]) if len(cols) == 1 else None
    if el.__class__.__name__ == "ScalarSelect":
        return _side(el.element)
    if isinstance(el, ColumnClause) and el.table is not None:
        return el
    return None


@dataclass
class Report:
    instances: list = field(default_factory=list)  # the distributed instances (Table or Alias)
    problems: list[str] = field(default_factory=list)
    # joined on the distribution columns only through a scratch table's column (``_snap_pairs.portfolio_id``):
    # the chain holds in SQL, but on Citus that table is local to the coordinator
    through_scratch: bool = False


def _label(inst) -> str:
    base = _base(inst)
    return base.name if inst is base else f"{base.name} AS {inst.name}"


def _classes(edges):
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    return find, list(parent)


def _scratch(node) -> bool:
    inst = node[0]
    return isinstance(inst, sa.Table) and inst.metadata is not schema.metadata


def check(stmt) -> Report:
    instances: dict[int, object] = {}
    edges = []
    for el in _walk(stmt):
        if isinstance(el, ColumnClause):
            t = origin(el)[0]
        elif isinstance(el, Alias) and el.name == "excluded":
            t = el.element
        else:
            t = el if isinstance(el, (sa.Table, Alias)) else None
        base = _base(t)
        if base is not None and base.metadata is schema.metadata and base.name in DISTRIBUTED:
            instances[id(t)] = t
        if isinstance(el, Insert) and el.select is not None and not isinstance(el.select, CompoundSelect):
            # INSERT ... SELECT: the target's distribution column takes its select column (``_select_names``:
            # from_select's names); the other columns are values, not a join
            for name, col in zip(el._select_names, el.select.selected_columns):
                if name == DISTRIBUTED.get(el.table.name) and el.table.metadata is schema.metadata and _side(col) is not None:
                    edges.append(((el.table, name), origin(_side(col))))
        if isinstance(el, BinaryExpression) and el.operator in (operators.eq, operators.in_op):
            a, b = _side(el.left), _side(el.right)
            if a is not None and b is not None:
                edges.append((origin(a), origin(b)))
    report = Report(list(instances.values()))
    report.problems += [f"{name} read again by a subquery that does not correlate to it" for name in uncorrelated_copies(stmt)]
    if len(instances) < 2:
        return report
    find, nodes = _classes(edges)

    def groups(find):
        roots: dict = {}
        for inst in instances.values():
            roots.setdefault(find((inst, DISTRIBUTED[_base(inst).name])), []).append(_label(inst))
        return roots

    roots = groups(find)
    if len(roots) > 1:
        report.problems.append("distributed tables not joined on their distribution columns: "
                               + " | ".join(", ".join(sorted(g)) for g in roots.values()))
    else:
        strict, _ = _classes([(a, b) for a, b in edges if not _scratch(a) and not _scratch(b)])
        report.through_scratch = len(groups(strict)) > 1
    members: dict = {}
    for node in nodes:
        inst, name = node
        if inst is not None and id(inst) in instances:
            members.setdefault(find(node), set()).add((id(inst), name))
    for group in members.values():
        if len({i for i, _ in group}) > 1:
            off = sorted(f"{_label(instances[i])}.{n}" for i, n in group if n != DISTRIBUTED[_base(instances[i]).name])
            if off:
                report.problems.append("distributed tables joined on " + ", ".join(off))
    return report


def _mixin(base):
    class Compiler(base):
        """Records a SELECT that is not a derived table (a WHERE subquery: EXISTS, IN, scalar) yet lists
        in its FROM a distributed table an enclosing query has in its own: SQLAlchemy did not
        correlate it, so it reads a second copy of the table (a join on nothing)."""

        def __init__(self, *args, **kw):
            self.uncorrelated: list[str] = []  # filled while the base class compiles, in its __init__
            super().__init__(*args, **kw)

        def _setup_select_stack(self, select, compile_state, entry, asfrom, lateral, compound_index):
            froms = super()._setup_select_stack(select, compile_state, entry, asfrom, lateral, compound_index)
            if not asfrom:
                for f in froms:
                    if isinstance(f, sa.Table) and f.metadata is schema.metadata and f.name in DISTRIBUTED and f in entry["correlate_froms"]:
                        self.uncorrelated.append(f.name)
            return froms

    return Compiler


class _PG(postgresql.dialect):
    statement_compiler = _mixin(postgresql.dialect.statement_compiler)


class _SQLite(sqlite.dialect):
    statement_compiler = _mixin(sqlite.dialect.statement_compiler)


def uncorrelated_copies(stmt) -> list[str]:
    """Distributed tables that a WHERE subquery of the compiled statement reads again instead of
    correlating to the enclosing query's (see :func:`_mixin`)."""
    for dialect in (_PG, _SQLite):  # a SQLite-only construct (its ON CONFLICT) compiles on SQLite only
        try:
            compiled = stmt.compile(dialect=dialect())
        except Exception:  # noqa: BLE001
            continue
        return sorted(set(getattr(compiled, "uncorrelated", ())))  # DDL (the scratch tables) has none
    raise AssertionError(f"cannot compile {stmt!r}")
