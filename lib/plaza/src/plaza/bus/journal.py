"""The embedded bus with a journal: MemoryBus's semantics and reads, every record and commit kept
in PostgreSQL, so that `make run` loses nothing to Ctrl-C, kill -9 or a power cut.

As on Kafka with acks=all, `publish` returns once the records are durable (here: committed to
the journal), and a restart resumes each consumer group from its committed offset: what a group
had not committed is delivered again, which the consumers' inboxes make harmless. Reads are
served from memory; the journal is read only at start-up and when a topic gets its first
group. Records are deleted once every group that reads their topic has committed them, and
records of a topic no group reads (in embedded mode the request events, the replies posted and
the dead letters) after RETENTION, as Kafka's retention would."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from plaza.bus import Headers, OutRecord, Record, RevokedCallback, TopicPartition
from plaza.bus.memory import DEFAULT_PARTITIONS, MemoryBus, MemoryConsumer, _Group, _Log

RETENTION = timedelta(days=7)
"""How long a topic that no consumer group reads keeps its records: Kafka's default retention."""

EXPIRY_INTERVAL = 3600.0
"""Seconds between two deletions of records past RETENTION."""

_PARTITIONS = text(
    "SELECT p.topic, p.partition, GREATEST(p.log_start, COALESCE("
    " (SELECT max(r.record_offset) + 1 FROM bus_records r"
    "  WHERE r.topic = p.topic AND r.partition = p.partition), 0)) AS log_end"
    " FROM bus_partitions p ORDER BY p.topic, p.partition"
)
_OFFSETS = text("SELECT consumer_group, topic, partition, next_offset FROM bus_offsets")
_ADD_PARTITIONS = text(
    "INSERT INTO bus_partitions (topic, partition)"
    " SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:partitions AS integer[]))"
    " ON CONFLICT DO NOTHING"
)
# One statement for any number of records, so it is prepared once and costs one round trip.
_INSERT = text(
    "INSERT INTO bus_records"
    " (topic, partition, record_offset, key, value, headers, timestamp_ms)"
    " SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:partitions AS integer[]),"
    " CAST(:offsets AS bigint[]), CAST(:keys AS text[]), CAST(:values AS bytea[]),"
    " CAST(:headers AS bytea[]), CAST(:timestamps AS bigint[]))"
)
_COLUMNS = "topic, partition, record_offset, key, value, headers, timestamp_ms"
_KEPT = text(
    f"SELECT {_COLUMNS} FROM bus_records WHERE topic = ANY(CAST(:topics AS text[]))"
    " ORDER BY topic, partition, record_offset"
)
_BEYOND = text(
    f"SELECT {_COLUMNS} FROM bus_records r JOIN unnest(CAST(:topics AS text[]),"
    " CAST(:partitions AS integer[]), CAST(:ends AS bigint[])) AS e(topic, partition, log_end)"
    " USING (topic, partition) WHERE r.record_offset >= e.log_end"
    " ORDER BY topic, partition, record_offset"
)
# A commit lost to a crash only means records handled again, which the consumers' inboxes make
# harmless; and the next publish, which waits for its own flush, flushes it too (the WAL is
# written in order), so a trim is never durable without the commits it relied on.
_LAZY_FLUSH = text("SET LOCAL synchronous_commit TO OFF")
_COMMIT_OFFSETS = text(
    "INSERT INTO bus_offsets (consumer_group, topic, partition, next_offset)"
    " SELECT :group, * FROM unnest(CAST(:topics AS text[]), CAST(:partitions AS integer[]),"
    " CAST(:offsets AS bigint[]))"
    " ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = excluded.next_offset"
)
# Data-modifying WITH clauses run to completion whether or not the main statement reads them.
_TRIM = text(
    "WITH below AS (SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:partitions AS integer[]),"
    " CAST(:offsets AS bigint[])) AS b(topic, partition, log_start)),"
    " gone AS (DELETE FROM bus_records r USING below b WHERE r.topic = b.topic"
    " AND r.partition = b.partition AND r.record_offset < b.log_start)"
    " UPDATE bus_partitions p SET log_start = GREATEST(p.log_start, b.log_start) FROM below b"
    " WHERE p.topic = b.topic AND p.partition = b.partition"
)
_EXPIRE = text(
    "WITH gone AS (DELETE FROM bus_records WHERE topic <> ALL(CAST(:read AS text[]))"
    " AND timestamp_ms < :cutoff RETURNING topic, partition, record_offset)"
    " UPDATE bus_partitions p SET log_start = GREATEST(p.log_start, g.next)"
    " FROM (SELECT topic, partition, max(record_offset) + 1 AS next FROM gone"
    " GROUP BY topic, partition) g WHERE p.topic = g.topic AND p.partition = g.partition"
)


def _encode_headers(headers: Headers) -> bytes | None:
    """Headers as JSON pairs, a value's bytes as latin-1 text (one character a byte)."""
    if not headers:
        return None
    return json.dumps([[name, value.decode("latin-1")] for name, value in headers]).encode()


def _decode_headers(data: bytes | None) -> Headers:
    if data is None:
        return ()
    return tuple((name, value.encode("latin-1")) for name, value in json.loads(data))


def _record(row: Row[tuple[str, int, int, str | None, bytes, bytes | None, int]]) -> Record:
    return Record(
        row.topic,
        row.partition,
        row.record_offset,
        row.key,
        bytes(row.value),
        _decode_headers(row.headers),
        row.timestamp_ms,
    )


def _per_partition(name: str, values: Mapping[TopicPartition, int]) -> dict[str, list[object]]:
    """A mapping of partitions to offsets as the arrays the statements above unnest."""
    return {
        "topics": [topic for topic, _ in values],
        "partitions": [partition for _, partition in values],
        name: list(values.values()),
    }


class JournalBus(MemoryBus):
    """The in-memory bus, journalled in PostgreSQL (`engine`): what `plaza run` uses.

    Publishes are written by one task, a batch at a time: what is published while one batch is
    written goes into the next, one INSERT and one disk flush for all of it (ingest's concurrent
    requests, the workers' outputs). Offsets are given in the order written, and records become
    readable once their batch is committed, so a reader never sees a record the journal could
    lose. This process holds the records of the topics its groups read, from the lowest
    committed offset on; those of other topics are only in the journal."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        default_partitions: int = DEFAULT_PARTITIONS,
        retention: timedelta = RETENTION,
    ) -> None:
        super().__init__(default_partitions)
        self._engine = engine
        self._retention_ms = int(retention.total_seconds() * 1000)
        self._started = False
        self._stored: set[str] = set()  # topics whose partitions are in bus_partitions
        self._loaded: set[str] = set()  # topics whose records this process holds
        self._writing = (
            asyncio.Lock()
        )  # offsets are given, and records written, one batch at a time
        self._waiting: list[tuple[Sequence[OutRecord], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._unsure = False  # a write failed, perhaps after its commit: read the journal's end
        self._expires_at = 0.0

    async def start(self) -> None:
        """Reads the topics, where each partition ends, and the groups' committed offsets."""
        if self._started:
            return
        async with self._engine.connect() as conn:
            partitions = (await conn.execute(_PARTITIONS)).all()
            offsets = (await conn.execute(_OFFSETS)).all()
        for topic, partition, log_end in partitions:
            logs = self._topics.setdefault(topic, [])
            assert partition == len(logs), f"bus_partitions: {topic} lacks partition {len(logs)}"
            logs.append(_Log(log_end))  # none held until a group subscribes
        self._stored = set(self._topics)
        for group, topic, partition, offset in offsets:
            state = self._groups.setdefault(group, _Group(topics=frozenset()))
            state.topics |= {topic}
            state.committed[(topic, partition)] = offset
        self._started = True
        await self._expire()

    async def close(self) -> None:
        """Waits for the publishes under way, then closes every member."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await super().close()

    def _keeps(self, topic: str) -> bool:
        return topic in self._loaded

    async def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        await super().create_topics(topics, partitions)
        async with self._writing:
            async with self._engine.begin() as conn:
                await self._store(conn, topics)
            self._stored.update(topics)

    async def _store(self, conn: AsyncConnection, topics: Iterable[str]) -> None:
        """Writes the partitions of the topics the journal does not have yet."""
        pairs = [
            (topic, p)
            for topic in sorted(set(topics) - self._stored)
            for p in range(len(self._topics[topic]))
        ]
        if pairs:
            await conn.execute(
                _ADD_PARTITIONS,
                {"topics": [t for t, _ in pairs], "partitions": [p for _, p in pairs]},
            )

    async def publish(self, records: Sequence[OutRecord]) -> None:
        """Returns once the records are committed to the journal."""
        if not records:
            return
        written = asyncio.get_running_loop().create_future()
        self._waiting.append((records, written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="bus journal")
        await written

    async def _write_waiting(self) -> None:
        """Writes what is waiting, batch after batch, until nothing is; a failed batch fails
        each of its publishes (their callers retry, as with a broker that is away)."""
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._write([record for records, _ in batch for record in records])
            except Exception as exc:
                for _, written in batch:
                    if not written.done():
                        written.set_exception(exc)
            else:
                for _, written in batch:
                    if not written.done():
                        written.set_result(None)

    async def _write(self, records: Sequence[OutRecord]) -> None:
        async with self._writing:
            try:
                async with self._engine.begin() as conn:
                    if self._unsure:
                        await self._catch_up(conn)
                    placed = self._place(records)
                    topics = {r.topic for r in placed}
                    await self._store(conn, topics)
                    await conn.execute(
                        _INSERT,
                        {
                            "topics": [r.topic for r in placed],
                            "partitions": [r.partition for r in placed],
                            "offsets": [r.offset for r in placed],
                            "keys": [r.key for r in placed],
                            "values": [r.value for r in placed],
                            "headers": [_encode_headers(r.headers) for r in placed],
                            "timestamps": [r.timestamp_ms for r in placed],
                        },
                    )
            except BaseException:
                self._unsure = True
                raise
            self._stored.update(topics)
            self._append(placed)
        await self._wake()

    async def _catch_up(self, conn: AsyncConnection) -> None:
        """Takes in the records a failed write may have committed after all (its connection
        was lost at the commit): the journal's offsets then go on after them."""
        ends = {
            (topic, p): log.end
            for topic, logs in self._topics.items()
            for p, log in enumerate(logs)
        }
        rows = (await conn.execute(_BEYOND, _per_partition("ends", ends))).all()
        self._append([_record(row) for row in rows])
        self._unsure = False

    async def subscribe(
        self,
        group: str,
        topics: Sequence[str],
        *,
        on_revoked: RevokedCallback | None = None,
        written_in_batches: bool = False,
    ) -> MemoryConsumer:
        await self._load(topics)
        return await super().subscribe(group, topics, on_revoked=on_revoked)

    async def _load(self, topics: Sequence[str]) -> None:
        """Reads the records the journal keeps of topics that get their first group in this
        process: from here on this process holds them, and every record published to them."""
        async with self._writing:
            wanted = [topic for topic in topics if topic not in self._loaded]
            if not wanted:
                return
            for topic in wanted:
                self._ensure(topic)
            async with self._engine.begin() as conn:
                await self._store(conn, wanted)
                rows = (await conn.execute(_KEPT, {"topics": wanted})).all()
            self._stored.update(wanted)
            kept: dict[TopicPartition, list[Record]] = {}
            for row in rows:
                record = _record(row)
                kept.setdefault(record.topic_partition, []).append(record)
            for tp, records in kept.items():
                log = self._log(tp)
                log.start, log.records = records[0].offset, records
            self._loaded.update(wanted)

    async def _commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Writes the group's offsets, and deletes what every group has now read, in one
        transaction; then takes them in."""
        below = self._read_below(group, offsets)
        async with self._engine.begin() as conn:
            await conn.execute(_LAZY_FLUSH)
            await conn.execute(
                _COMMIT_OFFSETS, {"group": group, **_per_partition("offsets", offsets)}
            )
            if below:
                await conn.execute(_TRIM, _per_partition("offsets", below))
        self._committed(group, offsets, below)
        if time.monotonic() >= self._expires_at:
            await self._expire()

    async def _expire(self) -> None:
        """Deletes the records past RETENTION of the topics no group reads."""
        read = {topic for state in self._groups.values() for topic in state.topics}
        cutoff = int(time.time() * 1000) - self._retention_ms
        async with self._engine.begin() as conn:
            await conn.execute(_EXPIRE, {"read": sorted(read | self._loaded), "cutoff": cutoff})
        self._expires_at = time.monotonic() + EXPIRY_INTERVAL
