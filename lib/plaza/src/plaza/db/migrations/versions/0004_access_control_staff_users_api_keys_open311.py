"""access control: staff users, api keys, open311 submissions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 11:39:50.621479
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False, start=1), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("worker_handle", sa.String(length=256), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
    )
    op.create_table(
        "staff_users",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False, start=1), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("worker_handle", sa.String(length=256), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_users")),
        sa.UniqueConstraint("username", name=op.f("uq_staff_users_username")),
    )
    op.create_table(
        "open311_submissions",
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("api_key_id", sa.BigInteger(), nullable=False),
        sa.Column("service_code", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=256), nullable=True),
        sa.Column("phone", sa.String(length=64), nullable=True),
        sa.Column("first_name", sa.String(length=128), nullable=True),
        sa.Column("last_name", sa.String(length=128), nullable=True),
        sa.Column("device_id", sa.String(length=256), nullable=True),
        sa.Column("account_id", sa.String(length=256), nullable=True),
        sa.Column("attributes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_open311_submissions_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_open311_submissions")),
    )
    op.create_index(
        op.f("ix_open311_submissions_api_key_id"),
        "open311_submissions",
        ["api_key_id"],
        unique=False,
    )
    op.create_index(
        "ix_request_events_public_at",
        "request_events",
        ["at"],
        unique=False,
        postgresql_where=sa.text("public"),
    )
    op.create_index(
        "ix_service_requests_assigned",
        "service_requests",
        ["assigned_worker"],
        unique=False,
        postgresql_where=sa.text("assigned_worker IS NOT NULL"),
    )
    op.create_index(
        "ix_service_requests_open_queue",
        "service_requests",
        ["queue", "expected_datetime", "id"],
        unique=False,
        postgresql_where=sa.text(
            "status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')"
        ),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_service_requests_open_queue",
        table_name="service_requests",
        postgresql_where=sa.text(
            "status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')"
        ),
    )
    op.drop_index(
        "ix_service_requests_assigned",
        table_name="service_requests",
        postgresql_where=sa.text("assigned_worker IS NOT NULL"),
    )
    op.drop_index(
        "ix_request_events_public_at",
        table_name="request_events",
        postgresql_where=sa.text("public"),
    )
    op.drop_index(op.f("ix_open311_submissions_api_key_id"), table_name="open311_submissions")
    op.drop_table("open311_submissions")
    op.drop_table("staff_users")
    op.drop_table("api_keys")
