"""The Kafka bus's publish: a record bigger than a producer batch goes in a batch of its own; one
too big for the broker fails the whole call, up front."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from plaza.bus import OutRecord
from plaza.bus.kafka import KafkaBus

from tests.infra import KafkaBroker
from tests.integration.test_bus_contract import drain

TOPIC = "plaza.publish-test.v1"


@pytest.fixture
async def kafka_bus(kafka: KafkaBroker, kafka_namespace: str) -> AsyncIterator[KafkaBus]:
    """A started Kafka bus, with TOPIC (one partition) in the test's own namespace."""
    bus = KafkaBus(kafka.bootstrap, namespace=kafka_namespace)
    await bus.start()
    await bus.create_topics([TOPIC], 1)
    yield bus
    await bus.close()


async def test_a_record_too_big_for_a_request_fails_the_call_and_sends_nothing(
    kafka_bus: KafkaBus,
) -> None:
    small = [OutRecord(TOPIC, "k", f"{i}".encode()) for i in range(3)]
    with pytest.raises(MessageSizeTooLargeError, match=r"plaza.publish-test.v1 \(key 'big'\)"):
        await kafka_bus.publish([*small, OutRecord(TOPIC, "big", b"x" * 2_000_000), *small])
    await kafka_bus.publish([OutRecord(TOPIC, "k", b"after")])
    consumer = await kafka_bus.subscribe("g-publish", [TOPIC])
    records = await drain(consumer, 1)
    assert [r.value for r in records] == [b"after"]  # none of the failed call's records
    assert await consumer.fetch(10, 1.0) == []
    await consumer.close()


async def test_a_record_bigger_than_a_producer_batch_goes_in_one_of_its_own(
    kafka_bus: KafkaBus,
) -> None:
    big = b"x" * 300_000  # a producer batch holds 256 KB
    values = [b"before", big, b"between", big, b"after"]
    await kafka_bus.publish([OutRecord(TOPIC, "k", v) for v in values])
    consumer = await kafka_bus.subscribe("g-publish-big", [TOPIC])
    records = await drain(consumer, 5)
    assert [r.value for r in records] == values
    await consumer.close()


async def test_a_started_bus_with_its_broker_there_is_reachable(kafka_bus: KafkaBus) -> None:
    assert await kafka_bus.unreachable() is None
    await kafka_bus.close()
    assert await kafka_bus.unreachable() == "the Kafka producer is not started"
