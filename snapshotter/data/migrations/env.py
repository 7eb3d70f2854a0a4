"""Alembic environment: always run on the connection snapshotter hands in."""

from alembic import context

from snapshotter.data.schema import metadata

conn = context.config.attributes["connection"]
context.configure(connection=conn, target_metadata=metadata, render_as_batch=conn.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
