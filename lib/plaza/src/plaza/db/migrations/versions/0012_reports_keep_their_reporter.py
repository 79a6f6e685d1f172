"""reports keep their reporter: the account's stable id, where the handle was

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28 10:00:00.000000

A request's reporters were counted and matched by handle: one Bluesky or Mastodon account that
changed its handle counted twice and could no longer reopen its own request by answering, and
whoever took over an abandoned handle could. Each report now keeps who reported it as
"<platform>:<account id>" (a DID, an account id) when the channel gives one. The reports
already stored have no id: they keep their handle, in lower case as platforms compare them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("request_reports", sa.Column("reporter", sa.Text(), nullable=True))
    op.execute("UPDATE request_reports SET reporter = platform || ':' || lower(author_handle)")
    op.alter_column("request_reports", "reporter", nullable=False)


def downgrade() -> None:
    op.drop_column("request_reports", "reporter")
