"""One suite for every bus adapter: what Plaza relies on from Kafka, the in-memory bus and the
embedded mode's journalled bus must do too."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.partitioner import DefaultPartitioner
from plaza.bus import Bus, Consumer, OutRecord, Record, TopicPartition

from tests.integration.conftest import BusFactory

pytestmark = [
    pytest.mark.parametrize("bus_factory", ["memory", "journal", "kafka"], indirect=True),
    pytest.mark.usefixtures("postgres"),  # the journal's; started outside any test's event loop
]

TOPIC = "plaza.contract-test.v1"


async def drain(consumer: Consumer, expected: int, timeout: float = 20.0) -> list[Record]:
    """Fetches until `expected` records arrived (or fails after `timeout`)."""
    got: list[Record] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < expected:
        assert loop.time() < deadline, f"only {len(got)} of {expected} records arrived"
        got += await consumer.fetch(1000, 0.5)
    return got


def offsets_after(records: list[Record]) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    for r in records:
        out[r.topic_partition] = max(out.get(r.topic_partition, 0), r.offset + 1)
    return out


async def publish_keyed(bus: Bus, keys: int, per_key: int) -> None:
    await bus.create_topics([TOPIC], 3)
    await bus.publish(
        [
            OutRecord(TOPIC, f"k{k}", f"k{k}:{i}".encode())
            for i in range(per_key)
            for k in range(keys)
        ]
    )


async def test_records_of_one_key_arrive_in_order_on_one_partition(bus: Bus) -> None:
    await publish_keyed(bus, keys=5, per_key=20)
    consumer = await bus.subscribe("g-order", [TOPIC])
    records = await drain(consumer, 100)
    by_key: dict[str, list[int]] = {}
    partitions: dict[str, set[int]] = {}
    for r in records:
        assert r.key is not None
        by_key.setdefault(r.key, []).append(int(r.value.decode().split(":")[1]))
        partitions.setdefault(r.key, set()).add(r.partition)
    assert all(seq == list(range(20)) for seq in by_key.values()), by_key
    assert all(len(p) == 1 for p in partitions.values())
    await consumer.close()


async def test_a_keys_partition_is_the_one_kafkas_clients_choose(bus: Bus) -> None:
    await publish_keyed(bus, keys=30, per_key=1)
    consumer = await bus.subscribe("g-partitioner", [TOPIC])
    records = await drain(consumer, 30)
    choose = DefaultPartitioner()
    assert all(r.key is not None for r in records)
    assert {r.key: r.partition for r in records} == {
        r.key: choose(r.key.encode(), [0, 1, 2], [0, 1, 2]) for r in records if r.key
    }
    await consumer.close()


async def test_a_publish_larger_than_a_producer_batch_arrives_whole_and_in_order(
    bus: Bus,
) -> None:
    """Kafka's producer batches hold 256 KB: 1,200 records of 1 KB on three partitions take
    several batches each, sent one after another."""
    await bus.create_topics([TOPIC], 3)
    padding = b"x" * 1000
    await bus.publish(
        [OutRecord(TOPIC, f"k{i % 4}", f"{i}:".encode() + padding) for i in range(1200)]
    )
    consumer = await bus.subscribe("g-large", [TOPIC])
    records = await drain(consumer, 1200)
    assert len(records) == 1200
    by_key: dict[str | None, list[int]] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(int(r.value.split(b":")[0]))
    assert by_key == {f"k{k}": list(range(k, 1200, 4)) for k in range(4)}
    await consumer.close()


async def test_every_group_reads_every_record(bus: Bus) -> None:
    await publish_keyed(bus, keys=4, per_key=5)
    a = await bus.subscribe("g-a", [TOPIC])
    b = await bus.subscribe("g-b", [TOPIC])
    assert sorted(r.value for r in await drain(a, 20)) == sorted(
        r.value for r in await drain(b, 20)
    )
    await a.close()
    await b.close()


async def test_uncommitted_records_are_delivered_again(bus_factory: BusFactory) -> None:
    bus = bus_factory()
    await bus.start()
    await publish_keyed(bus, keys=3, per_key=10)
    first = await bus.subscribe("g-redeliver", [TOPIC])
    records = await drain(first, 30)
    handled = [r for r in records if int(r.value.decode().split(":")[1]) < 4]
    await first.commit(offsets_after(handled))  # the rest were "in flight" when it died
    await first.close()

    second = await bus.subscribe("g-redeliver", [TOPIC])
    again = await drain(second, 18)
    assert sorted(r.value for r in again) == sorted(
        r.value for r in records if int(r.value.decode().split(":")[1]) >= 4
    )
    await second.close()
    await bus.close()


async def test_members_of_a_group_share_partitions_and_revoke_before_moving(
    bus_factory: BusFactory,
) -> None:
    bus1, bus2 = bus_factory(), bus_factory()
    await bus1.start()
    await bus2.start()
    await bus1.create_topics([TOPIC], 3)
    revoked: list[frozenset[TopicPartition]] = []

    async def on_revoked(partitions: frozenset[TopicPartition]) -> None:
        revoked.append(partitions)

    first = await bus1.subscribe("g-share", [TOPIC], on_revoked=on_revoked)
    assert first.assignment() == {(TOPIC, p) for p in range(3)}

    # The second member joins while the first keeps polling (Kafka rebalances inside fetch).
    joining = asyncio.create_task(bus2.subscribe("g-share", [TOPIC]))
    while not joining.done():
        await first.fetch(10, 0.2)
    second = await joining
    for _ in range(10):
        if first.assignment() and second.assignment():
            break
        await first.fetch(10, 0.2)
    assert revoked, "the first member was not told before partitions moved"
    assert first.assignment() | second.assignment() == {(TOPIC, p) for p in range(3)}
    assert not first.assignment() & second.assignment()
    await second.close()
    await first.close()
    await bus1.close()
    await bus2.close()
