"""reports indexed by request and reporter

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-29 05:20:00.000000

A report merged into a request counts a new reporter only if its author has not reported the
request before. The router read all of a request's authors at every merge to know, so a
request a whole street reports (hundreds of reports on a storm day) cost more with each one.
It now asks only about the authors of the reports it merges, through an index on
(service_request_id, reporter), which also serves every read of a request's reports by its id
and replaces the index on service_request_id alone. Both are built and dropped CONCURRENTLY,
outside the migration's transaction: on a table of millions of reports a plain CREATE INDEX
would hold off every router's inserts while it is built.
"""

from __future__ import annotations

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # A concurrent build that failed half-way leaves an invalid index of this name behind,
        # which no query uses: built again from scratch.
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_request_reports_request_reporter")
        op.create_index(
            "ix_request_reports_request_reporter",
            "request_reports",
            ["service_request_id", "reporter"],
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_request_reports_service_request_id",
            table_name="request_reports",
            postgresql_concurrently=True,
            if_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_request_reports_service_request_id")
        op.create_index(
            "ix_request_reports_service_request_id",
            "request_reports",
            ["service_request_id"],
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_request_reports_request_reporter",
            table_name="request_reports",
            postgresql_concurrently=True,
            if_exists=True,
        )
