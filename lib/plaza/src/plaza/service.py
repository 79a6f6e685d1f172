"""What every service process does the same way: logging, stop signals, metrics endpoint, run loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from socketserver import ThreadingMixIn
from types import FrameType
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import uvicorn
import uvloop
from prometheus_client import make_wsgi_app
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp

from plaza.bus import Bus
from plaza.scrape import PROBLEM_JSON, MetricsAccess
from plaza.settings import PlazaSettings, SettingsError
from plaza.worker import Worker

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)


class RepeatsSuppressed(logging.Filter):
    """Lets a library's message through once per `interval` seconds, the next one saying how
    many like it were not shown. With the broker away, aiokafka logs each failed connection,
    metadata update, fetch and heartbeat, in every process: 11,000 lines in a 45-second broker
    restart, which buried the line that said what happened. Plaza's own messages all pass."""

    def __init__(
        self,
        prefixes: tuple[str, ...] = ("aiokafka",),
        interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._interval = interval
        self._clock = clock
        # Bounded: one entry per message template of the library (its arguments are not in it).
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self._interval:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            shown_at, hidden = seen
            record.msg = f"{record.msg} [{hidden} more like it in {now - shown_at:.0f} s not shown]"
        return True


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What a log line may not carry as it is: control characters (an escape sequence rewrites the
# operator's terminal), but for the tab and the line breaks, which LogLines handles.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class LogLines(logging.Formatter):
    """A record's message is its line and indented lines under it, whatever its arguments hold:
    a citizen's post, a handle or a platform's error reaches the log, and a line break in one
    (a post's text has them; a bridge chooses a handle) would otherwise start a line of its own
    that reads as another record (a forged "access: ... created key"). Each line after the
    first is indented by two spaces (those of a multi-line message, as the notifier's recorded
    replies, already are), and so is a traceback; other control characters are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        cached, record.exc_text = record.exc_text, None  # another formatter's, not indented
        try:
            return super().format(record)
        finally:
            record.exc_text = cached

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        lines = [_CONTROL.sub(_escaped, line) for line in record.message.splitlines() or [""]]
        record.message = lines[0] + "".join(
            "\n" + (line if line.startswith("  ") else "  " + line) for line in lines[1:]
        )
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        # An exception's message may quote a post too: its traceback is indented as well.
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("  " + _CONTROL.sub(_escaped, line) for line in text.splitlines())


def _escaped(match: re.Match[str]) -> str:
    return f"\\x{ord(match[0]):02x}"


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogLines(LOG_FORMAT))
    # On the handler: a logger's own filters do not see its children's records.
    handler.addFilter(RepeatsSuppressed())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # pgserver logs every pg_ctl command line it runs at INFO
    for noisy in ("aiokafka", "httpx", "alembic.runtime.migration", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Python's cyclic garbage collector by default runs a young collection every 700 allocations
# and now and then a full one over every object: in a busy classifier that was 5% of its CPU,
# with pauses of up to 90 ms. Plaza's services make few reference cycles.
GC_THRESHOLDS = (20_000, 50, 100)


class StartupError(Exception):
    """What a service needs is not there when it starts; the message is the one line it logs
    before it exits, naming the setting to look at."""


KAFKA_START_TIMEOUT = 30.0
"""Seconds a service waits at start for the Kafka broker to answer."""


async def start_bus(bus: Bus, kafka_bootstrap: str) -> None:
    """Starts the bus, or raises StartupError naming PLAZA_KAFKA_BOOTSTRAP (a wrong address made
    a 30-line traceback and an unclosed producer warning)."""
    from aiokafka.errors import KafkaError

    try:
        await asyncio.wait_for(bus.start(), KAFKA_START_TIMEOUT)
    except (KafkaError, OSError, TimeoutError) as exc:
        await bus.close()
        why = str(exc) or f"no answer within {KAFKA_START_TIMEOUT:g} s"
        raise StartupError(
            f"the Kafka broker at {kafka_bootstrap} (PLAZA_KAFKA_BOOTSTRAP) is not reachable "
            f"({why}); start it, or set PLAZA_KAFKA_BOOTSTRAP to where it listens"
        ) from exc


async def check_database(engine: AsyncEngine) -> None:
    """Connects once, or raises StartupError naming PLAZA_DATABASE_URL (its password hidden). A
    router given a wrong address joined its consumer group, took its partitions and retried
    their first records for ever, logging a traceback every 15 s: looking up, holding the
    pipeline up."""
    from sqlalchemy import text

    try:
        async with engine.connect() as connection:
            await connection.execute(text("select 1"))
    except Exception as exc:
        where = engine.url.render_as_string(hide_password=True)
        why = (str(exc).splitlines() or [""])[0].removeprefix(
            "(sqlalchemy.dialects.postgresql.asyncpg.Error) "
        )
        raise StartupError(
            f"PostgreSQL at {where} (PLAZA_DATABASE_URL) cannot be used: "
            f"{type(exc).__name__}: {why}"
        ) from exc


def run(main: Coroutine[Any, Any, None]) -> None:
    """Runs a service's main coroutine on uvloop: the event loop's own work (sockets, callbacks,
    timers) in C rather than in asyncio's Python selector loop, which profiles showed writing to
    sockets as a service's single largest cost. A StartupError ends it with its one line and
    exit status 2."""
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        uvloop.run(_answering_sigusr1(main))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        sys.exit(2)


TASK_DUMP_SIGNAL = signal.SIGUSR1


async def _answering_sigusr1(main: Coroutine[Any, Any, None]) -> None:
    asyncio.get_running_loop().add_signal_handler(TASK_DUMP_SIGNAL, log_tasks)
    await main


def log_tasks() -> None:
    """Logs what every task of the event loop is waiting on, one WARNING record: what a
    process that is alive but does nothing (a worker that stopped consuming) is stuck in.
    `kill -USR1 PID` asks any Plaza service for it, without stopping or slowing it."""
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    lines: list[str] = []
    for task in tasks:
        lines.append(f"  task {task.get_name()}:")
        lines += [f"    {where}" for where in awaiting(task.get_coro())]
        waiter = getattr(task, "_fut_waiter", None)  # CPython's Task: the future it waits for
        if waiter is not None:
            lines.append(f"    waiting for {waiter!r}"[:300])
    log.warning("%d tasks on SIGUSR1\n%s", len(tasks), "\n".join(lines))


def awaiting(coro: object, limit: int = 30) -> list[str]:
    """The chain of awaits a suspended coroutine is in, outermost first: each coroutine's
    file, line and function down to what it waits on (a future, a sleep). asyncio's own
    Task.print_stack shows only the task's outermost frame."""
    chain: list[str] = []
    while coro is not None and len(chain) < limit:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break  # a future's iterator: the task's waiter says what it is
        code = frame.f_code
        chain.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


def started() -> None:
    """Called once a service has loaded what it keeps for its whole life (models, the city's
    polygons, caches): the collector stops scanning those objects (gc.freeze), so that a full
    collection looks only at what was made since."""
    gc.collect()
    gc.freeze()


def on_stop_signals(callback: Callable[[], None]) -> None:
    """Calls `callback` on SIGTERM and SIGINT (Ctrl-C) for a clean shutdown."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress does not hold the process's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape on stderr (wsgiref logs every request)."""


def metrics_app(access: MetricsAccess) -> WSGIApplication:
    """This process's registry as a WSGI app, behind `access` (plaza.scrape): the workers' own
    /metrics, checked as the gateway's and ingest's are (plaza.web.install_metrics)."""
    exposition: WSGIApplication = make_wsgi_app()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        refused = access.refusal(environ.get("HTTP_AUTHORIZATION"))
        if refused is None:
            return exposition(environ, start_response)
        body = refused.body()
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", PROBLEM_JSON),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", refused.challenge),
            ],
        )
        return [body]

    return app


def serve_metrics(settings: PlazaSettings) -> WSGIServer | None:
    """Serves this process's Prometheus metrics on 127.0.0.1:PLAZA_METRICS_PORT (0 = off), in a
    thread of their own (a busy event loop does not make a scrape wait), to the scrapes
    PLAZA_METRICS_TOKEN lets in; a port it cannot have stops start-up naming PLAZA_METRICS_PORT
    (it was a traceback ending in "Address already in use", naming no port and no setting)."""
    port = settings.metrics_port
    if not port:
        return None
    try:
        server = make_server(
            "127.0.0.1",
            port,
            metrics_app(settings.metrics_access()),
            server_class=_MetricsServer,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        raise SettingsError(
            f"PLAZA_METRICS_PORT: cannot serve metrics on port {port} (127.0.0.1): "
            f"{exc.strerror}; set PLAZA_METRICS_PORT to a free port (make up: "
            "PLAZA_CLASSIFIER_METRICS_PORT, PLAZA_ROUTER_METRICS_PORT, "
            "PLAZA_NOTIFIER_METRICS_PORT, PLAZA_RELAY_METRICS_PORT)"
        ) from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://127.0.0.1:%d/metrics", port)
    return server


async def run_worker_service(
    bus: Bus,
    worker: Worker,
    *,
    kafka_bootstrap: str,
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Runs one worker until SIGTERM/SIGINT, then commits, leaves the group and cleans up."""
    on_stop_signals(worker.stop)
    await start_bus(bus, kafka_bootstrap)
    started()
    try:
        await worker.run()
    finally:
        await bus.close()
        if cleanup is not None:
            await cleanup()


class _HttpServer(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # SIGTERM/SIGINT ask for a clean stop: once it is done the process exits 0, rather than
        # re-raising the signal as uvicorn does (which reads as a crash to a supervisor).
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def http_server(app: ASGIApp, port: int) -> uvicorn.Server:
    """A uvicorn server on 127.0.0.1:port that shuts down gracefully on SIGTERM and Ctrl-C."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False
    )
    return _HttpServer(config)
