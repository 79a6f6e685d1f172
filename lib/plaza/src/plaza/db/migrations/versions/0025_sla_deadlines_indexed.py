"""SLA deadlines indexed: the requests still waiting for each deadline

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-29 12:10:00.000000

The SLA scanner looks every 15 seconds for the requests past their acknowledgement or
resolution deadline whose breach is not yet recorded. No index held those deadlines, so each
scan walked the primary key through every request, closed ones included: 40 ms at 100,000
requests, and a city keeps millions. Two partial indexes now hold only the requests still
waiting for each deadline (open, or waiting to be acknowledged, and not yet breached), by that
deadline: a request leaves them when it is acknowledged, closed or breached, so they stay as
small as the open backlog. Built CONCURRENTLY, outside the migration's transaction: a plain
CREATE INDEX would hold off every router's inserts on a table of millions of rows.
"""

from __future__ import annotations

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

_OPEN = "status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')"
_WAITING = "status IN ('new','reopened','transferred')"

# name: (column, the requests it holds)
_INDEXES = {
    "ix_service_requests_ack_due": ("ack_due_at", f"{_WAITING} AND ack_breached_at IS NULL"),
    "ix_service_requests_resolve_due": (
        "expected_datetime",
        f"{_OPEN} AND resolve_breached_at IS NULL",
    ),
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, (column, where) in _INDEXES.items():
            # A concurrent build that failed half-way leaves an invalid index of this name
            # behind, which no query uses: built again from scratch.
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(
                f"CREATE INDEX CONCURRENTLY {name} ON service_requests ({column}) WHERE {where}"
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in _INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
