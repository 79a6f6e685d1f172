"""queue item as one expression: the same JSON, built without a query per row

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 23:50:00.000000

0006's trigger built a request's queue item with a SELECT, which PL/pgSQL runs through the
executor on every insert and update: with the router writing each new request as its own row of
an executemany, it was more than half of the insert's cost (93 us a row, 40 without it). The
same row_to_json over a ROW() cast to a composite type of the item's fields is a simple
expression, evaluated without the executor: the text is byte for byte the same (so no row is
rewritten), at half the cost. `tests/integration/test_manager_queue.py` checks it still agrees
with the queue item's model.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
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

# The queue item's fields, in plaza_api.manager.QueueItem's order (without `overdue`).
ITEM_TYPE = """
CREATE TYPE plaza_queue_item AS (
    service_request_id text, status text, open311_status text, extended_status text,
    service_code text, description text, district_code text, barri_code text, queue text,
    agency_responsible text, location_source text, urgency text, language text,
    reporters_count integer, assigned_worker text, requested_datetime timestamptz,
    ack_due_at timestamptz, expected_datetime timestamptz, escalated boolean,
    source_platform text, source_post_id text, author_handle text
)
"""

# As in 0006, the function's time zone is UTC: datetimes are written in UTC to the second.
FUNCTION = f"""
CREATE OR REPLACE FUNCTION plaza_queue_item() RETURNS trigger
LANGUAGE plpgsql SET timezone = 'UTC' AS $$
BEGIN
    NEW.queue_item := left(row_to_json(ROW(
        NEW.id::text, NEW.status,
        CASE WHEN NEW.status IN ({_OPEN}) THEN 'open' ELSE 'closed' END,
        CASE NEW.status {_EXTENDED} END,
        NEW.service_code, NEW.description, NEW.district_code, NEW.barri_code, NEW.queue,
        NEW.agency_responsible, NEW.location_source, NEW.urgency, NEW.language,
        NEW.reporters_count, NEW.assigned_worker,
        date_trunc('second', NEW.requested_datetime),
        date_trunc('second', NEW.ack_due_at),
        date_trunc('second', NEW.expected_datetime),
        NEW.escalated_at IS NOT NULL,
        NEW.source_platform, NEW.source_post_id, NEW.source_author_handle
    )::plaza_queue_item)::text, -1);
    RETURN NEW;
END
$$
"""

PREVIOUS = f"""
CREATE OR REPLACE FUNCTION plaza_queue_item() RETURNS trigger
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
    op.execute(ITEM_TYPE)
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(PREVIOUS)
    op.execute("DROP TYPE plaza_queue_item")
