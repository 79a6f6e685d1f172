"""staff tokens have a generation: a password reset or a disable stops the tokens issued before

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 10:00:00.000000

A staff user's token was good until it expired (an hour) unless the user was disabled, and
re-enabling them revived it; a password reset left it working. Each user now has a generation
that a reset or a disable moves on, and a token is good only in the generation it was issued in.
Tokens issued before this revision carry none and count as generation 0, as every user starts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "staff_users",
        sa.Column("token_generation", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("staff_users", "token_generation")
