"""barri index leads with the barri: a point's duplicate search can only take the band index

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 05:00:00.000000

The router's duplicate search has two halves (plaza_router.dedupe): a point's probe reads a band
of latitude of its service's open requests (ix_service_requests_dedupe_near: service_code, lat),
a barri's probe its barri's requests within the window (ix_service_requests_dedupe_barri). With
the barri index led by service_code, it served a point's probe too, reading the service's whole
window, and the planner took it whenever its statistics lagged the table (a new city, a burst
before autovacuum's next analyze): 30 ms a batch of 100 instead of 1. Led by barri_code it
answers a barri's probe as before and can no longer answer a point's.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_OPEN = "status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')"


def upgrade() -> None:
    op.drop_index("ix_service_requests_dedupe_barri", table_name="service_requests")
    op.create_index(
        "ix_service_requests_dedupe_barri",
        "service_requests",
        ["barri_code", "service_code", "requested_datetime"],
        postgresql_where=_OPEN,
    )


def downgrade() -> None:
    op.drop_index("ix_service_requests_dedupe_barri", table_name="service_requests")
    op.create_index(
        "ix_service_requests_dedupe_barri",
        "service_requests",
        ["service_code", "barri_code", "requested_datetime"],
        postgresql_where=_OPEN,
    )
