"""Every difference between PostgreSQL and SQLite, in one place.

Exact decimal arithmetic first (below); then upserts, physical row addresses
(heap blocks and rowids) and the planner settings a chunk's transaction uses.

Exact decimal arithmetic inside the database, on PostgreSQL and SQLite alike.

PostgreSQL has NUMERIC; SQLite has no decimal type and would silently turn money
into binary floats. So money columns are stored as canonical decimal TEXT on
SQLite, and the few operations the snapshot engine needs (multiply, subtract,
divide, sum, half-even rounding, sign, a sorted list aggregate) are SQL
expression classes that compile to plain operators on PostgreSQL and to
Python ``decimal`` functions registered on every SQLite connection. The engine
is written once against these classes and runs unchanged on both backends.
"""

from __future__ import annotations

import decimal
import math
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import sqlalchemy as sa
from typing import Iterable, Sequence

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

_CTX = decimal.Context(prec=80, rounding=ROUND_HALF_EVEN, traps=[decimal.InvalidOperation, decimal.DivisionByZero])


def dec_text(value) -> str | None:
    """Canonical decimal text (no exponent) of a Decimal/int/str."""
    if value is None:
        return None
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    if not d.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return format(d, "f")


class Money(TypeDecorator):
    """NUMERIC(p, s) on PostgreSQL, exact decimal TEXT on SQLite; Decimal in Python."""

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int):
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.precision = precision
        self.scale = scale

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Text())
        return dialect.type_descriptor(sa.Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":
            return dec_text(value)
        return value if isinstance(value, Decimal) else Decimal(str(value))

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


# --- SQL expression classes ----------------------------------------------------


class _DecFn(FunctionElement):
    inherit_cache = True

    def __init__(self, *args):
        super().__init__(*args)

    @property
    def type(self):  # results are text on SQLite, NUMERIC on PostgreSQL; Decimal either way
        return Money(60, 30)


class dmul(_DecFn):
    name = "dec_mul"
    inherit_cache = True


class dsub(_DecFn):
    name = "dec_sub"
    inherit_cache = True


class dadd(_DecFn):
    name = "dec_add"
    inherit_cache = True


class ddiv(_DecFn):
    """a / b with enough scale that a following 6-digit rounding is exact."""

    name = "dec_div"
    inherit_cache = True


QUOT_SCALE = 30


class dquot(_DecFn):
    """a / b for a positive integer b (at most 76 digits), correctly rounded to QUOT_SCALE
    decimals, ties away from zero (PostgreSQL's round(); Fractions on SQLite), so both backends
    give the same digits. The split factor's one division (valuation.lot_value)."""

    name = "dec_quot"
    inherit_cache = True


class dsum(_DecFn):
    name = "dec_sum"
    inherit_cache = True


class dround(_DecFn):
    """Round half-even to ``scale`` digits; fails when more than ``int_digits`` remain left of the point."""

    name = "dec_round"
    inherit_cache = True


class dsign(_DecFn):
    name = "dec_sign"
    inherit_cache = True

    @property
    def type(self):
        return sa.Integer()


class sorted_csv(FunctionElement):
    """Aggregate: distinct non-null strings, sorted, comma-joined; NULL when none."""

    name = "sorted_csv"
    inherit_cache = True
    type = sa.Text()


def _args(compiler, element, **kw):
    return [compiler.process(a, **kw) for a in element.clauses]


@compiles(dmul, "postgresql")
def _pg_mul(el, c, **kw):
    a, b = _args(c, el, **kw)
    return f"({a} * {b})"


@compiles(dsub, "postgresql")
def _pg_sub(el, c, **kw):
    a, b = _args(c, el, **kw)
    return f"({a} - {b})"


@compiles(dadd, "postgresql")
def _pg_add(el, c, **kw):
    a, b = _args(c, el, **kw)
    return f"({a} + {b})"


@compiles(ddiv, "postgresql")
def _pg_div(el, c, **kw):
    a, b = _args(c, el, **kw)
    # The cast gives the quotient 30 decimals, so the 6-digit rounding after it is exact.
    return f"(CAST({a} AS NUMERIC(70, 30)) / {b})"


@compiles(dquot, "postgresql")
def _pg_quot(el, c, **kw):
    """PostgreSQL rounds a quotient half away from zero at its result scale (here >= 110, far
    beyond any 30-digit tie: a remainder r / b within 1e-80 of a half needs b > 5e79, and b has
    at most 76 digits), then round() again at QUOT_SCALE: the correctly rounded quotient. Each
    operand appears once (a repeated subquery multiplies the plan and its JIT compile time)."""
    a, b = _args(c, el, **kw)
    return f"round(CAST({a} AS NUMERIC(200, 110)) / {b}, {QUOT_SCALE})"


@compiles(dsum, "postgresql")
def _pg_sum(el, c, **kw):
    (a,) = _args(c, el, **kw)
    return f"sum({a})"


@compiles(dround, "postgresql")
def _pg_round(el, c, **kw):
    """Half-even rounding inline: PostgreSQL's round() breaks ties away from zero.

    A tie whose truncation is even is exactly a value v with v x 2 x 10^s = 4k + 1
    (or -(4k + 1)): then trunc() is the even neighbour; otherwise round() is right.
    Written out as a CASE rather than calling a SQL function: a function whose
    argument is an aggregate expression is not inlined by the planner, and the
    per-row function call tripled the cost of a refresh.
    """
    value, scale, _int_digits = list(el.clauses)
    s = int(scale.value)
    v = c.process(value, **kw)
    return f"CASE WHEN abs(mod({v} * {2 * 10 ** s}, 4)) = 1 THEN trunc({v}, {s}) ELSE round({v}, {s}) END"


@compiles(dsign, "postgresql")
def _pg_sign(el, c, **kw):
    (a,) = _args(c, el, **kw)
    return f"CAST(sign({a}) AS INTEGER)"


@compiles(sorted_csv, "postgresql")
def _pg_csv(el, c, **kw):
    (a,) = _args(c, el, **kw)
    return f"string_agg(DISTINCT {a}, ',' ORDER BY {a})"


class date_value(FunctionElement):
    """A date value typed as a date wherever it stands, a CASE branch included: PostgreSQL reads an
    inlined '2026-11-24' (EXPLAIN, ``--explain``) there as text; SQLite stores ISO text and must
    not get a CAST (its DATE affinity is numeric)."""

    name = "date_value"
    inherit_cache = True
    type = sa.Date()


@compiles(date_value, "postgresql")
def _pg_date_value(el, c, **kw):
    (a,) = _args(c, el, **kw)
    return f"CAST({a} AS DATE)"


class bytewise(FunctionElement):
    """A text column compared byte by byte: PostgreSQL's ``COLLATE "C"`` (a sort under the
    database's locale, even C.UTF-8, compares through the C library: status's split question over
    a year of 2,000 symbols' closes took 102 ms, 93 ms bytewise); SQLite's default collation is
    already bytewise. Equality is the same under either (the collations are deterministic): for
    grouping and window partitions, not for output order."""

    name = "bytewise"
    inherit_cache = True
    type = sa.Text()


@compiles(bytewise, "postgresql")
def _pg_bytewise(el, c, **kw):
    (a,) = _args(c, el, **kw)
    return f'({a}) COLLATE "C"'


def _default(el, c, **kw):
    """SQLite (and any other dialect): call the registered function by name."""
    return f"{el.name}({', '.join(_args(c, el, **kw))})"


def _as_is(el, c, **kw):
    """SQLite (and any other dialect): the one argument unchanged (what PostgreSQL wraps)."""
    (a,) = _args(c, el, **kw)
    return a


for _cls in (dmul, dsub, dadd, ddiv, dquot, dsum, dround, dsign, sorted_csv):
    compiles(_cls)(_default)
for _cls in (date_value, bytewise):
    compiles(_cls)(_as_is)


# --- SQLite implementations ----------------------------------------------------


def _d(x) -> Decimal:
    return x if isinstance(x, Decimal) else _CTX.create_decimal(str(x))


def _mul(a, b):
    return None if a is None or b is None else format(_CTX.multiply(_d(a), _d(b)), "f")


def _sub(a, b):
    return None if a is None or b is None else format(_CTX.subtract(_d(a), _d(b)), "f")


def _add(a, b):
    return None if a is None or b is None else format(_CTX.add(_d(a), _d(b)), "f")


def _div(a, b):
    if a is None or b is None:
        return None
    return format(_CTX.divide(_d(a), _d(b)), "f")


def _quot(a, b):
    if a is None or b is None:
        return None
    q = Fraction(_d(a)) * 10**QUOT_SCALE / Fraction(_d(b))
    n = math.floor(abs(q) + Fraction(1, 2))  # exact, ties away from zero as PostgreSQL's round()
    return format(Decimal(-n if q < 0 else n).scaleb(-QUOT_SCALE, _CTX), "f")


def _round(a, scale, int_digits):
    if a is None:
        return None
    q = _CTX.quantize(_d(a), Decimal(1).scaleb(-int(scale)))
    if q.adjusted() >= int(int_digits):
        raise ValueError(f"numeric field overflow: {q} has more than {int_digits} integer digits")
    return format(q, "f")


def _sign(a):
    if a is None:
        return None
    d = _d(a)
    return (d > 0) - (d < 0)


class _Sum:
    def __init__(self):
        self.total = None

    def step(self, v):
        if v is not None:
            self.total = _d(v) if self.total is None else _CTX.add(self.total, _d(v))

    def finalize(self):
        return None if self.total is None else format(self.total, "f")


class _SortedCsv:
    def __init__(self):
        self.items = set()

    def step(self, v):
        if v is not None:
            self.items.add(str(v))

    def finalize(self):
        return ",".join(sorted(self.items)) if self.items else None


def register_sqlite_functions(dbapi_conn) -> None:
    det = {"deterministic": True}
    dbapi_conn.create_function("dec_mul", 2, _mul, **det)
    dbapi_conn.create_function("dec_sub", 2, _sub, **det)
    dbapi_conn.create_function("dec_add", 2, _add, **det)
    dbapi_conn.create_function("dec_div", 2, _div, **det)
    dbapi_conn.create_function("dec_quot", 2, _quot, **det)
    dbapi_conn.create_function("dec_round", 3, _round, **det)
    dbapi_conn.create_function("dec_sign", 1, _sign, **det)
    dbapi_conn.create_aggregate("dec_sum", 1, _Sum)
    dbapi_conn.create_aggregate("sorted_csv", 1, _SortedCsv)


# --- upserts ---------------------------------------------------------------------


def dialect_insert(conn: sa.Connection, table: sa.Table):
    """An INSERT that knows ON CONFLICT on both backends."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def stored_primary_key(conn: sa.Connection, table: sa.Table) -> tuple[str, ...]:
    """The primary key of ``table`` as the database has it, which an upsert by primary key must
    name: the schema's own, or with the distribution column added on a database prepared for
    Citus (``positions`` (id, portfolio_id), README "Running on Citus"). One catalog query."""
    return tuple(sa.inspect(conn).get_pk_constraint(table.name)["constrained_columns"])


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[dict],
    key: Iterable[str],
    update: Iterable[str] | None = None,
) -> int:
    """INSERT ... ON CONFLICT (key) DO UPDATE the other columns; returns rows written."""
    if not rows:
        return 0
    key = list(key)
    stmt = dialect_insert(conn, table)
    cols = list(update) if update is not None else [c for c in rows[0] if c not in key]
    if cols:
        stmt = stmt.on_conflict_do_update(index_elements=key, set_={c: stmt.excluded[c] for c in cols})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=key)
    conn.execute(stmt, list(rows))
    return len(rows)


# --- small row sets inline ----------------------------------------------------------


def literal_rows(name: str, columns: Sequence[tuple[str, sa.types.TypeEngine]], rows: Sequence[tuple]):
    """A handful of rows as a FROM (``UNION ALL`` of one-row SELECTs, bound parameters): SQLite
    has no column list on a ``VALUES`` alias. ``rows`` must not be empty."""
    selects = [sa.select(*(sa.literal(v, t).label(c) for v, (c, t) in zip(row, columns))) for row in rows]
    return (selects[0] if len(selects) == 1 else sa.union_all(*selects)).subquery(name)


# --- physical addresses ------------------------------------------------------------


def physical_extent(table: str, dialect_name: str):
    """(first, last) physical address of ``table``: heap blocks on PostgreSQL, rowids on SQLite."""
    if dialect_name == "postgresql":
        return sa.text(f"SELECT 0, pg_relation_size('{table}') / current_setting('block_size')::int")
    return sa.text(f"SELECT coalesce(min(rowid), 0), coalesce(max(rowid), 0) FROM {table}")


def physical_range(table: str, lo: int, hi: int | None, dialect_name: str):
    """Rows of ``table`` in [lo, hi): a TID range scan on PostgreSQL (14+), a rowid range on SQLite."""
    if dialect_name == "postgresql":
        first = sa.text(f"{table}.ctid >= CAST(:span_lo AS tid)").bindparams(span_lo=f"({lo},0)")
        last = None if hi is None else sa.text(f"{table}.ctid < CAST(:span_hi AS tid)").bindparams(span_hi=f"({hi},0)")
    else:
        first = sa.text(f"{table}.rowid >= :span_lo").bindparams(span_lo=lo)
        last = None if hi is None else sa.text(f"{table}.rowid < :span_hi").bindparams(span_hi=hi)
    return first if last is None else sa.and_(first, last)


# --- planner settings ---------------------------------------------------------------


def begin_chunk(conn: sa.Connection):
    """A chunk's transaction; on PostgreSQL with room to hash and sort in memory (SET LOCAL ends with it)."""
    trans = conn.begin()
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))
    return trans


def prefer_hash_joins(conn: sa.Connection) -> None:
    """For the valuation INSERT: the planner underestimates "lot held on d" about 100x and
    would probe the price index once per lot; the hash join it rejects is 3x faster."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET LOCAL enable_nestloop = off"))


def without_jit(conn: sa.Connection) -> None:
    """For the valuation with corporate actions: its C(E) subqueries (evaluated only for the rare
    lot with a split since its entry) are costed as if run for every lot, which pushes the
    statement over jit_above_cost; compiling it took 0.8 s of a 1.5 s chunk and never paid back."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET LOCAL jit = off"))


def analyze(conn: sa.Connection, table: sa.Table) -> None:
    """Fresh statistics for a temporary table (PostgreSQL never autovacuums them)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"ANALYZE {table.name}"))


# --- showing a statement to a DBA -------------------------------------------------------


def literal_sql(stmt, conn: sa.Connection) -> str:
    """The statement as the server runs it, its values inlined."""
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    # SQLAlchemy's SQLite compiler spells OFFSET without LIMIT as "LIMIT ? OFFSET", a bind it does not inline.
    return sql.replace("LIMIT ? OFFSET", "LIMIT -1 OFFSET") if conn.dialect.name == "sqlite" else sql


def render(stmt, conn: sa.Connection) -> str:
    """The statement formatted for a DBA (sqlparse), values inlined."""
    import sqlparse

    return sqlparse.format(literal_sql(stmt, conn), reindent=True, indent_width=2).strip()


def explain(conn: sa.Connection, stmt, analyze: bool) -> str:
    """The server's plan for ``stmt``. EXPLAIN (ANALYZE, BUFFERS) runs it: the caller rolls back.
    SQLite has only EXPLAIN QUERY PLAN, which never runs it."""
    sql = literal_sql(stmt, conn)
    if conn.dialect.name == "postgresql":
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "
        return "\n".join(r[0] for r in conn.exec_driver_sql(prefix + sql).all())
    return "\n".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all())
