"""withdrawals of a post's location only: withdrawn_posts.location_only

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-29 02:10:00.000000

X's compliance reports `scrub_geo` when an author takes a post's location off it: Plaza now
takes the post's point out and keeps what it said. A post not yet routed when that comes is
remembered with location_only, so that it is routed without its point; a withdrawal of the
whole post, before or after, makes the row a whole withdrawal. The rows made before this
revision are whole withdrawals.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "withdrawn_posts",
        sa.Column("location_only", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # a location's withdrawal read as the whole post's would drop a post its author kept
    op.execute("DELETE FROM withdrawn_posts WHERE location_only")
    op.drop_column("withdrawn_posts", "location_only")
