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
        self._closed = False

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._positions)

    async def lag(self) -> dict[TopicPartition, int]:
        return {tp: len(self._bus._log(tp)) - pos for tp, pos in self._positions.items()}

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
        out: list[Record] = []
        for tp in sorted(self._positions):
            log = self._bus._log(tp)
            pos = self._positions[tp]
            batch = log[pos : pos + (max_records - len(out))]
            if batch:
                out.extend(batch)
                self._positions[tp] = pos + len(batch)
            if len(out) >= max_records:
                break
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self._closed:
            raise RuntimeError("commit on a closed consumer")
        group = self._bus._groups[self._group]
        for tp, offset in offsets.items():
            if tp not in self._positions:
                raise RuntimeError(f"commit for {tp} that this member does not own")
            group.committed[tp] = offset

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
                self._positions[tp] = committed.get(tp, 0)


class MemoryBus(Bus):
    """All topics live in this process; nothing survives it."""

    def __init__(self, default_partitions: int = DEFAULT_PARTITIONS) -> None:
        self._default_partitions = default_partitions
        self._topics: dict[str, list[list[Record]]] = {}
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

    def _log(self, tp: TopicPartition) -> list[Record]:
        return self._topics[tp[0]][tp[1]]

    def _ensure(self, topic: str, partitions: int | None = None) -> list[list[Record]]:
        if topic not in self._topics:
            self._topics[topic] = [[] for _ in range(partitions or self._default_partitions)]
        return self._topics[topic]

    async def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        for topic in topics:
            self._ensure(topic, partitions)

    async def publish(self, records: Sequence[OutRecord]) -> None:
        now = int(time.time() * 1000)
        for rec in records:
            logs = self._ensure(rec.topic)
            p = partition_for(rec.key, len(logs), self._round_robin)
            log = logs[p]
            log.append(Record(rec.topic, p, len(log), rec.key, rec.value, rec.headers, now))
        async with self._changed:
            self._changed.notify_all()

    async def subscribe(
        self, group: str, topics: Sequence[str], *, on_revoked: RevokedCallback | None = None
    ) -> MemoryConsumer:
        wanted = frozenset(topics)
        state = self._groups.setdefault(group, _Group(topics=wanted))
        if state.topics != wanted:
            raise ValueError(f"group {group!r} already subscribes to {sorted(state.topics)}")
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
        async with self._changed:
            self._changed.notify_all()

    def committed(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed offsets (for tests and lag metrics)."""
        state = self._groups.get(group)
        return dict(state.committed) if state else {}

    def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        return {(topic, p): len(log) for p, log in enumerate(self._topics.get(topic, []))}
