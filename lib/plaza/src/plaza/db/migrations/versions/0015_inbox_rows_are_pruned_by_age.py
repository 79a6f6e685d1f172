"""inbox rows are pruned by age: an index on processed_events.processed_at

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 10:00:00.000000

Every consumer's inbox kept a row for each event it ever handled (about 215 bytes a row), and
nothing deleted them: the table grew as fast as the requests. A row older than anything the
bus can deliver again is never read; the SLA scanner now deletes those (plaza.db.inbox.prune),
the oldest first, a small batch a transaction, found through this index.

Built CONCURRENTLY, outside the migration's transaction: on a table of millions of rows a
plain CREATE INDEX holds off every router's inserts for as long as it takes.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # A concurrent build that failed half-way (cancelled, a deadlock) leaves an invalid
        # index of this name behind, which no query uses: built again from scratch.
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_processed_events_processed_at")
        op.create_index(
            "ix_processed_events_processed_at",
            "processed_events",
            ["processed_at"],
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_processed_events_processed_at",
            table_name="processed_events",
            postgresql_concurrently=True,
            if_exists=True,
        )
