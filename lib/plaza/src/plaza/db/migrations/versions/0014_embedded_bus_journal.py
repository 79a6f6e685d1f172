"""embedded bus journal: the records, partitions and committed offsets of `make run`'s bus

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29 10:00:00.000000

Embedded mode's bus kept its records in a Python list, so a post answered 202 and not yet
routed was lost by Ctrl-C or kill -9 (870 of 1,094 in one test), and records were never freed.
The JournalBus now writes each published record here before `publish` returns, and each
consumer group's committed offset; a restart resumes every group where it committed. Records
are deleted once every group reading their topic has committed them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bus_partitions",
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("log_start", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name=op.f("pk_bus_partitions")),
    )
    op.create_table(
        "bus_records",
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("record_offset", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.LargeBinary(), nullable=True),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", "record_offset", name=op.f("pk_bus_records")),
    )
    op.create_table(
        "bus_offsets",
        sa.Column("consumer_group", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "consumer_group", "topic", "partition", name=op.f("pk_bus_offsets")
        ),
    )


def downgrade() -> None:
    op.drop_table("bus_offsets")
    op.drop_table("bus_records")
    op.drop_table("bus_partitions")
