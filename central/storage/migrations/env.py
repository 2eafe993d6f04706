"""Alembic's entry point: migrates the connection the store passes in (never a URL)."""

from __future__ import annotations

from alembic import context

from central.storage import schema

connection = context.config.attributes["connection"]
if connection is None:
    raise RuntimeError("migrations run through central.storage, which passes a connection")
context.configure(
    connection=connection,
    target_metadata=schema.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER TABLE is limited
)
with context.begin_transaction():
    context.run_migrations()
