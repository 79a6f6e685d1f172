"""Runs the notifier as its own process: `python -m plaza_notifier`."""

from __future__ import annotations

import asyncio

from plaza.bus import bus_from_settings
from plaza.contracts import TOPICS
from plaza.db import create_engine, session_factory
from plaza.service import configure_logging, run_worker_service, serve_metrics
from plaza.settings import PlazaSettings, load
from plaza.worker import Worker

from plaza_notifier.handler import GROUP, PostReply


def main() -> None:
    settings = load(PlazaSettings)
    configure_logging(settings.log_level)
    engine = create_engine(settings.require_database())
    serve_metrics(settings.metrics_port)
    bus = bus_from_settings(settings)
    worker = Worker(
        bus,
        group=GROUP,
        topics=[TOPICS.REPLY_REQUESTED],
        handler=PostReply(session_factory(engine)),
    )
    asyncio.run(run_worker_service(bus, worker, cleanup=engine.dispose))


if __name__ == "__main__":
    main()
