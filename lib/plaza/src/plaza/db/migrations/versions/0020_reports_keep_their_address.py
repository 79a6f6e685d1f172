"""reports keep their address: request_reports.address and address_key

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-28 03:40:00.000000

A request kept the address of the post that opened it, and its reports none: when that post was
withdrawn, the request lost its address although another report named the same door (it was
merged by that address's key), and was left with no place (a street places no district), the
next post about the door opening a request of its own; a report split from its request became
a request with no address either. Each report now keeps the address it gave, as written, and
its key by the street register (plaza.city.streets.address_key).

The reports already stored that opened their request get the request's; a merged one's address
was never kept, and stays unknown.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("request_reports", sa.Column("address", sa.Text(), nullable=True))
    op.add_column("request_reports", sa.Column("address_key", sa.Text(), nullable=True))
    op.execute(
        "UPDATE request_reports r SET address = s.address, address_key = s.address_key"
        " FROM service_requests s"
        " WHERE s.id = r.service_request_id AND NOT r.merged AND s.address IS NOT NULL"
        " AND s.source_platform = r.platform AND s.source_post_id = r.post_id"
    )


def downgrade() -> None:
    op.drop_column("request_reports", "address_key")
    op.drop_column("request_reports", "address")
