"""withdrawals by their authors only, and of posts not routed: reply_deliveries.reporter and
published_posts

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-28 03:50:00.000000

A thanks for a post that opened no request answers a post no report names the author of: a
withdrawal of that post by anybody (a bridge naming another account) took the thanks out of the
deliveries as its author's deletion does. A delivery now keeps who wrote the post it answers
(plaza.requests.reporter_of), where its reply request said; only their withdrawal, or their
platform's, withdraws it. Empty, as the rows made before this revision are: any withdrawal does.

Ingest knew the posts it had published in this run from memory only: after a restart, the
deletion of a post published before it and not yet routed (no report, no reply) was taken for
somebody else's post and dropped. published_posts keeps their ids for the bus's retention.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "reply_deliveries", sa.Column("reporter", sa.Text(), nullable=False, server_default="")
    )
    op.create_table(
        "published_posts",
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("post_id", sa.String(256), nullable=False),
        sa.Column(
            "published_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("platform", "post_id", name="pk_published_posts"),
    )
    op.create_index("ix_published_posts_published_at", "published_posts", ["published_at"])


def downgrade() -> None:
    op.drop_index("ix_published_posts_published_at", table_name="published_posts")
    op.drop_table("published_posts")
    op.drop_column("reply_deliveries", "reporter")
