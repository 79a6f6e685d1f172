"""outbox inserts notify the relay: NOTIFY plaza_outbox once per inserting statement

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 11:00:00.000000

The relay looked for new events every 50 ms while they flowed, so a reply waited up to 50 ms for
its round. A statement-level trigger now sends a notification on the `plaza_outbox` channel
whenever a statement inserts events (PostgreSQL delivers it at commit, once per transaction),
and the relay, listening on its lock's connection, starts a round when told. Its timed rounds
remain, less often, as a safety net.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

CHANNEL = "plaza_outbox"  # written out, not imported: a migration stays what it was


def upgrade() -> None:
    op.execute(
        f"""
        CREATE FUNCTION plaza_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox"
        " FOR EACH STATEMENT EXECUTE FUNCTION plaza_outbox_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER outbox_notify ON outbox")
    op.execute("DROP FUNCTION plaza_outbox_notify()")
