"""queue items kept as JSON: service_requests.queue_item, written by a trigger

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 16:00:00.000000

A district queue is read far more often than its requests change (every manager's screen, every
few seconds), and building each item's JSON on every read was most of a page's cost in
PostgreSQL. The item is now built once per write, by a trigger, and a page joins the stored text
(`plaza_api.manager`). The only field that depends on the clock, `overdue`, is added at read time:
the stored text is the item's JSON without it and left open (no closing brace), so that a read
appends `,"overdue":…}` to it as it is (cutting a brace off at read time cost as much again).

The trigger's SELECT is the queue item's definition (`plaza_api.manager.QueueItem`, in its field
order); a change to that model is a new migration that replaces `plaza_queue_item()` and rewrites
the column (`UPDATE service_requests SET queue_item = NULL`). `tests/integration/test_manager_queue.py`
checks that the two agree, and agree with the request's own fields, for every status.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Written out, not imported: a migration stays what it was when it ran.
_OPEN = "'new', 'acknowledged', 'assigned', 'in_progress', 'transferred', 'reopened'"
_EXTENDED = (
    "WHEN 'new' THEN 'OPEN' WHEN 'acknowledged' THEN 'INVESTIGATING'"
    " WHEN 'assigned' THEN 'ACTION_SCHEDULED' WHEN 'in_progress' THEN 'IN_PROGRESS'"
    " WHEN 'resolved' THEN 'FIXED' WHEN 'closed' THEN 'CLOSED' WHEN 'duplicate' THEN 'DUPLICATE'"
    " WHEN 'transferred' THEN 'INTERNAL_REFERRAL'"
    " WHEN 'not_responsible' THEN 'NOT_COUNCILS_RESPONSIBILITY' WHEN 'reopened' THEN 'OPEN'"
)

# The function's own time zone is UTC, so its datetimes are written as W3C datetimes in UTC
# (to the second) whatever the writing session's time zone is.
FUNCTION = f"""
CREATE FUNCTION plaza_queue_item() RETURNS trigger
LANGUAGE plpgsql SET timezone = 'UTC' AS $$
BEGIN
    SELECT left(row_to_json(item)::text, -1) INTO NEW.queue_item FROM (
        SELECT NEW.id::text AS service_request_id, NEW.status,
            CASE WHEN NEW.status IN ({_OPEN}) THEN 'open' ELSE 'closed' END AS open311_status,
            CASE NEW.status {_EXTENDED} END AS extended_status,
            NEW.service_code, NEW.description, NEW.district_code, NEW.barri_code, NEW.queue,
            NEW.agency_responsible, NEW.location_source, NEW.urgency, NEW.language,
            NEW.reporters_count, NEW.assigned_worker,
            date_trunc('second', NEW.requested_datetime) AS requested_datetime,
            date_trunc('second', NEW.ack_due_at) AS ack_due_at,
            date_trunc('second', NEW.expected_datetime) AS expected_datetime,
            NEW.escalated_at IS NOT NULL AS escalated,
            NEW.source_platform, NEW.source_post_id, NEW.source_author_handle AS author_handle
    ) AS item;
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.add_column("service_requests", sa.Column("queue_item", sa.Text(), nullable=True))
    op.execute(FUNCTION)
    op.execute(
        "CREATE TRIGGER service_requests_queue_item BEFORE INSERT OR UPDATE ON service_requests"
        " FOR EACH ROW EXECUTE FUNCTION plaza_queue_item()"
    )
    op.execute("UPDATE service_requests SET queue_item = NULL")  # the trigger writes each one


def downgrade() -> None:
    op.execute("DROP TRIGGER service_requests_queue_item ON service_requests")
    op.execute("DROP FUNCTION plaza_queue_item()")
    op.drop_column("service_requests", "queue_item")
