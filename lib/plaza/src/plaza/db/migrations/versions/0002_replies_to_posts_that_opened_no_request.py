"""replies to posts that opened no request

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 11:22:28.323270
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("replies", "service_request_id", existing_type=sa.BIGINT(), nullable=True)


def downgrade() -> None:
    # Replies that belong to no request cannot be kept under the old schema.
    op.execute("DELETE FROM replies WHERE service_request_id IS NULL")
    op.alter_column("replies", "service_request_id", existing_type=sa.BIGINT(), nullable=False)
