"""replies name the author they answer: reply_deliveries.reporter

Revision ID: 0023
Revises: 0019
Create Date: 2026-11-28 03:50:00.000000

A thanks for a post that opened no request answers a post no report names the author of: a
withdrawal of that post by anybody (a bridge naming another account) took the thanks out of the
deliveries as its author's deletion does. A delivery now keeps who wrote the post it answers
(plaza.requests.reporter_of), where its reply request said; only their withdrawal, or their
platform's, withdraws it. Empty, as the rows made before this revision are: any withdrawal does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "reply_deliveries", sa.Column("reporter", sa.Text(), nullable=False, server_default="")
    )


def downgrade() -> None:
    op.drop_column("reply_deliveries", "reporter")
