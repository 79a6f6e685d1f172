"""Dependencies of the gateway's routes, as Annotated aliases. All async: FastAPI runs a plain
`def` dependency in a thread pool, a thread hop per request for nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
from fastapi import Depends, Request
from plaza.city import City
from plaza.policy import RoutingTable, SlaPolicy
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


async def _ingest(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.ingest
    return client


async def _city(request: Request) -> City:
    city: City = request.app.state.city
    return city


async def _sla(request: Request) -> SlaPolicy:
    sla: SlaPolicy = request.app.state.sla
    return sla


async def _routing(request: Request) -> RoutingTable:
    routing: RoutingTable = request.app.state.routing
    return routing


SessionDep = Annotated[AsyncSession, Depends(_session)]
IngestDep = Annotated[httpx.AsyncClient, Depends(_ingest)]
CityDep = Annotated[City, Depends(_city)]
SlaDep = Annotated[SlaPolicy, Depends(_sla)]
RoutingDep = Annotated[RoutingTable, Depends(_routing)]
