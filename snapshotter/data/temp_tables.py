"""The run's scratch tables, created on each worker connection (temporary, per session).

``_snap_days``: the run's candidate days (``hole``: below the snapshot frontier;
``stale_from``: the first day whose close may value a lot on ``d``, ``d`` itself unless
``--max-price-age``);
``_snap_chunk``: the chunk's portfolios with their first active day and last snapshot;
``_snap_pairs``: the (portfolio, day) pairs to value (``heal``: the pair has a stored row, which is
rewritten when the new values call for it: a partial or stale one to heal, or in the recompute of
invalidated history any stored row whose values differ; otherwise a new row is inserted);
``_snap_stale_closes``: with ``--max-price-age``, per candidate day the symbols without a
close that day and the newest close within the window instead
(:func:`snapshotter.data.snapshot_sql.day_close`);
``_latest_close``: each symbol's newest cached close, for the market values (a symbol with a
corporate action on its path: its pricing symbol's, with C on that day in ``num``/``den``);
``_snap_steps``: :func:`snapshotter.core.valuation.quantity_steps` of the run (the symbols with
a split or ticker change on their path; C(E) of a lot is looked up here once per lot);
``_snap_day_closes`` (only when a corporate action is on file): the close that values a lot of
each symbol on each candidate day, by held symbol: the day's closes of the other symbols as
cached, and for a stepped symbol a row every day with its pricing symbol's close (NULL when
none), C(D) and the step's days [``since``, ``until``) (a stale close before ``since`` is not
comparable; a lot entered within them holds its entered quantity). One equality join per lot
and day, as the plain symbol_prices_daily join is without corporate actions.
"""

from __future__ import annotations

import sqlalchemy as sa

from snapshotter.data.dialect import Money

Factor = Money(38, 0)  # a step's numerator or denominator: an integer (valuation.FACTOR_DIGITS)
metadata = sa.MetaData()
days = sa.Table(
    "_snap_days", metadata,
    sa.Column("d", sa.Date, primary_key=True),
    sa.Column("hole", sa.Boolean, nullable=False),
    sa.Column("stale_from", sa.Date, nullable=False),
    prefixes=["TEMPORARY"],
)
chunk = sa.Table(
    "_snap_chunk", metadata,
    sa.Column("portfolio_id", sa.Uuid, primary_key=True),
    sa.Column("start_day", sa.Date, nullable=True),
    sa.Column("after_day", sa.Date, nullable=False),
    prefixes=["TEMPORARY"],
)
pairs = sa.Table(
    "_snap_pairs", metadata,
    sa.Column("portfolio_id", sa.Uuid, primary_key=True),
    sa.Column("d", sa.Date, primary_key=True),
    sa.Column("heal", sa.Boolean, nullable=False),
    prefixes=["TEMPORARY"],
)
stale_closes = sa.Table(
    "_snap_stale_closes", metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("d", sa.Date, primary_key=True),
    sa.Column("close", Money(20, 6), nullable=False),
    sa.Column("price_date", sa.Date, nullable=False),
    prefixes=["TEMPORARY"],
)
latest_close = sa.Table(
    "_latest_close", metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("close", Money(20, 6), nullable=False),
    sa.Column("price_date", sa.Date, nullable=False),
    sa.Column("num", Factor, nullable=True),
    sa.Column("den", Factor, nullable=True),
    sa.Column("since", sa.Date, nullable=True),  # the step of price_date: [since, until)
    sa.Column("until", sa.Date, nullable=True),
    prefixes=["TEMPORARY"],
)
steps = sa.Table(
    "_snap_steps", metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("valid_from", sa.Date, primary_key=True),
    sa.Column("valid_to", sa.Date, nullable=False),
    sa.Column("price_symbol", sa.Text, nullable=False),
    sa.Column("num", Factor, nullable=False),
    sa.Column("den", Factor, nullable=False),
    prefixes=["TEMPORARY"],
)
day_closes = sa.Table(
    "_snap_day_closes", metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("d", sa.Date, primary_key=True),
    sa.Column("close", Money(20, 6), nullable=True),  # NULL: no close that day (a stepped symbol has a row every day)
    sa.Column("price_symbol", sa.Text, nullable=True),  # NULL (and num, den, since, until): no corporate action
    sa.Column("num", Factor, nullable=True),
    sa.Column("den", Factor, nullable=True),
    sa.Column("since", sa.Date, nullable=True),
    sa.Column("until", sa.Date, nullable=True),
    prefixes=["TEMPORARY"],
)
