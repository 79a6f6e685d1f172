"""Runs the ingest service as its own process: `python -m plaza_ingest`."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from plaza.bus import bus_from_settings
from plaza.db import create_engine, session_factory
from plaza.service import configure_logging, http_server, run, start_bus
from plaza.settings import load
from plaza.social import SocialSettings
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from plaza_ingest.app import PUBLISH_TIMEOUT, create_app
from plaza_ingest.connectors import Connector, ConnectorRunner
from plaza_ingest.connectors.bluesky import BlueskyMentions
from plaza_ingest.connectors.mastodon import MastodonStream, Source
from plaza_ingest.connectors.runner import RecentPosts
from plaza_ingest.connectors.x import XMentions
from plaza_ingest.connectors.x_compliance import XCompliance, held_in


class IngestSettings(SocialSettings):
    ingest_port: int = Field(default=8101, ge=1, le=65535)
    # How long a post waits for the bus's acknowledgement before ingest answers 503.
    ingest_publish_timeout: float = Field(default=PUBLISH_TIMEOUT, gt=0, le=60)


def listens(settings: SocialSettings) -> bool:
    """Whether a platform is on: ingest then has connectors, and needs the database."""
    return any(p is not None for p in (settings.mastodon, settings.bluesky, settings.x))


def build_connectors(
    settings: SocialSettings,
    http: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
) -> list[Connector]:
    """Every connector the settings turn on (none: ingest is the webhook alone)."""
    connectors: list[Connector] = []
    mastodon = settings.mastodon
    if mastodon is not None:
        if mastodon.mentions:
            connectors.append(MastodonStream(mastodon, Source.MENTIONS, http))
        connectors += [
            MastodonStream(mastodon, Source.HASHTAG, http, hashtag=tag) for tag in mastodon.hashtags
        ]
    if settings.bluesky is not None:
        connectors.append(BlueskyMentions(settings.bluesky, http))
    if settings.x is not None:
        connectors.append(XMentions(settings.x, http))
        connectors.append(XCompliance(settings.x, http, held_in(sessions)))
    return connectors


async def serve(settings: IngestSettings) -> None:
    bus = bus_from_settings(settings)
    await start_bus(bus, settings.kafka_bootstrap)
    async with httpx.AsyncClient(timeout=15.0) as http:
        engine = create_engine(settings.require_database()) if listens(settings) else None
        tasks = []
        if engine is not None:
            sessions: async_sessionmaker[AsyncSession] = session_factory(engine)
            connectors = build_connectors(settings, http, sessions)
            seen = RecentPosts()
            tasks = [
                asyncio.create_task(ConnectorRunner(c, bus, sessions, seen=seen).run(), name=c.name)
                for c in connectors
            ]
        try:
            await http_server(
                create_app(
                    bus,
                    settings.metrics_access(),
                    publish_timeout=settings.ingest_publish_timeout,
                ),
                settings.ingest_port,
            ).serve()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if engine is not None:
                await engine.dispose()
            await bus.close()


def main() -> None:
    settings = load(IngestSettings)
    configure_logging(settings.log_level)
    run(serve(settings))


if __name__ == "__main__":
    main()
