"""posts withdrawn by their authors: withdrawn_posts, and when a report or a request lost its post

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28 00:00:00.000000

A citizen who deleted their post kept it in Plaza's public record: its words, photos, handle and
point went on in Open311, the manager API and the console. The router now takes them out
(plaza.withdrawals) and marks what it scrubbed: request_reports.withdrawn_at,
service_requests.withdrawn_at (its opening post was withdrawn), and withdrawn_posts, which
holds only the ids, so that a reply still on its way or a late redelivery of the post is
recognised. The notifier and ingest find a post's deliveries by the post it answers (an index).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "withdrawn_posts",
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("post_id", sa.String(256), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("platform", "post_id", name="pk_withdrawn_posts"),
    )
    op.add_column(
        "request_reports", sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "service_requests", sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True)
    )
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_reply_deliveries_post")
        op.create_index(
            "ix_reply_deliveries_post",
            "reply_deliveries",
            ["platform", "in_reply_to_post_id"],
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_reply_deliveries_post",
            table_name="reply_deliveries",
            postgresql_concurrently=True,
            if_exists=True,
        )
    op.drop_column("service_requests", "withdrawn_at")
    op.drop_column("request_reports", "withdrawn_at")
    op.drop_table("withdrawn_posts")
