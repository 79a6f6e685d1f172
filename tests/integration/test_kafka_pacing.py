"""The Kafka consumer's fetch pacing: fuller fetches while records flow, few polls when idle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from plaza.bus import Consumer, OutRecord, Record
from plaza.bus.kafka import FetchPacing, KafkaBus, KafkaConsumer

from tests.infra import KafkaBroker

TOPIC = "plaza.pacing-test.v1"
# Once busy, a fetch waits 3 s at the broker for 16 MB that never come.
HELD = FetchPacing(
    busy_wait_ms=3000, busy_min_bytes=16 * 1024 * 1024, idle_wait_ms=400, idle_after=60
)


@asynccontextmanager
async def bus_with_topic(
    kafka: KafkaBroker, namespace: str, pacing: FetchPacing
) -> AsyncIterator[KafkaBus]:
    bus = KafkaBus(kafka.bootstrap, namespace=namespace, fetch_pacing=pacing)
    await bus.start()
    try:
        await bus.create_topics([TOPIC], 1)
        yield bus
    finally:
        await bus.close()


async def first_records(consumer: Consumer, timeout: float) -> list[Record]:
    """The next fetch that brings any records."""
    got: list[Record] = []
    while not got:
        got = await consumer.fetch(100, timeout)
    return got


def fetch_settings(consumer: KafkaConsumer) -> tuple[int, int]:
    """What aiokafka puts in the consumer's next fetch request: (max wait ms, min bytes)."""
    fetcher = consumer._consumer._fetcher
    return fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes


async def test_fetches_wait_for_more_while_busy_and_end_on_a_record_when_idle(
    kafka: KafkaBroker, kafka_namespace: str
) -> None:
    pacing = FetchPacing(
        busy_wait_ms=40, busy_min_bytes=32 * 1024, idle_wait_ms=400, idle_after=0.5
    )
    async with bus_with_topic(kafka, kafka_namespace, pacing) as bus:
        consumer = await bus.subscribe("g-pacing", [TOPIC])
        assert isinstance(consumer, KafkaConsumer)
        assert not consumer.busy
        assert fetch_settings(consumer) == (400, 1)

        await bus.publish([OutRecord(TOPIC, "k", b"first")])
        got = await first_records(consumer, 0.5)
        assert consumer.busy
        assert fetch_settings(consumer) == (40, 32 * 1024)

        # Records keep it busy; then, idle_after without any, it goes back to idle pacing.
        await bus.publish([OutRecord(TOPIC, "k", b"second")])
        while len(got) < 2:
            got += await consumer.fetch(100, 0.2)
        assert consumer.busy
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while consumer.busy:
            assert loop.time() < deadline, "still busy long after the last record"
            assert await consumer.fetch(100, 0.2) == []
        assert fetch_settings(consumer) == (400, 1)
        await consumer.close()


async def test_the_next_fetch_waits_at_the_broker_while_a_batch_is_handled(
    kafka: KafkaBroker, kafka_namespace: str
) -> None:
    """A handler that computes without awaiting (the classifier does) must not hold back the next
    fetch: the broker's wait runs while the batch is handled, not after it."""
    async with bus_with_topic(kafka, kafka_namespace, HELD) as bus:
        consumer = await bus.subscribe("g-prefetch", [TOPIC])
        await bus.publish([OutRecord(TOPIC, "k", b"first")])
        await first_records(consumer, 0.5)
        assert consumer.busy  # from now on a fetch waits 3 s at the broker (16 MB never come)
        loop = asyncio.get_running_loop()
        handled = loop.time()
        time.sleep(1.5)  # noqa: ASYNC251 (handling the batch, the event loop blocked: the point)
        await bus.publish([OutRecord(TOPIC, "k", b"second")])
        got = await first_records(consumer, 10)
        assert [r.value for r in got] == [b"second"]
        # Sent before the handling, the fetch comes back about 3 s after it; sent after the
        # handling, it would come back 1.5 + 3 s after.
        assert loop.time() - handled < 3.75
        await consumer.close()


async def test_a_topic_written_in_batches_is_fetched_as_its_batches_arrive(
    kafka: KafkaBroker, kafka_namespace: str
) -> None:
    """The router's and the notifier's topics are written a batch at a time (the classifier's
    batches, the relay's rounds): their consumers take each batch when it comes, busy or not,
    where a consumer of a topic written a post at a time waits at the broker for more."""
    async with bus_with_topic(kafka, kafka_namespace, HELD) as bus:
        batched = await bus.subscribe("g-batched", [TOPIC], written_in_batches=True)
        trickled = await bus.subscribe("g-trickled", [TOPIC])
        await bus.publish([OutRecord(TOPIC, "k", b"first")])
        for consumer in (batched, trickled):
            await first_records(consumer, 0.5)
            assert consumer.busy
        # Busy now; the next fetch of each is already at the broker.
        assert fetch_settings(batched) == (400, 1)
        assert fetch_settings(trickled) == (3000, 16 * 1024 * 1024)
        loop = asyncio.get_running_loop()
        await bus.publish([OutRecord(TOPIC, "k", b"second")])
        published = loop.time()
        waited = {}
        for name, consumer in (("batched", batched), ("trickled", trickled)):
            got = await first_records(consumer, 10)
            assert [r.value for r in got] == [b"second"]
            waited[name] = loop.time() - published
        # The batched consumer's fetch ended on the record; the other's held it to its wait.
        assert waited["batched"] < 1.0, waited
        assert waited["trickled"] > 2.0, waited
        await batched.close()
        await trickled.close()
