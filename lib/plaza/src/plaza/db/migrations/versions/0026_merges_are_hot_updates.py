"""Merges are HOT updates: requests' pages keep room, and updated_datetime's index is a BRIN

Revision ID: 0026
Revises: 0025
Create Date: 2026-11-29 21:10:00.000000

A report merged into an open request updates the request's reporters_count, version and
updated_datetime, and most posts in a busy city are merged (64% of a burst's reports with 55,000
requests open). updated_datetime had a B-tree index (Open311's updated_after), so every merge
was a full update: a new row version and an entry in each of the table's dozen indexes, never a
HOT update. PostgreSQL 16 updates in place (HOT) a row whose changed columns only summarizing
(BRIN) indexes hold, if its page has room: the index on updated_datetime is now a BRIN (rows are
written in time order, and a merge touches requests of the last days, so its ranges stay
narrow), and the table's pages are filled to 80%, leaving room for a row's next version.
Measured with `make bench BENCH_ARGS=--growth-only` (four bursts of 40,000 posts, four runs
against three): 99-100% of merges HOT instead of none, PostgreSQL's CPU a post 7 to 27% lower
(the medians, burst by burst, 139/234/273/261 us against 123/218/198/222).

The fillfactor applies to pages written from now on. The BRIN is built CONCURRENTLY before the
B-tree is dropped (CONCURRENTLY too), outside the migration's transaction: Open311 reads keep an
index all along, and no router's insert waits on the builds.
"""

from __future__ import annotations

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

_NAME = "ix_service_requests_updated"


def _rebuild(using: str) -> None:
    # a BRIN summarizes each range of pages as it fills (autovacuum asked at once), not at the
    # next vacuum: an unsummarized range is read whatever the query
    options = " WITH (autosummarize = on)" if using == "brin" else ""
    with op.get_context().autocommit_block():
        # a concurrent build that failed half-way leaves an invalid index behind: built again
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_NAME}_new")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {_NAME}_new ON service_requests"
            f" USING {using} (updated_datetime){options}"
        )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_NAME}")
        op.execute(f"ALTER INDEX {_NAME}_new RENAME TO {_NAME}")


def upgrade() -> None:
    op.execute("ALTER TABLE service_requests SET (fillfactor = 80)")
    _rebuild("brin")


def downgrade() -> None:
    op.execute("ALTER TABLE service_requests RESET (fillfactor)")
    _rebuild("btree")
