"""Runs the ingest service as its own process: `python -m plaza_ingest`."""

from __future__ import annotations

import asyncio

from plaza.bus import bus_from_settings
from plaza.service import configure_logging, http_server
from plaza.settings import PlazaSettings, load
from pydantic import Field

from plaza_ingest.app import create_app


class IngestSettings(PlazaSettings):
    ingest_port: int = Field(default=8101, ge=1, le=65535)


async def serve(settings: IngestSettings) -> None:
    bus = bus_from_settings(settings)
    await bus.start()
    try:
        await http_server(create_app(bus), settings.ingest_port).serve()
    finally:
        await bus.close()


def main() -> None:
    settings = load(IngestSettings)
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
