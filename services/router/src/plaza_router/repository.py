"""Reads and writes of service requests for the router. Functions never commit."""

from __future__ import annotations

from collections.abc import Mapping

from plaza.db.models import ServiceRequest
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession


async def create_request(session: AsyncSession, values: Mapping[str, object]) -> ServiceRequest:
    """Inserts the request for a post, or returns the one that post already opened."""
    stmt = (
        insert(ServiceRequest)
        .values(**values)
        .on_conflict_do_nothing(constraint="uq_service_requests_source")
    )
    await session.execute(stmt)
    return await request_for_post(
        session, str(values["source_platform"]), str(values["source_post_id"])
    )


async def request_for_post(session: AsyncSession, platform: str, post_id: str) -> ServiceRequest:
    stmt = select(ServiceRequest).where(
        ServiceRequest.source_platform == platform, ServiceRequest.source_post_id == post_id
    )
    return (await session.execute(stmt)).scalar_one()
