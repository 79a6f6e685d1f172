"""duplicate search by address key: the street register's key of an address, indexed

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-28 01:00:00.000000

The duplicate search by address (0016) compared the addresses as written: an Open311 report at
"c/ Aragó 250" (or "Calle Aragón, 250, 2º 1ª") was not found by a later post naming "Carrer
d'Aragó 250", and two reports of one problem at one door became two requests. A request now
also records its address's canonical key by the street register (the street's code and house
number: "018505 250", plaza.city.streets.address_key), which the router searches by through
this index; `address` stays as the citizen wrote it, for display.

The open requests already stored get their key from Barcelona's register, the only one: a city
without a register never searches by key (its router reads no address), so a key there is
never read. Closed requests keep none (the search reads only open ones). Both indexes are
built and dropped CONCURRENTLY, outside the migration's transaction: on a table of millions of
rows a plain CREATE INDEX holds off every router's inserts for as long as it takes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_OPEN = "status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')"


def _backfill() -> None:
    from plaza.city import City

    streets = City.barcelona().streets
    assert streets is not None
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(f"SELECT id, address FROM service_requests WHERE address IS NOT NULL AND {_OPEN}")
    ).all()
    keyed = [(rid, key) for rid, address in rows if (key := streets.key(address)) is not None]
    if keyed:
        bind.execute(
            sa.text(
                "UPDATE service_requests s SET address_key = k.key"
                " FROM unnest(CAST(:ids AS bigint[]), CAST(:keys AS text[])) AS k(id, key)"
                " WHERE s.id = k.id"
            ),
            {"ids": [rid for rid, _ in keyed], "keys": [key for _, key in keyed]},
        )


def upgrade() -> None:
    op.add_column("service_requests", sa.Column("address_key", sa.Text(), nullable=True))
    _backfill()
    with op.get_context().autocommit_block():
        # A concurrent build that failed half-way leaves an invalid index of this name behind,
        # which no query uses: built again from scratch.
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_service_requests_dedupe_address_key")
        op.create_index(
            "ix_service_requests_dedupe_address_key",
            "service_requests",
            ["address_key", "service_code", "requested_datetime"],
            postgresql_where=_OPEN,
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_service_requests_dedupe_address",
            table_name="service_requests",
            postgresql_concurrently=True,
            if_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_service_requests_dedupe_address")
        op.create_index(
            "ix_service_requests_dedupe_address",
            "service_requests",
            ["address", "service_code", "requested_datetime"],
            postgresql_where=_OPEN,
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_service_requests_dedupe_address_key",
            table_name="service_requests",
            postgresql_concurrently=True,
            if_exists=True,
        )
    op.drop_column("service_requests", "address_key")
