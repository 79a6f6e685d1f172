"""Runs the outbox relay as its own process: `python -m plaza_router.relay`."""

from __future__ import annotations

from plaza.bus import Bus, bus_from_settings
from plaza.db import create_engine
from plaza.outbox import Relay
from plaza.service import (
    check_database,
    configure_logging,
    on_stop_signals,
    run,
    serve_metrics,
    start_bus,
)
from plaza.settings import PlazaSettings, load
from sqlalchemy.ext.asyncio import AsyncEngine


def relay_of(settings: PlazaSettings, bus: Bus, engine: AsyncEngine) -> Relay:
    """The relay the settings describe (PLAZA_RELAY_INTERVAL_MS: its rounds' spacing)."""
    return Relay(bus, engine, busy_interval=settings.relay_interval_ms / 1000)


async def serve(settings: PlazaSettings) -> None:
    # No ping per round: the relay retries a round that a dead connection failed.
    engine = create_engine(settings.require_database(), pool_size=2, pre_ping=False)
    bus = bus_from_settings(settings)
    relay = relay_of(settings, bus, engine)
    on_stop_signals(relay.stop)
    await check_database(engine)
    await start_bus(bus, settings.kafka_bootstrap)
    try:
        await relay.run()
    finally:
        await bus.close()
        await engine.dispose()


def main() -> None:
    settings = load(PlazaSettings)
    configure_logging(settings.log_level)
    serve_metrics(settings)
    run(serve(settings))


if __name__ == "__main__":
    main()
