"""Alembic environment: runs on the connection handed over by ``gallery.db.Database`` (online mode only)."""

from __future__ import annotations

from alembic import context

from gallery.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("gallery migrations run through gallery.db.Database, which provides the connection")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
