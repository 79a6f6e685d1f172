"""The last restore of the database from a backup, as `plaza restore` marks it: until the posts
read again since the backup are past, a reply to a post made before the restore may already be
in its thread (posted in the time the restore lost), so it is looked for there first."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)

# The mark is a JSON comment on the schema, which any schema revision keeps (a table would be
# missing from an older backup's schema, restored before the next start upgrades it).
RESTORED: Final = "plaza-restored"
# How long after a restore the posts it lost may come again: the platforms replay a stream's gap
# for days at the most (X's recent search, 7), and a reply to an older post is a new one.
LOOK_FOR: Final = timedelta(days=7)

_MARK = text("SELECT obj_description('public'::regnamespace, 'pg_namespace')")


def marked_restored(backup_made_at: str, now: datetime) -> str:
    """The statement with which `plaza restore` marks the database restored now from the backup
    made at `backup_made_at`."""
    mark = json.dumps({RESTORED: now.isoformat(), "backup": backup_made_at})
    return "COMMENT ON SCHEMA public IS '" + mark.replace("'", "''") + "'"


async def restored_at(session: AsyncSession) -> datetime | None:
    """When the database was last restored from a backup; None if never (or a mark this cannot
    read, which it says)."""
    comment = await session.scalar(_MARK)
    if not comment or RESTORED not in comment:  # PostgreSQL's "standard public schema"
        return None
    try:
        mark = json.loads(comment)
        return datetime.fromisoformat(mark[RESTORED]) if isinstance(mark, dict) else None
    except (ValueError, KeyError, TypeError):
        log.warning("the schema's comment is no restore mark plaza restore wrote: %r", comment)
        return None
