"""The embedded mode's JournalBus across crashes: what `publish` returned for is in PostgreSQL, a
restart resumes each group from its committed offset, and what every group read is freed (in
memory and in the journal); with MemoryBus, fetches that go round the partitions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from plaza.bus import OutRecord, Record, partition_of
from plaza.bus.journal import JournalBus
from plaza.bus.memory import TRIM_AT, MemoryBus
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.test_bus_contract import drain, offsets_after

pytestmark = [pytest.mark.postgres]

TOPIC = "plaza.journal-test.v1"


async def started(engine: AsyncEngine, **options: timedelta) -> JournalBus:
    bus = JournalBus(engine, default_partitions=3, **options)
    await bus.start()
    return bus


async def journalled(engine: AsyncEngine, topic: str = TOPIC) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text("SELECT count(*) FROM bus_records WHERE topic = :t"), {"t": topic}
                )
            ).scalar_one()
        )


def values(records: list[Record]) -> list[bytes]:
    return sorted(r.value for r in records)


async def test_a_publish_is_in_the_journal_when_it_returns(engine: AsyncEngine) -> None:
    bus = await started(engine)
    await bus.publish([OutRecord(TOPIC, f"k{i}", b"v%d" % i) for i in range(50)])
    assert await journalled(engine) == 50


async def test_a_restart_after_a_crash_delivers_again_what_was_not_committed(
    engine: AsyncEngine,
) -> None:
    crashed = await started(engine)
    await crashed.create_topics([TOPIC], 3)
    await crashed.publish([OutRecord(TOPIC, f"k{i % 7}", b"%d" % i) for i in range(60)])
    consumer = await crashed.subscribe("g", [TOPIC])
    records = await drain(consumer, 60)
    handled = [r for r in records if int(r.value) < 25]
    await consumer.commit(offsets_after(handled))
    # kill -9: the object is dropped, nothing is closed or committed more

    restarted = await started(engine)
    again = await drain(await restarted.subscribe("g", [TOPIC]), 35)
    assert values(again) == values([r for r in records if int(r.value) >= 25])
    assert {r.partition for r in again} <= {0, 1, 2}  # the topic kept its 3 partitions


async def test_offsets_go_on_after_every_record_was_read_and_deleted(
    engine: AsyncEngine,
) -> None:
    first = await started(engine)
    await first.publish([OutRecord(TOPIC, "k", b"%d" % i) for i in range(10)])
    consumer = await first.subscribe("g", [TOPIC])
    records = await drain(consumer, 10)
    await consumer.commit(offsets_after(records))
    assert await journalled(engine) == 0

    second = await started(engine)
    await second.publish([OutRecord(TOPIC, "k", b"10")])
    [record] = await drain(await second.subscribe("g", [TOPIC]), 1)
    assert (record.value, record.offset) == (b"10", 10)


@pytest.mark.parametrize("kind", ["memory", "journal"])
async def test_records_every_group_has_read_are_freed(engine: AsyncEngine, kind: str) -> None:
    """Defect 9: the in-memory bus held every record for ever (3 KB a post)."""
    bus = await started(engine) if kind == "journal" else MemoryBus(default_partitions=3)
    await bus.create_topics([TOPIC], 3)
    a = await bus.subscribe("a", [TOPIC])
    b = await bus.subscribe("b", [TOPIC])
    await bus.publish([OutRecord(TOPIC, f"k{i}", b"x" * 100) for i in range(2 * TRIM_AT)])
    read_by_a = await drain(a, 2 * TRIM_AT)
    await a.commit(offsets_after(read_by_a))
    assert bus.held() == 2 * TRIM_AT  # b has not read them
    await b.commit(offsets_after(await drain(b, 2 * TRIM_AT)))
    assert bus.held() == 0
    if kind == "journal":
        assert await journalled(engine) == 0
    await bus.publish([OutRecord(TOPIC, "k", b"next")])
    assert [r.value for r in await drain(a, 1)] == [b"next"]


async def test_dead_letters_outlive_a_restart_until_their_retention(engine: AsyncEngine) -> None:
    dead = f"{TOPIC}.dlq"
    bus = await started(engine)
    await bus.publish([OutRecord(dead, "k", b"poison", (("plaza-dlq-reason", b"\x00\xffbad"),))])
    assert bus.held() == 0  # no group reads it: it is only in the journal
    await bus.publish([OutRecord(TOPIC, "k", b"to route")])
    router = await bus.subscribe("router", [TOPIC])
    await router.commit(dict.fromkeys(router.assignment(), 0))  # read nothing yet

    restarted = await started(engine)
    [record] = await drain(await restarted.subscribe("inspector", [dead]), 1)
    assert (record.value, record.header("plaza-dlq-reason")) == (b"poison", b"\x00\xffbad")

    await started(engine, retention=timedelta(0))
    assert await journalled(engine, dead) == 0  # past its retention, and no group committed on it
    assert await journalled(engine, TOPIC) == 1  # the router has not read it: never expired


async def test_a_write_whose_answer_was_lost_is_taken_in(engine: AsyncEngine) -> None:
    """A write's connection may die after PostgreSQL committed it: the publisher sees an error
    (and publishes again, at least once), and the next write goes on after those records."""
    bus = await started(engine)
    consumer = await bus.subscribe("g", [TOPIC])
    await bus.publish([OutRecord(TOPIC, "k", b"first")])
    [first] = await drain(consumer, 1)
    async with engine.begin() as conn:  # what the lost write committed
        await conn.execute(
            text(
                "INSERT INTO bus_records (topic, partition, record_offset, value, timestamp_ms)"
                " VALUES (:t, :p, :o, 'lost', 0)"
            ),
            {"t": TOPIC, "p": first.partition, "o": first.offset + 1},
        )
    bus._unsure = True  # as _write leaves it after the error
    await bus.publish([OutRecord(TOPIC, "k", b"after")])
    assert [r.value for r in await drain(consumer, 2)] == [b"lost", b"after"]


@pytest.mark.parametrize("kind", ["memory", "journal"])
async def test_a_fetch_goes_round_the_partitions(engine: AsyncEngine, kind: str) -> None:
    """A busy partition 0 does not fill fetch after fetch while the others wait."""
    bus = await started(engine) if kind == "journal" else MemoryBus(default_partitions=3)
    await bus.create_topics([TOPIC], 3)
    keys: dict[int, str] = {}
    for i in range(100):
        keys.setdefault(partition_of(f"k{i}".encode(), 3), f"k{i}")
    await bus.publish([OutRecord(TOPIC, keys[0], b"0:%d" % i) for i in range(500)])
    await bus.publish([OutRecord(TOPIC, keys[p], b"%d:0" % p) for p in (1, 2)])
    consumer = await bus.subscribe("g", [TOPIC])
    fetched = [await consumer.fetch(50, 1) for _ in range(3)]
    assert {r.partition for batch in fetched for r in batch} == {0, 1, 2}
    in_order = [int(r.value.split(b":")[1]) for b in fetched for r in b if r.partition == 0]
    assert in_order == list(range(len(in_order)))
    assert len(await consumer.fetch(1000, 1)) == 502 - len(in_order) - 2  # the rest, at once
