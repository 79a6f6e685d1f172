"""Runs the router as its own process: `python -m plaza_router`."""

from __future__ import annotations

import asyncio

from plaza.bus import bus_from_settings
from plaza.contracts import TOPICS
from plaza.db import create_engine, session_factory
from plaza.service import configure_logging, run_worker_service, serve_metrics
from plaza.settings import load
from plaza.worker import Worker

from plaza_router.handler import GROUP, RoutePost
from plaza_router.settings import RouterSettings


def main() -> None:
    settings = load(RouterSettings)
    configure_logging(settings.log_level)
    engine = create_engine(settings.require_database())
    serve_metrics(settings.metrics_port)
    bus = bus_from_settings(settings)
    handler = RoutePost.from_settings(session_factory(engine), settings)
    worker = Worker(bus, group=GROUP, topics=[TOPICS.POST_CLASSIFIED], handler=handler)
    asyncio.run(run_worker_service(bus, worker, cleanup=engine.dispose))


if __name__ == "__main__":
    main()
