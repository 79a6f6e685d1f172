"""outbox rows are deleted once published: no published_at, no partial index

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 10:00:00.000000

The relay marked each event it published (UPDATE published_at) and deleted the marked ones an
hour later. The update wrote every row again, payload and all, with a new entry in the primary
key's index (the partial index on unpublished rows kept it from being a HOT update): in a loop
of inserting, reading and relaying rows, PostgreSQL spent 22 to 67 us of CPU a row marking them
and 12 to 19 deleting them. The relay now deletes what it published, so every row is an event
still to publish and the primary key orders them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM outbox WHERE published_at IS NOT NULL")
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.drop_column("outbox", "published_at")


def downgrade() -> None:
    op.add_column("outbox", sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )
