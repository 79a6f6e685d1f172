"""The worker runtime on both adapters: decode, handle, publish, commit, retry and dead-letter."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from plaza.bus import Bus, OutRecord
from plaza.contracts import (
    TOPICS,
    Envelope,
    Outgoing,
    Post,
    PostReceived,
    derive_event_id,
    envelope,
)
from plaza.worker import Rejected, RetryPolicy, Worker
from prometheus_client import REGISTRY

from tests.integration.conftest import BusFactory
from tests.integration.test_bus_contract import drain

SOURCE = TOPICS.POST_RECEIVED
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


def post_event(n: int, text: str = "hi") -> Outgoing:
    post = Post(platform="test", post_id=str(n), author_handle="@a", text=text)
    return envelope(
        PostReceived(post=post),
        key=f"test:{n}",
        event_id=derive_event_id("t", str(n)),
        correlation_id="c",
    )


async def publish(bus: Bus, events: Sequence[Outgoing]) -> None:
    await bus.create_topics(
        [SOURCE.topic, SOURCE.dead_letter_topic, TOPICS.POST_CLASSIFIED.topic], 3
    )
    await bus.publish([OutRecord(e.topic, e.key, e.encode()) for e in events])


class Recorder:
    """A handler that echoes each post as a post-classified and can fail on purpose."""

    def __init__(
        self, fail: dict[str, BaseException | type[BaseException]] | None = None, times: int = 10**6
    ) -> None:
        self.seen: list[str] = []
        self.fail = fail or {}
        self.times = times

    async def __call__(self, event: Envelope) -> Sequence[Outgoing]:
        text = event.post_received.post.text
        self.seen.append(event.post_received.post.post_id)
        if text in self.fail and self.times > 0:
            self.times -= 1
            raise self.fail[text]
        from plaza.contracts import PostClassified

        body = PostClassified(post=event.post_received.post, service_code="other")
        return [
            envelope(
                body, key="k", event_id=derive_event_id("out", event.event_id), correlation_id="c"
            )
        ]


async def run_until(worker: Worker, condition: object, timeout: float = 30) -> None:
    task = asyncio.create_task(worker.run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not condition():  # type: ignore[operator]
            assert loop.time() < deadline, "worker did not get there in time"
            assert not task.done(), task.exception()
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await task


async def test_poison_records_go_to_the_dead_letter_topic_and_the_rest_flow(bus: Bus) -> None:
    await publish(bus, [post_event(1)])
    await bus.publish([OutRecord(SOURCE.topic, "test:2", b"\x00not protobuf")])
    await publish(bus, [post_event(3, "reject me"), post_event(4)])
    handler = Recorder(fail={"reject me": Rejected("no text I can use")})
    worker = Worker(bus, group="w-dlq", topics=[SOURCE], handler=handler, retry=FAST)
    await run_until(worker, lambda: {"1", "4"} <= set(handler.seen))

    dlq = await bus.subscribe("w-dlq-reader", [SOURCE.dead_letter_topic])
    dead = await drain(dlq, 2)
    reasons = sorted((r.header("plaza-dlq-reason-class") or b"").decode() for r in dead)
    assert reasons == ["contract", "rejected"]
    assert any(b"no text I can use" in (r.header("plaza-dlq-reason") or b"") for r in dead)
    assert all(
        (r.header("plaza-dlq-source") or b"").startswith(SOURCE.topic.encode()) for r in dead
    )
    out = await bus.subscribe("w-dlq-out", [TOPICS.POST_CLASSIFIED.topic])
    assert len(await drain(out, 2)) == 2
    await dlq.close()
    await out.close()


async def test_failing_handler_is_retried_then_dead_lettered(bus: Bus) -> None:
    await publish(bus, [post_event(1, "bug"), post_event(2)])
    handler = Recorder(fail={"bug": ValueError("a bug")})
    worker = Worker(bus, group="w-retry", topics=[SOURCE], handler=handler, retry=FAST)
    await run_until(worker, lambda: "2" in handler.seen and handler.seen.count("1") >= 3)
    assert handler.seen.count("1") == FAST.max_attempts
    dlq = await bus.subscribe("w-retry-reader", [SOURCE.dead_letter_topic])
    [dead] = await drain(dlq, 1)
    assert (dead.header("plaza-dlq-reason") or b"").startswith(b"ValueError: a bug")
    await dlq.close()


async def test_transient_errors_are_retried_until_they_pass(bus: Bus) -> None:
    await publish(bus, [post_event(1, "db down")])
    handler = Recorder(fail={"db down": ConnectionError("database unavailable")}, times=5)
    worker = Worker(bus, group="w-transient", topics=[SOURCE], handler=handler, retry=FAST)
    out = await bus.subscribe("w-transient-out", [TOPICS.POST_CLASSIFIED.topic])
    await run_until(worker, lambda: handler.seen.count("1") == 6)
    assert len(await drain(out, 1)) == 1  # five failures outlasted, never dead-lettered
    await out.close()


async def _error_of_a_database_starting_up() -> BaseException:
    """What a connection attempt raises while PostgreSQL restarts or recovers after a crash, as
    SQLAlchemy hands it on: from a server answering the startup message as PostgreSQL then does
    (FATAL 57P03 "the database system is starting up")."""
    from plaza.db import create_engine

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            length = int.from_bytes(await reader.readexactly(4), "big")
            body = await reader.readexactly(length - 4)
            if length == 8 and body[:2] == b"\x04\xd2":  # SSLRequest or GSSENCRequest: no
                writer.write(b"N")
                continue
            break
        fields = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
        writer.write(b"E" + (len(fields) + 4).to_bytes(4, "big") + fields)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = create_engine(f"postgresql+asyncpg://plaza@127.0.0.1:{port}/plaza")
    try:
        async with engine.connect():
            pass
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
        server.close()
    raise AssertionError("the connection was not refused")


async def test_a_database_starting_up_is_waited_for_not_dead_lettered(bus: Bus) -> None:
    """A PostgreSQL restarting refuses connections with 57P03 for as long as its recovery
    takes; the posts handled meanwhile wait for it (three quick attempts dead-lettered them)."""
    starting_up = await _error_of_a_database_starting_up()
    assert "starting up" in str(starting_up)
    await publish(bus, [post_event(1, "db restarting")])
    handler = Recorder(fail={"db restarting": starting_up}, times=5)
    worker = Worker(bus, group="w-db-restart", topics=[SOURCE], handler=handler, retry=FAST)
    out = await bus.subscribe("w-db-restart-out", [TOPICS.POST_CLASSIFIED.topic])
    await run_until(worker, lambda: handler.seen.count("1") == 6)
    assert len(await drain(out, 1)) == 1
    await out.close()
    dlq = await bus.subscribe("w-db-restart-dlq", [SOURCE.dead_letter_topic])
    assert await dlq.fetch(10, timeout=1.0) == []
    await dlq.close()


async def test_offsets_are_committed_only_after_handling(bus_factory: BusFactory) -> None:
    bus = bus_factory()
    await bus.start()
    await publish(bus, [post_event(n) for n in range(10)])
    first = Recorder()
    await run_until(
        Worker(bus, group="w-commit", topics=[SOURCE], handler=first), lambda: len(first.seen) == 10
    )
    await publish(bus, [post_event(n) for n in range(10, 15)])
    second = Recorder()
    # A new member of the same group resumes after what was committed: only the new five.
    await run_until(
        Worker(bus, group="w-commit", topics=[SOURCE], handler=second),
        lambda: len(second.seen) >= 5,
    )
    await asyncio.sleep(1.0)
    assert sorted(second.seen, key=int) == [str(n) for n in range(10, 15)]
    await bus.close()


async def test_a_worker_committing_at_intervals_commits_what_it_handled_on_stop(
    bus_factory: BusFactory,
) -> None:
    """With a commit interval longer than the run, the offsets of the handled records are
    committed when the worker goes idle or stops, never lost nor handled again."""
    bus = bus_factory()
    await bus.start()
    await publish(bus, [post_event(n) for n in range(10)])
    first = Recorder()
    await run_until(
        Worker(bus, group="w-interval", topics=[SOURCE], handler=first, commit_interval=3600),
        lambda: len(first.seen) == 10,
    )
    await publish(bus, [post_event(n) for n in range(10, 15)])
    second = Recorder()
    await run_until(
        Worker(bus, group="w-interval", topics=[SOURCE], handler=second, commit_interval=3600),
        lambda: len(second.seen) >= 5,
    )
    await asyncio.sleep(1.0)
    assert sorted(second.seen, key=int) == [str(n) for n in range(10, 15)]
    await bus.close()


@pytest.mark.parametrize("exc", [ValueError("x"), KeyError("y")])
async def test_handler_errors_are_never_swallowed_silently(bus: Bus, exc: Exception) -> None:
    await publish(bus, [post_event(1, "boom")])
    handler = Recorder(fail={"boom": exc})
    worker = Worker(
        bus, group=f"w-loud-{type(exc).__name__}", topics=[SOURCE], handler=handler, retry=FAST
    )
    dlq = await bus.subscribe(f"w-loud-r-{type(exc).__name__}", [SOURCE.dead_letter_topic])
    await run_until(worker, lambda: handler.seen.count("1") == FAST.max_attempts)
    assert len(await drain(dlq, 1)) == 1
    await dlq.close()


class BatchRecorder:
    """A batch handler over Recorder: all of a batch's events or none (it raises when any of
    them would fail, as a rolled-back transaction does)."""

    def __init__(self, single: Recorder) -> None:
        self.single = single
        self.batches: list[list[str]] = []

    async def __call__(self, events: Sequence[Envelope]) -> Sequence[Outgoing]:
        ids = [e.post_received.post.post_id for e in events]
        self.batches.append(ids)
        if any(e.post_received.post.text in self.single.fail for e in events):
            raise RuntimeError("one of them failed: the transaction rolled back")
        out: list[Outgoing] = []
        for event in events:
            out.extend(await Recorder()(event))
        return out


def counted() -> tuple[float, float]:
    """plaza_bus_messages_consumed_total of group w-batch and published_total of its output."""
    consumed = REGISTRY.get_sample_value(
        "plaza_bus_messages_consumed_total",
        {"group": "w-batch", "topic": SOURCE.topic, "outcome": "processed"},
    )
    published = REGISTRY.get_sample_value(
        "plaza_bus_messages_published_total", {"topic": TOPICS.POST_CLASSIFIED.topic}
    )
    return consumed or 0.0, published or 0.0


async def test_a_batch_handler_handles_many_records_in_one_call(bus: Bus) -> None:
    await publish(bus, [post_event(n) for n in range(40)])
    single = Recorder()
    batch = BatchRecorder(single)
    worker = Worker(
        bus, group="w-batch", topics=[SOURCE], handler=single, batch_handler=batch, batch_size=16
    )
    consumed, published = counted()
    await run_until(worker, lambda: sum(map(len, batch.batches)) == 40)
    assert single.seen == []  # every record went through the batch handler
    assert max(map(len, batch.batches)) > 1 and max(map(len, batch.batches)) <= 16
    out = await bus.subscribe("w-batch-out", [TOPICS.POST_CLASSIFIED.topic])
    assert len(await drain(out, 40)) == 40
    await out.close()
    assert counted() == (consumed + 40, published + 40)  # every record counted once


async def test_a_failing_batch_falls_back_to_one_by_one_and_only_the_bad_record_dies(
    bus: Bus,
) -> None:
    await publish(bus, [post_event(1), post_event(2, "bug"), post_event(3)])
    await bus.publish([OutRecord(SOURCE.topic, "test:4", b"\x00not protobuf")])
    await publish(bus, [post_event(5)])
    single = Recorder(fail={"bug": ValueError("a bug")})
    batch = BatchRecorder(single)
    worker = Worker(
        bus,
        group="w-batch-fallback",
        topics=[SOURCE],
        handler=single,
        batch_handler=batch,
        retry=FAST,
    )
    await run_until(worker, lambda: {"1", "3", "5"} <= set(single.seen) | _flat(batch))
    dlq = await bus.subscribe("w-batch-fallback-reader", [SOURCE.dead_letter_topic])
    dead = await drain(dlq, 2)
    reasons = sorted((r.header("plaza-dlq-reason-class") or b"").decode() for r in dead)
    assert reasons == ["contract", "error"]
    assert single.seen.count("2") == FAST.max_attempts  # the bad one got its retries
    out = await bus.subscribe("w-batch-fallback-out", [TOPICS.POST_CLASSIFIED.topic])
    posted = await drain(out, 3)
    assert len(posted) == 3  # 1, 3 and 5, each once
    await dlq.close()
    await out.close()


def _flat(batch: BatchRecorder) -> set[str]:
    """Posts a successful batch handled (a failed batch's posts are handled one by one)."""
    return {i for ids in batch.batches for i in ids if "2" not in ids}
