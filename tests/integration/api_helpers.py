"""Builders shared by the API tests: the gateway in process, and keys and users of each role."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import httpx
import uvicorn
from fastapi import FastAPI
from plaza.city import City
from plaza_api.access import AccessConfig
from plaza_api.app import create_app
from plaza_api.auth import Role, create_api_key, create_user
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import free_port

PASSWORD = "correct horse battery staple"


def gateway(
    sessions: async_sessionmaker[AsyncSession],
    ingest: httpx.AsyncClient | None = None,
    access: AccessConfig | None = None,
) -> FastAPI:
    return create_app(
        sessions,
        ingest or httpx.AsyncClient(base_url="http://ingest.invalid"),
        City.barcelona(),
        access=access,
    )


def client(app: FastAPI, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://plaza", headers=headers
    )


async def new_key(
    sessions: async_sessionmaker[AsyncSession],
    role: Role,
    scopes: Iterable[str] = (),
    worker_handle: str | None = None,
    name: str | None = None,
) -> str:
    async with sessions.begin() as session:
        _, key = await create_api_key(
            session,
            name=name or f"{role}-{'-'.join(scopes) or worker_handle or 'all'}",
            role=role,
            scopes=scopes,
            worker_handle=worker_handle,
        )
    return key


async def new_user(
    sessions: async_sessionmaker[AsyncSession],
    username: str,
    role: Role,
    scopes: Iterable[str] = (),
    worker_handle: str | None = None,
) -> None:
    async with sessions.begin() as session:
        await create_user(
            session,
            username=username,
            password=PASSWORD,
            role=role,
            scopes=scopes,
            worker_handle=worker_handle,
        )


class Server:
    """The gateway on a real port, in this event loop, for clients that speak plain HTTP."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Server:
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                return self
            await asyncio.sleep(0.02)
        raise AssertionError("the gateway did not start within 10 s")

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        assert self._task is not None
        await self._task
