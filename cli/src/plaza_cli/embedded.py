"""Embedded mode: all five services in one process over the journalled in-memory bus (`make run`).

With a platform's settings (PLAZA_MASTODON_*, PLAZA_BLUESKY_*, PLAZA_X_*: README, "Social
channels") it also listens there and answers there, as the ingest and notifier processes do:
a town like Jun runs its whole Plaza on one machine."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import httpx
from plaza import metrics
from plaza.bus import Bus
from plaza.bus.journal import JournalBus
from plaza.city import City
from plaza.contracts import TOPICS
from plaza.db import create_engine, session_factory
from plaza.db.migrate import upgrade
from plaza.outbox import Relay
from plaza.policy import RoutingTable, SlaPolicy
from plaza.service import http_server, on_stop_signals
from plaza.settings import SettingsError
from plaza.worker import Worker
from plaza_api.app import create_app as create_gateway
from plaza_api.settings import AccessSettings, persisted_secret
from plaza_classifier.handler import GROUP as CLASSIFIER
from plaza_classifier.handler import ClassifyPost
from plaza_ingest.__main__ import build_connectors
from plaza_ingest.app import create_app as create_ingest
from plaza_ingest.connectors import ConnectorRunner
from plaza_ingest.connectors.runner import RecentPosts
from plaza_notifier import metrics as notifier_metrics
from plaza_notifier.__main__ import NotifierSettings, build_channels, photo_fetcher
from plaza_notifier.channels import ReplyChannel
from plaza_notifier.delivery import Deliverer
from plaza_notifier.handler import GROUP as NOTIFIER
from plaza_notifier.handler import PostReply
from plaza_router.handler import GROUP as ROUTER
from plaza_router.handler import RoutePost
from plaza_router.relay import relay_of
from plaza_router.settings import RouterSettings
from plaza_router.sla_scanner import SlaScanner
from plaza_router.withdrawals import GROUP as WITHDRAWALS
from plaza_router.withdrawals import WithdrawPost
from pydantic import Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from plaza_cli import demo
from plaza_cli.access_cmd import first_admin_key
from plaza_cli.postgres import EmbeddedPostgres

log = logging.getLogger(__name__)


class EmbeddedSettings(RouterSettings, AccessSettings, NotifierSettings):
    port: int = Field(default=8000, ge=1, le=65535, description="PLAZA_PORT: the API's port")
    home: Path = Field(default=Path(".plaza"), description="PLAZA_HOME: data directory")
    demo: bool | None = Field(
        default=None,
        description="PLAZA_DEMO: run the demo feed (Barcelona's posts); by default on, and off "
        "with PLAZA_CITY_CONFIG",
    )
    demo_interval: float = Field(default=3.0, gt=0, description="seconds between demo posts")
    drain_seconds: float = Field(
        default=10.0,
        ge=0,
        description="PLAZA_DRAIN_SECONDS: on Ctrl-C, how long the workers may go on handling "
        "what is on the bus before they stop (what is left is kept, and handled at the next start)",
    )


# Every service's consumer group and topic, in this one process.
CONSUMERS = {
    CLASSIFIER: [TOPICS.POST_RECEIVED],
    ROUTER: [TOPICS.POST_CLASSIFIED],
    WITHDRAWALS: [TOPICS.POST_WITHDRAWN],
    NOTIFIER: [TOPICS.REPLY_REQUESTED],
}


def build_workers(
    bus: Bus,
    settings: EmbeddedSettings,
    city: City,
    sessions: async_sessionmaker[AsyncSession],
    channels: Mapping[str, ReplyChannel] | None = None,
) -> list[Worker]:
    templates = settings.templates()
    router = RoutePost.from_settings(sessions, city, settings)
    notifier = PostReply(sessions, channels, templates)
    classifier = ClassifyPost(city)
    return [
        Worker.in_batches(
            bus,
            group=group,
            topics=[topic],
            handler=handler,
            batch_size=settings.batch_size,
            # as the services on Kafka: a commit is a transaction in the bus's journal
            commit_interval=settings.commit_interval_ms / 1000,
        )
        for group, topic, handler in (
            (CLASSIFIER, TOPICS.POST_RECEIVED, classifier),
            (ROUTER, TOPICS.POST_CLASSIFIED, router),
            (NOTIFIER, TOPICS.REPLY_REQUESTED, notifier),
        )
    ] + [
        Worker(
            bus, group=WITHDRAWALS, topics=[TOPICS.POST_WITHDRAWN], handler=WithdrawPost(sessions)
        )
    ]


# How soon after the stop a second SIGINT or SIGTERM is taken for the same one, passed on twice.
ECHO_SECONDS: Final = 0.5


async def drain(bus: JournalBus, engine: AsyncEngine, seconds: float) -> None:
    """Lets the workers handle what is on the bus and in the outbox, for up to `seconds` or
    until a second Ctrl-C, and says what is left: nothing is lost either way (the bus's journal
    and the outbox keep it for the next start), but a drained stop answers every post now."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    hurry = asyncio.Event()
    began = loop.time()

    def again() -> None:
        # A signal within a moment of the first is its echo, not a second Ctrl-C: `uv run`
        # (make run) passes on the SIGINT the terminal already sent to the whole group.
        if loop.time() - began > ECHO_SECONDS:
            hurry.set()

    on_stop_signals(again)
    try:
        left = await _unhandled(bus, engine)
        if left:
            log.info(
                "stopping: handling the %d records still on the bus or in the outbox first "
                "(up to %g s; Ctrl-C again stops at once)",
                left,
                seconds,
            )
        while left and loop.time() < deadline and not hurry.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hurry.wait(), min(0.1, max(deadline - loop.time(), 0)))
            left = await _unhandled(bus, engine)
    except Exception as exc:  # the database is away: the workers could not go on either
        log.warning("stopping without draining the bus (%s: %s)", type(exc).__name__, exc)
        return
    finally:
        # An echo still on its way would find Python's own handler: a KeyboardInterrupt in the
        # middle of the stop (no "Plaza stopped", make run's exit status 130), as with nothing
        # to drain it came after the drain had ended.
        await asyncio.sleep(max(0.0, began + ECHO_SECONDS - loop.time()))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if left:
        log.warning(
            "stopping with %d records not handled yet: they are kept, and handled at the next start",
            left,
        )


async def _unhandled(bus: JournalBus, engine: AsyncEngine) -> int:
    """Records the groups have not committed, and outbox events not on the bus yet."""
    async with engine.connect() as conn:
        relaying = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
    return bus.unhandled() + int(relaying)


def listen(port: int) -> socket.socket:
    """The API's socket, listening on 127.0.0.1:port; a SettingsError naming PLAZA_PORT when the
    port cannot be had (another `make run` holds it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # As uvicorn's own sockets: a port left in TIME_WAIT by the last run can be bound again.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        # Listening at once, not only bound: two sockets bound with SO_REUSEADDR may share a
        # port until one of them listens.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            problem = f"port {port} (127.0.0.1) is already in use, perhaps by another `make run`"
            advice = "stop it, or set PLAZA_PORT to a free port"
        else:
            problem = f"cannot listen on port {port} (127.0.0.1): {exc.strerror}"
            advice = "set PLAZA_PORT to another port"
        raise SettingsError(f"PLAZA_PORT: {problem}: {advice}") from exc
    return sock


def check_home_city(home: Path, city: str) -> None:
    """Keeps one city's requests in one PLAZA_HOME. Its database holds requests by district code
    only: Jun's `01` started on Barcelona's data would show Ciutat Vella's requests as Casco
    Urbano's, in its queues, its Open311 and its metrics. A home made before this file existed
    is taken as the city's that starts it now."""
    marker = home / "city"
    if marker.is_file():
        kept = marker.read_text(encoding="utf-8").strip()
        if kept and kept != city:
            raise SettingsError(
                f"PLAZA_HOME={home} holds {kept}'s requests, not {city}'s: give {city} a home "
                f"of its own (PLAZA_HOME={home}-{city.lower().replace(' ', '-')} make run), "
                f"or start {kept} again with the city settings it had"
            )
        if kept == city:
            return
    home.mkdir(parents=True, exist_ok=True)
    marker.write_text(city + "\n", encoding="utf-8")


async def run(settings: EmbeddedSettings) -> None:
    # The port first: when it is taken, nothing is started (the database, the workers, the
    # feed), and no other process can take it between this check and the server's start.
    api = listen(settings.port)
    try:
        await _run(settings, api)
    finally:
        api.close()


async def _run(settings: EmbeddedSettings, api: socket.socket) -> None:
    postgres: EmbeddedPostgres | None = None
    url = settings.database_url
    city = City.from_settings(
        city_config=settings.city_config, city_data_dir=settings.city_data_dir
    )
    if not url:
        check_home_city(settings.home, city.name)
        log.info("starting embedded PostgreSQL in %s", settings.home / "pgdata")
        postgres = EmbeddedPostgres(settings.home / "pgdata")
        if postgres.pending:
            log.warning("%s", postgres.pending)
        for found in postgres.left_behind:
            log.warning("the last run did not stop cleanly: %s", found)
        if postgres.left_behind:
            log.warning(
                "nothing is lost: each service resumes from its last commit, and what it was "
                "handling is handled again, once (the inboxes recognise it)"
            )
        postgres.ensure_database()
        url = postgres.url()
    engine = create_engine(url)
    # The bus's journal has an engine of its own: its writes wait for no request's connection,
    # and go without pre-ping (a failed publish fails its post, which the sender repeats).
    journal = create_engine(url, pool_size=3, pre_ping=False)
    try:
        await upgrade(url)
        sessions = session_factory(engine)
        secret = (
            settings.jwt_secret.get_secret_value()
            if settings.jwt_secret
            else persisted_secret(settings.home)
        )
        first = next(iter(city.districts.values()))  # the queue the banner and hint show
        admin_hint = await first_admin_key(
            sessions, settings.home, queue=first.code, show_key=sys.stdout.isatty()
        )
        run_demo = demo.wanted(settings.demo, city, city_file=settings.city_config is not None)
        metrics.start_at_zero(
            districts=city.districts, counters=metrics.REQUEST_COUNTERS, consumers=CONSUMERS
        )
        notifier_metrics.start_at_zero()
        bus = JournalBus(journal)
        await bus.start()
        social = httpx.AsyncClient(timeout=15.0)  # the platforms' APIs, when configured
        channels = build_channels(settings, social, photo_fetcher(settings))
        workers = build_workers(bus, settings, city, sessions, channels)
        loops: list[Worker | Relay | SlaScanner | Deliverer] = [
            *workers,
            relay_of(settings, bus, engine),
            SlaScanner(
                sessions,
                interval=settings.sla_scan_interval,
                inbox_retention=settings.inbox_retention(),
            ),
        ]
        if channels:
            loops.append(Deliverer(sessions, channels, settings.delivery_policy()))
        tasks = [asyncio.create_task(loop.run(), name=type(loop).__name__) for loop in loops]
        await asyncio.gather(*(w.ready.wait() for w in workers))
        seen = RecentPosts()
        listening = [
            asyncio.create_task(ConnectorRunner(c, bus, sessions, seen=seen).run(), name=c.name)
            for c in build_connectors(settings, social, sessions)
        ]
        if listening or channels:
            log.info(
                "social channels: listening as %s, replying on %s",
                ", ".join(t.get_name() for t in listening) or "nothing",
                ", ".join(channels) or "the log channel only",
            )
        transport = httpx.ASGITransport(app=create_ingest(bus))
        async with (
            social,
            httpx.AsyncClient(transport=transport, base_url="http://ingest") as ingest,
        ):
            gateway = create_gateway(
                sessions,
                ingest,
                city,
                sla=SlaPolicy.load(settings.sla_config),
                routing=RoutingTable.load(settings.routing_config, city),
                access=settings.access(secret),
            )
            feed = (
                asyncio.create_task(demo.feed(ingest, interval=settings.demo_interval))
                if run_demo
                else None
            )
            server = http_server(gateway, settings.port)

            def stop_if_a_worker_dies(task: asyncio.Task[None]) -> None:
                if not task.cancelled() and task.exception() is not None:
                    log.error("%s died; stopping Plaza", task.get_name(), exc_info=task.exception())
                    server.should_exit = True

            for task in tasks:
                task.add_done_callback(stop_if_a_worker_dies)
            print(
                f"Plaza is running: http://127.0.0.1:{settings.port}/docs "
                f"(queue of {first.name}: /api/v1/districts/{first.code}/queue; Ctrl-C stops)\n"
                f"The managers' web console: http://127.0.0.1:{settings.port}/console/ "
                "(sign in as a user of plaza users create, or paste an API key)",
                flush=True,
            )
            print(admin_hint.format(port=settings.port), flush=True)
            try:
                await server.serve([api])  # returns on Ctrl-C / SIGTERM
            finally:
                # No new posts first (the API has stopped), then what is in flight.
                for listener in [*listening, *([feed] if feed is not None else [])]:
                    listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await listener
                if not any(task.done() for task in tasks):  # a dead worker would drain nothing
                    await drain(bus, engine, settings.drain_seconds)
                for loop in loops:
                    loop.stop()
                await asyncio.gather(*tasks, return_exceptions=True)
                await bus.close()
    finally:
        await journal.dispose()
        await engine.dispose()
        if postgres is not None:
            postgres.stop()
    print("Plaza stopped; data kept in", settings.home, flush=True)
