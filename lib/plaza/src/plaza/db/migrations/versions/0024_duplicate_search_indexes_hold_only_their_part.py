"""duplicate search indexes hold only their part's requests

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-29 12:00:00.000000

The router's duplicate search has three parts (plaza_router.dedupe.CANDIDATES): a point's
probe reads its band of latitude through ix_service_requests_dedupe_near, a barri's probe its
barri through ix_service_requests_dedupe_barri, an address's probe its address through
ix_service_requests_dedupe_address_key. All three indexes held every open request, so each
part could also be planned on another part's index, by service_code alone: every open request
of the service, for every probe.

PostgreSQL did so with a plan made while the table was empty or small and had no statistics
(a new city's first minutes, or the bench's): the router's prepared statement keeps its
generic plan until the table's first analyze, and by the second burst of 40,000 posts each
batch took 200 to 400 ms instead of 2 (12 to 15 million rows read in a burst, not 1.8).

Each index now holds only the requests its part can find: those with a point, with a barri,
with an address key. A part's own conditions imply its index's (a point's `lat BETWEEN` is
false for a NULL lat), and none implies another's, so no plan can take another part's index.
The indexes are also smaller: a request without a point is in neither the point's index nor,
without an address, the address's. The point's index also keys the longitude: a probe's band of
latitude crosses the whole city, and its requests outside the probe's box are now passed over
in the index, not each read from the table to be dropped (the rows read by a point's probe grew
with every open request of its service). Each is built under a new name CONCURRENTLY (outside the
migration's transaction: a plain CREATE INDEX would hold off every router's inserts on a table
of millions of rows), then the old one dropped CONCURRENTLY and the new one renamed.
"""

from __future__ import annotations

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_OPEN = "status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')"

# name: (columns, the column every request the index holds has, columns before)
_INDEXES = {
    "ix_service_requests_dedupe_near": ("service_code, lat, long", "lat", "service_code, lat"),
    "ix_service_requests_dedupe_barri": (
        "barri_code, service_code, requested_datetime",
        "barri_code",
        "barri_code, service_code, requested_datetime",
    ),
    "ix_service_requests_dedupe_address_key": (
        "address_key, service_code, requested_datetime",
        "address_key",
        "address_key, service_code, requested_datetime",
    ),
}


def _rebuild(name: str, columns: str, where: str) -> None:
    """The index `name` rebuilt on `columns` for the rows `where`, without blocking writes."""
    # A concurrent build that failed half-way leaves an invalid index behind: built afresh.
    op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}_new")
    op.execute(
        f"CREATE INDEX CONCURRENTLY {name}_new ON service_requests ({columns}) WHERE {where}"
    )
    op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    op.execute(f"ALTER INDEX {name}_new RENAME TO {name}")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, (columns, present, _) in _INDEXES.items():
            _rebuild(name, columns, f"{_OPEN} AND {present} IS NOT NULL")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, (_, _, before) in _INDEXES.items():
            _rebuild(name, before, _OPEN)
