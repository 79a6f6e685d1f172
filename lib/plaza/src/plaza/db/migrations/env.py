"""Alembic environment: migrations always run on a connection handed in by plaza.db.migrate."""

from __future__ import annotations

from alembic import context
from plaza.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations with `plaza db upgrade` (plaza.db.migrate), not bare alembic"
    )

context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
