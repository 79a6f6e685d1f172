"""withdrawals name who asked: withdrawn_posts.reporter, one row per claim

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-28 00:20:00.000000

A withdrawal of a post not yet routed was remembered by the post's ids alone, whoever asked: a
bridge naming another account as its author kept the post out of Plaza (the router dropped it
on arrival), and the author's own deletion afterwards changed nothing (the row was there). Each
claim is now kept with who made it (plaza.requests.reporter_of; empty for the platform's own
stream, as the rows made before this revision are taken), and the router drops a post only for
its author's claim or the platform's, and forgets the others.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "withdrawn_posts", sa.Column("reporter", sa.Text(), nullable=False, server_default="")
    )
    op.drop_constraint("pk_withdrawn_posts", "withdrawn_posts", type_="primary")
    op.create_primary_key(
        "pk_withdrawn_posts", "withdrawn_posts", ["platform", "post_id", "reporter"]
    )


def downgrade() -> None:
    # One row per post again: the platform's own claim, else the earliest.
    op.execute(
        """
        DELETE FROM withdrawn_posts w USING withdrawn_posts o
        WHERE w.platform = o.platform AND w.post_id = o.post_id
          AND (o.reporter = '' AND w.reporter <> ''
               OR (o.reporter = '') = (w.reporter = '')
                  AND (o.withdrawn_at, o.reporter) < (w.withdrawn_at, w.reporter))
        """
    )
    op.drop_constraint("pk_withdrawn_posts", "withdrawn_posts", type_="primary")
    op.create_primary_key("pk_withdrawn_posts", "withdrawn_posts", ["platform", "post_id"])
    op.drop_column("withdrawn_posts", "reporter")
