"""The Kafka consumer's fetch pacing: fuller fetches while records flow, few polls when idle."""

from __future__ import annotations

import asyncio

from plaza.bus import OutRecord, Record
from plaza.bus.kafka import FetchPacing, KafkaBus, KafkaConsumer

from tests.infra import KafkaBroker

TOPIC = "plaza.pacing-test.v1"


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
    bus = KafkaBus(kafka.bootstrap, namespace=kafka_namespace, fetch_pacing=pacing)
    await bus.start()
    try:
        await bus.create_topics([TOPIC], 1)
        consumer = await bus.subscribe("g-pacing", [TOPIC])
        assert isinstance(consumer, KafkaConsumer)
        assert not consumer.busy
        assert fetch_settings(consumer) == (400, 1)

        await bus.publish([OutRecord(TOPIC, "k", b"first")])
        got: list[Record] = []
        while not got:
            got = await consumer.fetch(100, 0.5)
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
    finally:
        await bus.close()
