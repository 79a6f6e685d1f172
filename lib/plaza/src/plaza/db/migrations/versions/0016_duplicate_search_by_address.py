"""duplicate search by address: an index on the open requests' address

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28 00:00:00.000000

A report without a point and without a barri, whose text names a street and number of the
city's register ("c/ Aragó, 250"), was never compared with anything: the router's duplicate
search (plaza_router.dedupe) took only a point or a barri. It now also reads the open requests
of its service at that very address, through this index, led by the address as the barri's is
by the barri, so that neither serves the other's probes.

Built CONCURRENTLY, outside the migration's transaction: on a table of millions of rows a
plain CREATE INDEX holds off every router's inserts for as long as it takes.
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_OPEN = "status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # A concurrent build that failed half-way leaves an invalid index of this name behind,
        # which no query uses: built again from scratch.
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_service_requests_dedupe_address")
        op.create_index(
            "ix_service_requests_dedupe_address",
            "service_requests",
            ["address", "service_code", "requested_datetime"],
            postgresql_where=_OPEN,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_service_requests_dedupe_address",
            table_name="service_requests",
            postgresql_concurrently=True,
            if_exists=True,
        )
