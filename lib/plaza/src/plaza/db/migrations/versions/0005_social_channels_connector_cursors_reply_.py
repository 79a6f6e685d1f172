"""social channels: connector cursors, reply deliveries

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connector_cursors",
        sa.Column("connector", sa.String(length=128), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("connector", name=op.f("pk_connector_cursors")),
    )
    op.create_table(
        "reply_deliveries",
        sa.Column("reply_id", sa.String(length=64), nullable=False),
        sa.Column("service_request_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("in_reply_to_post_id", sa.String(length=256), nullable=False),
        sa.Column("author_handle", sa.String(length=256), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("photo_url", sa.Text(), nullable=True),
        sa.Column("correlation_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("maybe_sent", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("remote_id", sa.String(length=256), nullable=True),
        sa.Column("public_url", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["service_request_id"],
            ["service_requests.id"],
            name=op.f("fk_reply_deliveries_service_request_id_service_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("reply_id", name=op.f("pk_reply_deliveries")),
    )
    op.create_index(
        op.f("ix_reply_deliveries_service_request_id"),
        "reply_deliveries",
        ["service_request_id"],
        unique=False,
    )
    op.create_index(
        "ix_reply_deliveries_due",
        "reply_deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("state IN ('pending','sending')"),
    )
    op.create_index(
        "ix_reply_deliveries_state", "reply_deliveries", ["state", "updated_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_reply_deliveries_state", table_name="reply_deliveries")
    op.drop_index(
        "ix_reply_deliveries_due",
        table_name="reply_deliveries",
        postgresql_where=sa.text("state IN ('pending','sending')"),
    )
    op.drop_index(op.f("ix_reply_deliveries_service_request_id"), table_name="reply_deliveries")
    op.drop_table("reply_deliveries")
    op.drop_table("connector_cursors")
