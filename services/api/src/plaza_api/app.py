"""Builds the gateway app from its dependencies (the composition happens in main or the CLI)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from plaza.city import City
from plaza.policy import RoutingTable, SlaPolicy
from plaza.web import install_metrics, install_problem_handlers, install_request_metrics
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from plaza_api import console, gateway, manager, open311, replies
from plaza_api.access import AccessConfig, install_access
from plaza_api.backlog import BacklogCollector, LagReader
from plaza_api.docs import install_docs
from plaza_api.reads import EngineReads, Reads


def create_app(
    sessions: async_sessionmaker[AsyncSession],
    ingest: httpx.AsyncClient,
    city: City,
    *,
    sla: SlaPolicy | None = None,
    routing: RoutingTable | None = None,
    access: AccessConfig | None = None,
    reads: Reads | None = None,
    lag: LagReader | None = None,
) -> FastAPI:
    """Without `access` (tests), tokens are signed with a secret made for this app alone; without
    `reads`, the hot reads borrow the sessions' engine's connections; without `lag` (an
    in-memory bus), /metrics shows no consumer group's lag from the broker."""
    app = FastAPI(
        title="Plaza",
        version="1",
        description="A city answers its citizens in public: Open311 GeoReport v2 and the manager API.",
        docs_url=None,  # install_docs serves them without a CDN
        redoc_url=None,
    )
    app.state.sessions = sessions
    app.state.reads = reads or EngineReads(_engine(sessions))
    app.state.ingest = ingest
    app.state.city = city
    app.state.sla = sla or SlaPolicy.load()
    app.state.routing = routing or RoutingTable.load(city=city)
    app.state.backlog = BacklogCollector(
        sessions,
        lag=lag,
        districts={code: d.name for code, d in city.districts.items()},
        language=city.council.language,
        city=city.name,
    )
    install_problem_handlers(app)
    # Routes are tried in order, and no two routers' paths overlap: the manager's go first, as
    # the queue page is the busiest path (each router passed over costs it a few microseconds).
    app.include_router(manager.router)
    access = access or AccessConfig()
    install_access(app, sessions, access)
    install_request_metrics(app, "api")
    app.include_router(gateway.router)
    # this process's metrics (in `make run`, every service's) and the open backlog
    install_metrics(app, access.metrics, app.state.backlog.exposition)
    app.include_router(open311.router)
    app.include_router(replies.router)
    install_docs(app)
    app.state.console_files = console.load_files()  # missing from the package: fails now
    app.include_router(console.router)
    return app


def _engine(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise TypeError("the gateway's sessions must be bound to an AsyncEngine")
    return bind
