"""In-memory bus for the embedded mode and unit tests, with Kafka's delivery semantics."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from plaza.bus import (
    Bus,
    Consumer,
    OutRecord,
    Record,
    RevokedCallback,
    TopicPartition,
    partition_of,
)

DEFAULT_PARTITIONS = 6


def partition_for(key: str | None, partitions: int, counter: itertools.count[int]) -> int:
    """Same key, same partition: the one Kafka's clients would choose."""
    if key is None:
        return next(counter) % partitions
    return partition_of(key.encode(), partitions)


class _Log:
    """One partition: its records from offset `start` on. Those below were committed by every
    group that reads the topic (or, on a JournalBus, live only in the journal), and are dropped
    so that a process running for months holds only what some group has yet to read."""

    __slots__ = ("records", "start")

    def __init__(self, start: int = 0) -> None:
        self.start = start
        self.records: list[Record] = []

    @property
    def end(self) -> int:
        return self.start + len(self.records)

    def read(self, position: int, max_records: int) -> list[Record]:
        """Up to max_records from `position` on (from `start` if that was dropped, as Kafka's
        consumers reset to the earliest record kept)."""
        at = max(position - self.start, 0)
        return self.records[at : at + max_records]

    def drop_below(self, offset: int) -> None:
        if offset > self.start:
            del self.records[: offset - self.start]
            self.start = offset


TRIM_AT = 256
"""A partition's read prefix is dropped once it is this long, or once every record is read: each
drop moves the rest of the list, so not after every commit of a busy partition."""


@dataclass
class _Group:
    topics: frozenset[str]
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    members: list[MemoryConsumer] = field(default_factory=list)


class MemoryConsumer(Consumer):
    def __init__(self, bus: MemoryBus, group: str, on_revoked: RevokedCallback | None) -> None:
        self._bus = bus
        self._group = group
        self._on_revoked = on_revoked
        self._positions: dict[TopicPartition, int] = {}
        self._first = 0  # where the next fetch starts, in the sorted assignment
        self._closed = False

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._positions)

    async def lag(self) -> dict[TopicPartition, int]:
        return {tp: self._bus._log(tp).end - pos for tp, pos in self._positions.items()}

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        deadline = time.monotonic() + timeout
        while not self._closed:
            records = self._take(max_records)
            if records:
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            async with self._bus._changed:
                try:
                    await asyncio.wait_for(self._bus._changed.wait(), remaining)
                except TimeoutError:
                    return []
        return []

    def _take(self, max_records: int) -> list[Record]:
        """Fills a fetch partition by partition, starting after the partition the last fetch
        took records from: as Kafka's fetches go round the partitions, a busy partition cannot
        keep the others waiting (each partition is still read in order)."""
        order = sorted(self._positions)
        first = self._first
        out: list[Record] = []
        for i in range(len(order)):
            at = (first + i) % len(order)
            tp = order[at]
            batch = self._bus._log(tp).read(self._positions[tp], max_records - len(out))
            if batch:
                out.extend(batch)
                self._positions[tp] = batch[-1].offset + 1
                self._first = at + 1
            if len(out) >= max_records:
                break
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self._closed:
            raise RuntimeError("commit on a closed consumer")
        for tp in offsets:
            if tp not in self._positions:
                raise RuntimeError(f"commit for {tp} that this member does not own")
        await self._bus._commit(self._group, offsets)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        group = self._bus._groups[self._group]
        group.members.remove(self)
        self._positions.clear()
        await self._bus._rebalance(self._group)

    async def _revoke(self, partitions: frozenset[TopicPartition]) -> None:
        if partitions and self._on_revoked is not None:
            await self._on_revoked(partitions)
        for tp in partitions:
            self._positions.pop(tp, None)

    def _assign(self, partitions: frozenset[TopicPartition]) -> None:
        committed = self._bus._groups[self._group].committed
        for tp in partitions:
            if tp not in self._positions:
                self._positions[tp] = max(committed.get(tp, 0), self._bus._log(tp).start)


class MemoryBus(Bus):
    """All topics live in this process; nothing survives it (JournalBus keeps them in
    PostgreSQL). A partition keeps its records until every group that reads the topic has
    committed them; a topic no group reads keeps every record (a test's probe reads them)."""

    def __init__(self, default_partitions: int = DEFAULT_PARTITIONS) -> None:
        self._default_partitions = default_partitions
        self._topics: dict[str, list[_Log]] = {}
        self._groups: dict[str, _Group] = {}
        self._changed = asyncio.Condition()
        self._round_robin = itertools.count()
        self._rebalancing = asyncio.Lock()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for group in self._groups.values():
            for member in list(group.members):
                member._closed = True
            group.members.clear()

    def _log(self, tp: TopicPartition) -> _Log:
        return self._topics[tp[0]][tp[1]]

    def _ensure(self, topic: str, partitions: int | None = None) -> list[_Log]:
        if topic not in self._topics:
            self._topics[topic] = [_Log() for _ in range(partitions or self._default_partitions)]
        return self._topics[topic]

    def _keeps(self, topic: str) -> bool:
        """Whether this process holds the topic's records (a JournalBus holds only those of the
        topics some group of this process reads)."""
        return True

    async def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        for topic in topics:
            self._ensure(topic, partitions)

    async def publish(self, records: Sequence[OutRecord]) -> None:
        self._append(self._place(records))
        await self._wake()

    def _place(self, records: Sequence[OutRecord]) -> list[Record]:
        """The records as they will be read: each with its partition and offset."""
        now = int(time.time() * 1000)
        ends: dict[TopicPartition, int] = {}
        placed: list[Record] = []
        for rec in records:
            logs = self._ensure(rec.topic)
            p = partition_for(rec.key, len(logs), self._round_robin)
            tp = (rec.topic, p)
            offset = ends.get(tp, logs[p].end)
            ends[tp] = offset + 1
            placed.append(Record(rec.topic, p, offset, rec.key, rec.value, rec.headers, now))
        return placed

    def _append(self, placed: Sequence[Record]) -> None:
        for rec in placed:
            log = self._topics[rec.topic][rec.partition]
            if self._keeps(rec.topic):
                log.records.append(rec)
            else:
                log.start = rec.offset + 1

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def subscribe(
        self,
        group: str,
        topics: Sequence[str],
        *,
        on_revoked: RevokedCallback | None = None,
        written_in_batches: bool = False,
    ) -> MemoryConsumer:
        wanted = frozenset(topics)
        state = self._groups.setdefault(group, _Group(topics=wanted))
        if state.topics != wanted:
            if state.members:
                raise ValueError(f"group {group!r} already subscribes to {sorted(state.topics)}")
            state.topics = wanted  # as on Kafka, a group with no members may change topics
        for topic in topics:
            self._ensure(topic)
        consumer = MemoryConsumer(self, group, on_revoked)
        state.members.append(consumer)
        await self._rebalance(group)
        return consumer

    async def _rebalance(self, group: str) -> None:
        """Round-robin assignment; revoke before assign, as Kafka's eager protocol does."""
        async with self._rebalancing:
            state = self._groups[group]
            partitions = sorted((t, p) for t in state.topics for p in range(len(self._ensure(t))))
            members = state.members
            target: dict[int, set[TopicPartition]] = {id(m): set() for m in members}
            for i, tp in enumerate(partitions):
                if members:
                    target[id(members[i % len(members)])].add(tp)
            for m in members:
                lost = m.assignment() - target[id(m)]
                await m._revoke(frozenset(lost))
            for m in members:
                m._assign(frozenset(target[id(m)]))
        await self._wake()

    async def _commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        self._committed(group, offsets, self._read_below(group, offsets))

    def _read_below(
        self, group: str, offsets: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Per partition of `offsets` worth trimming, the offset below which every group that
        reads its topic has committed once `group` commits `offsets` (TRIM_AT)."""
        below: dict[TopicPartition, int] = {}
        for tp in offsets:
            low = min(
                offsets[tp] if name == group else state.committed.get(tp, 0)
                for name, state in self._groups.items()
                if tp[0] in state.topics or name == group
            )
            log = self._log(tp)
            if low - log.start >= TRIM_AT or (low >= log.end and low > log.start):
                below[tp] = min(low, log.end)
        return below

    def _committed(
        self,
        group: str,
        offsets: Mapping[TopicPartition, int],
        below: Mapping[TopicPartition, int],
    ) -> None:
        """Takes a commit in (once it is as durable as this bus makes it) and drops what every
        group has read."""
        self._groups[group].committed.update(offsets)
        for tp, offset in below.items():
            self._log(tp).drop_below(offset)

    def unhandled(self) -> int:
        """How many records the groups with members have not committed yet: what a clean stop
        waits for."""
        return sum(
            max(log.end - max(state.committed.get((topic, p), 0), log.start), 0)
            for state in self._groups.values()
            if state.members
            for topic in state.topics
            for p, log in enumerate(self._topics.get(topic, []))
        )

    def held(self) -> int:
        """How many records this process holds in memory."""
        return sum(len(log.records) for logs in self._topics.values() for log in logs)

    def committed(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed offsets (for tests and lag metrics)."""
        state = self._groups.get(group)
        return dict(state.committed) if state else {}

    def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        return {(topic, p): log.end for p, log in enumerate(self._topics.get(topic, []))}
