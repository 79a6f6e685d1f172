"""Runs the router as its own process: `python -m plaza_router` (its outbox relay runs as
`python -m plaza_router.relay`)."""

from __future__ import annotations

import asyncio

from plaza import metrics
from plaza.bus import bus_from_settings
from plaza.city import City
from plaza.contracts import TOPICS
from plaza.db import create_engine, session_factory
from plaza.service import (
    check_database,
    configure_logging,
    on_stop_signals,
    run,
    serve_metrics,
    start_bus,
    started,
)
from plaza.settings import load
from plaza.worker import Worker

from plaza_router.handler import GROUP, RoutePost
from plaza_router.settings import RouterSettings
from plaza_router.sla_scanner import SlaScanner
from plaza_router.withdrawals import GROUP as WITHDRAWALS
from plaza_router.withdrawals import WithdrawPost


async def serve(settings: RouterSettings) -> None:
    # No ping per transaction: the worker and the SLA scanner retry what a dead connection fails.
    engine = create_engine(settings.require_database(), pre_ping=False)
    sessions = session_factory(engine)
    bus = bus_from_settings(settings)
    city = City.from_settings(
        city_config=settings.city_config, city_data_dir=settings.city_data_dir
    )
    metrics.start_at_zero(
        districts=city.districts,
        counters=(metrics.REQUESTS_CREATED, metrics.SLA_BREACHES),  # the SLA scanner's breaches
        consumers={GROUP: [TOPICS.POST_CLASSIFIED], WITHDRAWALS: [TOPICS.POST_WITHDRAWN]},
    )
    handler = RoutePost.from_settings(sessions, city, settings)
    worker = Worker.in_batches(
        bus,
        group=GROUP,
        topics=[TOPICS.POST_CLASSIFIED],
        handler=handler,
        batch_size=settings.batch_size,
        commit_interval=settings.commit_interval_ms / 1000,
    )
    withdrawals = Worker(
        bus, group=WITHDRAWALS, topics=[TOPICS.POST_WITHDRAWN], handler=WithdrawPost(sessions)
    )
    scanner = SlaScanner(
        sessions,
        interval=settings.sla_scan_interval,
        inbox_retention=settings.inbox_retention(),
    )

    def stop() -> None:
        worker.stop()
        withdrawals.stop()
        scanner.stop()

    on_stop_signals(stop)
    await check_database(engine)
    await start_bus(bus, settings.kafka_bootstrap)
    started()
    try:
        scanning = asyncio.create_task(scanner.run())
        running = [asyncio.create_task(worker.run()), asyncio.create_task(withdrawals.run())]
        try:
            # One worker that stops (a fatal error) stops the process: not half a router.
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop()
            try:
                await asyncio.gather(*running)
            finally:
                await scanning
    finally:
        await bus.close()
        await engine.dispose()


def main() -> None:
    settings = load(RouterSettings)
    configure_logging(settings.log_level)
    serve_metrics(settings)
    run(serve(settings))


if __name__ == "__main__":
    main()
