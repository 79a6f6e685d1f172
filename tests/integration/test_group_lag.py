"""The consumer groups' lag read from the broker (plaza.bus.kafka.GroupLag) by the gateway: a
group whose members are all down still shows the records waiting for it. The members' own
gauge went with them: with the classifier stopped and 300 posts waiting, Prometheus had no lag
for it at all, and PlazaConsumerLagHigh could not fire."""

from __future__ import annotations

from collections.abc import Mapping

from plaza.bus import OutRecord
from plaza.bus.kafka import GroupLag, KafkaBus
from plaza.contracts import TOPICS
from plaza_api.backlog import BacklogCollector
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import KafkaBroker
from tests.integration.test_metrics import shown

TOPIC = TOPICS.POST_RECEIVED.topic


async def test_a_group_with_no_member_up_shows_what_it_has_not_committed(
    kafka: KafkaBroker, kafka_namespace: str
) -> None:
    bus = KafkaBus(kafka.bootstrap, namespace=kafka_namespace)
    await bus.start()
    lag = GroupLag(kafka.bootstrap, namespace=kafka_namespace)
    try:
        await bus.create_topics([TOPIC], 3)
        await bus.publish([OutRecord(TOPIC, f"k{n}", b"x") for n in range(7)])
        consumer = await bus.subscribe("plaza-stopped", [TOPIC])
        read = []
        while len(read) < 7:
            read += await consumer.fetch(7, timeout=1.0)
        handled = read[:3]  # then the process stops, having committed three
        await consumer.commit({r.topic_partition: r.offset + 1 for r in handled})
        await consumer.close()

        reading = await lag.read()

        # Per partition it committed, the records beyond; a partition with nothing committed
        # has no lag to read (the group's next member starts it from the beginning).
        last = {r.partition: r.offset for r in sorted(handled, key=lambda r: r.offset)}
        assert reading == {
            ("plaza-stopped", TOPIC, p): sum(
                1 for r in read if r.partition == p and r.offset > offset
            )
            for p, offset in last.items()
        }
    finally:
        await lag.close()
        await bus.close()


class Reading:
    """A broker's lag as the gateway reads it, or its failure."""

    def __init__(self, lag: Mapping[tuple[str, str, int], int] | None) -> None:
        self.lag = lag

    async def read(self) -> Mapping[tuple[str, str, int], int]:
        if self.lag is None:
            raise ConnectionError("the broker is away")
        return self.lag


async def test_the_gateway_shows_the_broker_s_lag_and_leaves_it_out_when_it_cannot_read_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    up = BacklogCollector(sessions, max_age=0, lag=Reading({("plaza-classifier", TOPIC, 2): 300}))
    text = (await up.exposition()).decode()
    labels = {"group": "plaza-classifier", "topic": TOPIC, "partition": "2"}
    assert shown(text, "plaza_bus_group_lag_records", **labels) == [300.0]
    assert shown(text, "plaza_requests_open_age_seconds_count") is not None

    away = BacklogCollector(sessions, max_age=0, lag=Reading(None))
    text = (await away.exposition()).decode()
    assert shown(text, "plaza_bus_group_lag_records") == []
    assert shown(text, "plaza_database_up") == [1.0]  # the backlog is served all the same
