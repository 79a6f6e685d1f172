"""A record's partition is the one Kafka's own clients choose for its key."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from plaza.bus import murmur2, partition_of


def test_murmur2_is_kafkas_for_keys_of_every_length() -> None:
    rng = random.Random(8)
    for _ in range(20_000):
        data = rng.randbytes(rng.randrange(0, 300))
        assert murmur2(data) == aiokafka_murmur2(data), data


def test_a_keys_partition_is_the_one_the_kafka_client_picks() -> None:
    rng = random.Random(9)
    choose = DefaultPartitioner()
    keys = [f"bluesky:at://did:plc:{rng.getrandbits(64):x}/{n}" for n in range(2_000)]
    keys += [str(n) for n in range(2_000)]  # request ids
    keys += ["", "é", "カフカ"]
    for count in (1, 3, 6, 7):
        everyone = list(range(count))
        for key in keys:
            data = key.encode()
            assert partition_of(data, count) == choose(data, everyone, everyone), (key, count)
