"""duplicate search indexes: near a point, or in a barri

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 17:10:00.000000

The router looked for a report's duplicates through (service_code, requested_datetime) and
checked the place on every open request of the service within the 72-hour window: its cost per
post grew with the open requests (make bench: 1,635 posts/s on an empty database, 965 with
100,000 requests). Now a point's candidates come from a band of latitude, and a barri's from
the barri itself.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_OPEN = "status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')"


def upgrade() -> None:
    op.create_index(
        "ix_service_requests_dedupe_near",
        "service_requests",
        ["service_code", "lat"],
        postgresql_where=_OPEN,
    )
    op.create_index(
        "ix_service_requests_dedupe_barri",
        "service_requests",
        ["service_code", "barri_code", "requested_datetime"],
        postgresql_where=_OPEN,
    )
    op.drop_index("ix_service_requests_dedupe", table_name="service_requests")


def downgrade() -> None:
    op.create_index(
        "ix_service_requests_dedupe",
        "service_requests",
        ["service_code", "requested_datetime"],
        postgresql_where=_OPEN,
    )
    op.drop_index("ix_service_requests_dedupe_barri", table_name="service_requests")
    op.drop_index("ix_service_requests_dedupe_near", table_name="service_requests")
