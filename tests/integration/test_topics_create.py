"""`plaza topics create` on a real broker: new topics get the replication a cluster of their size
allows, and a topic that already has another number of partitions than asked is named."""

from __future__ import annotations

import pytest
from plaza.bus.kafka import KafkaBus, replication

from tests.infra import KafkaBroker
from tests.unit.test_cli_start import plaza


@pytest.mark.parametrize(
    ("brokers", "factor", "min_isr"), [(1, 1, "1"), (2, 2, "1"), (3, 3, "2"), (5, 3, "2")]
)
def test_a_new_topic_is_on_three_brokers_where_there_are_three(
    brokers: int, factor: int, min_isr: str
) -> None:
    """Every topic was made with one replica, so on a real cluster the loss of one broker's disk
    lost accepted posts."""
    assert replication(brokers) == (factor, {"min.insync.replicas": min_isr})


async def test_a_topic_with_other_partitions_than_asked_is_named(
    kafka: KafkaBroker, kafka_namespace: str
) -> None:
    env = {"PLAZA_KAFKA_BOOTSTRAP": kafka.bootstrap, "PLAZA_KAFKA_NAMESPACE": kafka_namespace}
    first = plaza(["topics", "create", "--partitions", "2"], **env)
    assert first.returncode == 0, first.stderr
    bus = KafkaBus(kafka.bootstrap, namespace=kafka_namespace)
    assert (await bus.topic_partitions(["plaza.post-received.v1"])) == {"plaza.post-received.v1": 2}
    # Asked for 4 on topics that have 2: said so, per topic, and exit 1 (it used to say nothing).
    again = plaza(["topics", "create", "--partitions", "4"], **env)
    assert again.returncode == 1
    assert (
        f"plaza topics: {kafka_namespace}plaza.post-received.v1 already has 2 partitions, not 4"
        in again.stderr
    )
    assert (await bus.topic_partitions(["plaza.post-received.v1"]))["plaza.post-received.v1"] == 2
    # Without --partitions (make up), the topics there are fine as they are.
    assert plaza(["topics", "create"], **env).returncode == 0


async def test_dead_letters_are_kept_30_days(kafka: KafkaBroker, kafka_namespace: str) -> None:
    """A dead letter waits for an operator; the broker's default 7 days dropped it unseen."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    env = {"PLAZA_KAFKA_BOOTSTRAP": kafka.bootstrap, "PLAZA_KAFKA_NAMESPACE": kafka_namespace}
    assert plaza(["topics", "create"], **env).returncode == 0
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        retention = {}
        for topic in ("plaza.post-classified.v1", "plaza.post-classified.v1.dlq"):
            [response] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, kafka_namespace + topic)]
            )
            entries = response.resources[0][4]
            retention[topic] = next(e[1] for e in entries if e[0] == "retention.ms")
    finally:
        await admin.close()
    assert retention["plaza.post-classified.v1.dlq"] == str(30 * 24 * 3600 * 1000)
    assert retention["plaza.post-classified.v1"] == str(7 * 24 * 3600 * 1000)
