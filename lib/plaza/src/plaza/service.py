"""What every service process does the same way: logging, stop signals, metrics endpoint, run loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from prometheus_client import start_http_server

from plaza.bus import Bus
from plaza.worker import Worker

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def on_stop_signals(callback: Callable[[], None]) -> None:
    """Calls `callback` on SIGTERM and SIGINT (Ctrl-C) for a clean shutdown."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


def serve_metrics(port: int) -> None:
    """Serves this process's Prometheus metrics on 127.0.0.1:port (0 = off)."""
    if port:
        start_http_server(port, addr="127.0.0.1")
        log.info("metrics on http://127.0.0.1:%d/metrics", port)


async def run_worker_service(
    bus: Bus, worker: Worker, *, cleanup: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Runs one worker until SIGTERM/SIGINT, then commits, leaves the group and cleans up."""
    on_stop_signals(worker.stop)
    await bus.start()
    try:
        await worker.run()
    finally:
        await bus.close()
        if cleanup is not None:
            await cleanup()
