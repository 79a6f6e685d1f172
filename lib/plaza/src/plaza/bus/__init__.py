"""The message bus: one interface, with a Kafka adapter and an in-memory adapter of the same semantics
(and that in-memory adapter journalled in PostgreSQL, plaza.bus.journal: embedded mode's).

Semantics every adapter keeps (and tests/integration/test_bus_contract.py checks on each):
- records with the same key go to the same partition and are read in the order written;
- each consumer group reads every record; members of a group share the partitions;
- a consumer commits offsets explicitly; what a group has not committed is delivered again
  to whichever member owns the partition next (after a crash, a close or a rebalance);
- before partitions are taken away, the owner's `on_revoked` callback runs, so it can commit.
"""

from __future__ import annotations

import abc
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from plaza.settings import BusKind, PlazaSettings

TopicPartition = tuple[str, int]
RevokedCallback = Callable[[frozenset[TopicPartition]], Awaitable[None]]
Headers = tuple[tuple[str, bytes], ...]


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = [struct.Struct(f"<{n}I") for n in range(64)]


def murmur2(data: bytes) -> int:
    """Kafka's MurmurHash2 of a key (org.apache.kafka.common.utils.Utils.murmur2, unsigned):
    the same value as aiokafka's pure-Python loop, at half its cost (the 32-bit words are
    unpacked in one call)."""
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    unpack = (
        _WORDS[words].unpack_from
        if words < len(_WORDS)
        else struct.Struct(f"<{words}I").unpack_from
    )
    for k in unpack(data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        at = length - tail
        if tail == 3:
            h ^= data[at + 2] << 16
        if tail >= 2:
            h ^= data[at + 1] << 8
        h = ((h ^ data[at]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of a keyed record, as Kafka's own clients choose it (Java's default
    partitioner and aiokafka's), so every producer of a key agrees with every other."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Record:
    """A record as a consumer reads it."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: Headers = ()
    timestamp_ms: int = 0

    @property
    def topic_partition(self) -> TopicPartition:
        return (self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class OutRecord:
    """A record to publish."""

    topic: str
    key: str | None
    value: bytes
    headers: Headers = field(default=())


class Consumer(abc.ABC):
    """A member of a consumer group, subscribed to some topics."""

    @abc.abstractmethod
    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        """Up to max_records records, in partition order; empty after `timeout` seconds idle."""

    @abc.abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commits, per partition, the offset of the next record to read."""

    @abc.abstractmethod
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member owns now."""

    @abc.abstractmethod
    async def lag(self) -> dict[TopicPartition, int]:
        """Per owned partition, how many records lie beyond this member's position (those it
        has not read yet). A partition whose end this member does not know yet is left out."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Leaves the group without committing anything more."""


class Bus(abc.ABC):
    """Publishes records and creates consumers."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, records: Sequence[OutRecord]) -> None:
        """Publishes records and returns once every one is durably acknowledged."""

    @abc.abstractmethod
    async def subscribe(
        self,
        group: str,
        topics: Sequence[str],
        *,
        on_revoked: RevokedCallback | None = None,
        written_in_batches: bool = False,
    ) -> Consumer:
        """Joins `group` and returns once the member owns its share of the partitions.

        `written_in_batches`: the topics' producers write them a batch at a time
        (EventType.written_in_batches), so a consumer that would wait at the broker for fuller
        fetches takes what comes at once instead (KafkaBus; an in-process bus never waits)."""

    @abc.abstractmethod
    async def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        """Creates topics that do not exist yet."""

    async def unreachable(self) -> str | None:
        """Why the bus cannot take records now (a broker away), or None when it can: what a
        health check answers. An in-process bus always can."""
        return None


def bus_from_settings(settings: PlazaSettings) -> Bus:
    """Builds the adapter the settings name (nothing connects until start())."""
    if settings.bus is BusKind.MEMORY:
        from plaza.bus.memory import MemoryBus

        return MemoryBus()
    from plaza.bus.kafka import FetchPacing, KafkaBus

    return KafkaBus(
        settings.kafka_bootstrap,
        namespace=settings.kafka_namespace,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        fetch_pacing=FetchPacing(
            busy_wait_ms=settings.kafka_fetch_max_wait_ms,
            busy_min_bytes=settings.kafka_fetch_min_bytes,
        ),
    )
