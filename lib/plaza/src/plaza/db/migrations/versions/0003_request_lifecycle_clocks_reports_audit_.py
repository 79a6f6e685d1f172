"""request lifecycle: clocks, reports, audit trail, outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 11:25:17.721323
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False, start=1), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "request_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False, start=1), nullable=False),
        sa.Column("service_request_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_request_id"],
            ["service_requests.id"],
            name=op.f("fk_request_events_service_request_id_service_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_events")),
    )
    op.create_index(
        "ix_request_events_history", "request_events", ["service_request_id", "id"], unique=False
    )
    op.create_table(
        "request_reports",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False, start=1), nullable=False),
        sa.Column("service_request_id", sa.BigInteger(), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("post_id", sa.String(length=256), nullable=False),
        sa.Column("author_handle", sa.String(length=256), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("long", sa.Float(), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("merged", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_request_id"],
            ["service_requests.id"],
            name=op.f("fk_request_reports_service_request_id_service_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_reports")),
        sa.UniqueConstraint("platform", "post_id", name="uq_request_reports_post"),
    )
    op.create_index(
        op.f("ix_request_reports_service_request_id"),
        "request_reports",
        ["service_request_id"],
        unique=False,
    )
    op.add_column(
        "service_requests", sa.Column("ack_due_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "service_requests", sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "service_requests", sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "service_requests", sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "service_requests", sa.Column("ack_breached_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "service_requests",
        sa.Column("resolve_breached_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "service_requests", sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "service_requests", sa.Column("assigned_worker", sa.String(length=256), nullable=True)
    )
    op.add_column("service_requests", sa.Column("status_notes", sa.Text(), nullable=True))
    op.add_column("service_requests", sa.Column("resolution_photo_url", sa.Text(), nullable=True))
    op.add_column("service_requests", sa.Column("duplicate_of", sa.BigInteger(), nullable=True))
    op.add_column(
        "service_requests",
        sa.Column("reporters_count", sa.Integer(), server_default="1", nullable=False),
    )
    op.add_column(
        "service_requests", sa.Column("version", sa.Integer(), server_default="1", nullable=False)
    )
    op.create_index(
        "ix_service_requests_dedupe",
        "service_requests",
        ["service_code", "requested_datetime"],
        unique=False,
        postgresql_where=sa.text(
            "status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')"
        ),
    )
    op.create_index(
        "ix_service_requests_escalated",
        "service_requests",
        ["escalated_at"],
        unique=False,
        postgresql_where=sa.text("escalated_at IS NOT NULL"),
    )
    op.create_foreign_key(
        op.f("fk_service_requests_duplicate_of_service_requests"),
        "service_requests",
        "service_requests",
        ["duplicate_of"],
        ["id"],
    )
    # Requests opened before this revision: their opening post becomes their first report, their
    # creation the first entry of their history, and they get an acknowledgement deadline.
    op.execute(
        """
        INSERT INTO request_reports
            (service_request_id, platform, post_id, author_handle, text, lat, long, language,
             reported_at, merged)
        SELECT id, source_platform, source_post_id, source_author_handle, description, lat, long,
               language, requested_datetime, false
        FROM service_requests
        """
    )
    op.execute(
        """
        INSERT INTO request_events
            (service_request_id, version, kind, actor, at, before, after, note, public)
        SELECT id, 1, 'created', 'router', requested_datetime, '{}'::jsonb,
               jsonb_build_object('status', status, 'queue', queue), NULL, true
        FROM service_requests
        """
    )
    op.execute(
        "UPDATE service_requests SET ack_due_at = requested_datetime + interval '24 hours'"
        " WHERE ack_due_at IS NULL"
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_service_requests_duplicate_of_service_requests"),
        "service_requests",
        type_="foreignkey",
    )
    op.drop_index(
        "ix_service_requests_escalated",
        table_name="service_requests",
        postgresql_where=sa.text("escalated_at IS NOT NULL"),
    )
    op.drop_index(
        "ix_service_requests_dedupe",
        table_name="service_requests",
        postgresql_where=sa.text(
            "status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')"
        ),
    )
    op.drop_column("service_requests", "version")
    op.drop_column("service_requests", "reporters_count")
    op.drop_column("service_requests", "duplicate_of")
    op.drop_column("service_requests", "resolution_photo_url")
    op.drop_column("service_requests", "status_notes")
    op.drop_column("service_requests", "assigned_worker")
    op.drop_column("service_requests", "escalated_at")
    op.drop_column("service_requests", "resolve_breached_at")
    op.drop_column("service_requests", "ack_breached_at")
    op.drop_column("service_requests", "closed_at")
    op.drop_column("service_requests", "resolved_at")
    op.drop_column("service_requests", "acknowledged_at")
    op.drop_column("service_requests", "ack_due_at")
    op.drop_index(op.f("ix_request_reports_service_request_id"), table_name="request_reports")
    op.drop_table("request_reports")
    op.drop_index("ix_request_events_history", table_name="request_events")
    op.drop_table("request_events")
    op.drop_index(
        "ix_outbox_unpublished",
        table_name="outbox",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("outbox")
