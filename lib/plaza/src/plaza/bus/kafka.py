"""Kafka adapter of the bus (aiokafka): idempotent acks=all producer, manually committed consumers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
)
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition as KafkaTopicPartition

from plaza.bus import (
    Bus,
    Consumer,
    OutRecord,
    Record,
    RevokedCallback,
    TopicPartition,
    partition_of,
)

log = logging.getLogger(__name__)

LAG_QUERY_TIMEOUT = 2.0  # seconds the broker has to give the partitions' ends for lag()
# A dead letter is an accepted post, or a reply, that waits for an operator to replay it (plaza
# dead-letters): kept 30 days, where the broker's default (7) dropped it after a long weekend
# and a week off.
DEAD_LETTER_RETENTION: Final = {"retention.ms": str(30 * 24 * 3600 * 1000)}
REACHABLE_TIMEOUT = 2.0  # seconds a broker has to answer a health check (KafkaBus.unreachable)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[KafkaTopicPartition]) -> None:
        await self._consumer._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[KafkaTopicPartition]) -> None:
        self._consumer._assigned.set()


@dataclass(frozen=True, slots=True)
class FetchPacing:
    """How long the broker may hold a consumer's fetch, and for how many bytes, while records
    flow (busy) and after `idle_after` seconds without any (idle).

    Busy, a fetch waits up to `busy_wait_ms` for `busy_min_bytes`: at a moderate rate (1,000
    posts/s) each fetch brings tens of records instead of a few, so the broker and the
    consumers handle several times fewer requests, for at most that wait per hop. Idle, a fetch
    ends on the first record and otherwise waits long: a consumer with nothing to read polls
    twice a second, not forty times (which cost the idle broker a tenth of a core)."""

    busy_wait_ms: int = 25
    busy_min_bytes: int = 64 * 1024
    idle_wait_ms: int = 500
    idle_after: float = 1.0

    def on_arrival(self) -> FetchPacing:
        """The pacing of a topic written a batch at a time (by a worker's batches, the relay's
        rounds): a fetch ends on the first records, busy or idle, as an idle one does. Its
        records come a producer's batch at a time, already a batch for the consumer: waiting
        for more only delayed each batch, by up to busy_wait_ms (the router's fetches waited
        for the classifier's next batch, a p50 of 24 ms at 1,000 posts/s, 4.5 ms without),
        for no fewer fetches."""
        return replace(self, busy_wait_ms=self.idle_wait_ms, busy_min_bytes=1)


# Event-loop turns for aiokafka's fetcher to wake up and start the next fetch, and for that
# fetch's task to write its request (see KafkaConsumer._let_next_fetch_go).
_FETCH_YIELDS = 8
_SEND_YIELDS = 3


class KafkaConsumer(Consumer):
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        namespace: str,
        on_revoked: RevokedCallback | None,
        pacing: FetchPacing = FetchPacing(),
    ) -> None:
        self._consumer = consumer
        self._ns = namespace
        self._on_revoked = on_revoked
        self._assigned = asyncio.Event()
        self._pacing = pacing
        self._last_records = -math.inf
        self.busy = False

    def _pace(self, got_records: bool) -> None:
        """Switches the fetches between busy and idle pacing. aiokafka reads the wait and the
        minimum from its fetcher for every fetch request it builds; it has no public setter."""
        now = time.monotonic()
        if got_records:
            self._last_records = now
        busy = now - self._last_records < self._pacing.idle_after
        if busy == self.busy:
            return
        self.busy = busy
        fetcher = getattr(self._consumer, "_fetcher", None)
        if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
            return  # another aiokafka: the consumer keeps its idle pacing
        p = self._pacing
        fetcher._fetch_max_wait_ms = p.busy_wait_ms if busy else p.idle_wait_ms
        fetcher._fetch_min_bytes = p.busy_min_bytes if busy else 1

    async def _let_next_fetch_go(self) -> None:
        """Lets aiokafka send its next fetch before the caller handles what this one brought.

        aiokafka's fetcher, a background task, asks for more once the buffered records are
        taken, but only when the event loop runs it: a handler that computes without awaiting
        (the classifier) held the request back until its first await, after the batch, and the
        broker's wait (busy_wait_ms) then came on top of the handling instead of during it. At
        1,000 posts/s the classifier's cycle was 25 ms of fetch wait plus 22 ms of handling."""
        fetcher = getattr(self._consumer, "_fetcher", None)
        in_flight = getattr(fetcher, "_in_flight", None)
        if not isinstance(in_flight, set):
            return  # another aiokafka
        for _ in range(_FETCH_YIELDS):
            if in_flight:
                break
            await asyncio.sleep(0)
        # The fetch's own task writes the request on its first steps.
        for _ in range(_SEND_YIELDS):
            await asyncio.sleep(0)

    def _local(self, topic: str) -> str:
        return topic[len(self._ns) :]

    async def _revoked(self, revoked: set[KafkaTopicPartition]) -> None:
        if self._on_revoked is not None and revoked:
            await self._on_revoked(
                frozenset((self._local(tp.topic), tp.partition) for tp in revoked)
            )

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(
            (self._local(tp.topic), tp.partition) for tp in self._consumer.assignment()
        )

    async def lag(self) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        assigned = list(self._consumer.assignment())
        # The partitions' ends as the broker has them now (one ListOffsets request, under the
        # consumer's read_committed: the last stable offsets). The last fetch response's would
        # do while records flow, but aiokafka fetches nothing more from a partition whose
        # records wait unhandled: a worker stuck retrying would read a lag that never grows.
        try:
            ends = await asyncio.wait_for(self._consumer.end_offsets(assigned), LAG_QUERY_TIMEOUT)
        except (KafkaError, TimeoutError, IllegalStateError):
            ends = {}
        for tp in assigned:
            end = ends.get(tp)
            if end is None:  # the broker did not say: the end as of the last fetch response
                lso = self._consumer.last_stable_offset(tp)
                end = lso if lso is not None and lso >= 0 else self._consumer.highwater(tp)
            if end is None:
                continue  # nothing fetched from it yet, so its position may be unknown too
            try:
                position = await self._consumer.position(tp)
            except IllegalStateError:
                continue  # revoked meanwhile
            out[(self._local(tp.topic), tp.partition)] = max(0, end - position)
        return out

    async def fetch(self, max_records: int, timeout: float) -> list[Record]:
        batches = await self._consumer.getmany(
            timeout_ms=int(timeout * 1000), max_records=max_records
        )
        self._pace(bool(batches))
        if batches:
            await self._let_next_fetch_go()
        out: list[Record] = []
        for tp, msgs in batches.items():
            topic, partition = self._local(tp.topic), tp.partition
            # positional: Record(topic, partition, offset, key, value, headers, timestamp_ms)
            out += [
                Record(
                    topic,
                    partition,
                    m.offset,
                    m.key.decode() if m.key is not None else None,
                    m.value,
                    m.headers,  # aiokafka's tuple of (name, bytes)
                    m.timestamp,
                )
                for m in msgs
            ]
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if offsets:
            await self._consumer.commit(
                {KafkaTopicPartition(self._ns + t, p): o for (t, p), o in offsets.items()}
            )

    async def wait_assigned(self, timeout: float) -> None:
        await asyncio.wait_for(self._assigned.wait(), timeout)

    async def close(self) -> None:
        await self._consumer.stop()


class KafkaBus(Bus):
    def __init__(
        self,
        bootstrap: str,
        *,
        namespace: str = "",
        client_id: str = "plaza",
        linger_ms: int = 0,
        join_timeout: float = 60.0,
        session_timeout_ms: int = 10000,
        fetch_pacing: FetchPacing = FetchPacing(),
    ) -> None:
        self._bootstrap = bootstrap
        self._ns = namespace
        self._client_id = client_id
        self._linger_ms = linger_ms
        self._join_timeout = join_timeout
        self._session_timeout_ms = session_timeout_ms
        self._pacing = fetch_pacing
        self._producer: AIOKafkaProducer | None = None
        self._max_request_size = 1024 * 1024  # aiokafka's default, and the broker's

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            enable_idempotence=True,
            acks="all",
            # No linger: a worker hands over a whole batch's records at once, which the producer
            # sends together anyway, so lingering only delayed every hop by its wait.
            linger_ms=self._linger_ms,
            max_batch_size=256 * 1024,
            max_request_size=self._max_request_size,
            request_timeout_ms=30000,
        )
        await self._producer.start()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def unreachable(self) -> str | None:
        """Asks a broker for the cluster's metadata (one small request): ingest's /healthz said
        ok with the broker down, while every post it was given waited for it and timed out."""
        producer = self._producer
        if producer is None:
            return "the Kafka producer is not started"
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), REACHABLE_TIMEOUT)
        except (KafkaError, OSError, TimeoutError) as exc:
            why = str(exc) or f"no answer within {REACHABLE_TIMEOUT:g} s"
            return f"the Kafka broker at {self._bootstrap} is not reachable: {why}"
        return None

    async def publish(self, records: Sequence[OutRecord]) -> None:
        """Lays the records into one batch per partition and hands each batch to the producer
        whole: aiokafka's send() of one record at a time cost two to three times as much CPU
        per record (a metadata wait, a partitioner call, a future and a log call each). A key's
        partition is the one Kafka's own clients choose (partition_of), and a key's records
        keep their order: a full batch goes before the next one of its partition is begun. A
        record too big for a request fails the call before anything of it is sent."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("KafkaBus.publish before start()")
        counts: dict[str, int] = {}
        placed: list[tuple[str, int, bytes | None, bytes, list[tuple[str, bytes]]]] = []
        for r in records:
            topic = self._ns + r.topic
            count = counts.get(topic)
            if count is None:
                count = counts[topic] = len(await producer.partitions_for(topic))
            key = r.key.encode() if r.key is not None else None
            headers = list(r.headers)
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, r.value, headers)
            if size > self._max_request_size:
                raise MessageSizeTooLargeError(
                    f"a record of {r.topic} (key {r.key!r}) is {size} bytes, more than the"
                    f" {self._max_request_size} a request may carry; nothing was published"
                )
            partition = partition_of(key, count) if key is not None else random.randrange(count)
            placed.append((topic, partition, key, r.value, headers))
        batches: dict[tuple[str, int], BatchBuilder] = {}
        acks: list[asyncio.Future[object]] = []
        for topic, partition, key, value, headers in placed:
            batch = batches.get((topic, partition))
            if batch is None:
                batch = batches[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                acks.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[(topic, partition)] = producer.create_batch()
                # a batch takes its first record whatever its size (up to a request's)
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise RuntimeError(f"an empty producer batch refused a record of {topic}")
        for (topic, partition), batch in batches.items():
            acks.append(await producer.send_batch(batch, topic, partition=partition))
        if acks:
            await asyncio.gather(*acks)

    async def subscribe(
        self,
        group: str,
        topics: Sequence[str],
        *,
        on_revoked: RevokedCallback | None = None,
        written_in_batches: bool = False,
    ) -> KafkaConsumer:
        raw = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-{group}",
            group_id=self._ns + group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_interval_ms=300000,
            # How long a dead member keeps its partitions before the group moves them.
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=min(1000, self._session_timeout_ms // 3),
            # Idle pacing to start with (FetchPacing): the first record ends a fetch at once.
            fetch_max_wait_ms=self._pacing.idle_wait_ms,
            fetch_min_bytes=1,
            metadata_max_age_ms=5000,
        )
        pacing = self._pacing.on_arrival() if written_in_batches else self._pacing
        consumer = KafkaConsumer(raw, self._ns, on_revoked, pacing)
        await raw.start()
        raw.subscribe(topics=[self._ns + t for t in topics], listener=_Listener(consumer))
        # aiokafka joins the group in a background task; wait for the first assignment.
        try:
            await consumer.wait_assigned(self._join_timeout)
        except TimeoutError:
            await raw.stop()
            raise TimeoutError(
                f"consumer group {group!r} got no partitions within {self._join_timeout}s"
            ) from None
        return consumer

    async def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        """Creates the topics that do not exist yet, each partition on up to three brokers
        (replication, below), and leaves the others as they are (topic_partitions says how
        many partitions they have)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=self._client_id)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            factor, configs = replication(len((await admin.describe_cluster())["brokers"]))
            new = [
                NewTopic(
                    name=self._ns + t,
                    num_partitions=partitions,
                    replication_factor=factor,
                    topic_configs=(
                        configs | DEAD_LETTER_RETENTION if t.endswith(".dlq") else configs
                    ),
                )
                for t in topics
                if self._ns + t not in existing
            ]
            if new:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
        finally:
            await admin.close()

    async def topic_partitions(self, topics: Sequence[str]) -> dict[str, int]:
        """How many partitions each of `topics` has (a topic that does not exist is left out)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=self._client_id)
        await admin.start()
        try:
            described = await admin.describe_topics([self._ns + t for t in topics])
        finally:
            await admin.close()
        n = len(self._ns)
        return {str(d["topic"])[n:]: len(d["partitions"]) for d in described if not d["error_code"]}


def replication(brokers: int) -> tuple[int, dict[str, str]]:
    """The replication factor and topic settings of a new topic on a cluster of `brokers`: each
    partition on three brokers (fewer on a smaller cluster), and a write acknowledged (acks=all)
    once two of them have it, so that losing a broker loses no accepted post and stops no
    write. Every topic was made with one replica: on a cluster of three, the loss of one disk
    lost the posts its partitions held, though ingest had answered 202."""
    factor = max(1, min(3, brokers))
    return factor, {"min.insync.replicas": "2" if factor >= 3 else "1"}


class GroupLag:
    """Every consumer group's lag as the broker keeps it: per partition, its end (the last
    stable offset, as the members read under read_committed) minus the group's committed
    offset. Read by a process other than the consumers (the gateway), so that a group whose
    every member is down still shows the records waiting for it: the members' own gauge
    (KafkaConsumer.lag) goes with them. Counts what was handled but not yet committed too,
    which the workers commit within their commit interval.

    Connects at the first read; the groups are those of this namespace, found on the broker
    (a group that never committed anything has no lag to read)."""

    def __init__(self, bootstrap: str, *, namespace: str = "", client_id: str = "plaza") -> None:
        self._bootstrap = bootstrap
        self._ns = namespace
        self._client_id = f"{client_id}-lag"
        self._admin: AIOKafkaAdminClient | None = None
        self._ends: AIOKafkaConsumer | None = None  # in no group: it only asks for the ends

    async def _start(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._ends is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._bootstrap, client_id=self._client_id
            )
            ends = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                isolation_level="read_committed",
                enable_auto_commit=False,
            )
            # A broker away fails each scrape's start: whatever was made is closed again, or each
            # scrape leaked a consumer ("Unclosed AIOKafkaConsumer") and its connections.
            try:
                await admin.start()
                await ends.start()
            except BaseException:
                await ends.stop()
                await admin.close()
                raise
            self._admin, self._ends = admin, ends
        return self._admin, self._ends

    async def read(self) -> dict[tuple[str, str, int], int]:
        """(group, topic, partition) -> records the group has not committed, for every group
        and topic of this namespace. Raises what the broker raises (the caller reports it)."""
        admin, ends = await self._start()
        groups = [
            str(listed[0])
            for listed in await admin.list_consumer_groups()
            if str(listed[0]).startswith(self._ns)
        ]
        committed: dict[tuple[str, KafkaTopicPartition], int] = {}
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            for tp, meta in offsets.items():
                if tp.topic.startswith(self._ns) and meta.offset >= 0:
                    committed[(group, tp)] = meta.offset
        partitions = sorted({tp for _, tp in committed})
        end = await asyncio.wait_for(ends.end_offsets(partitions), LAG_QUERY_TIMEOUT)
        n = len(self._ns)
        return {
            (group[n:], tp.topic[n:], tp.partition): max(0, end[tp] - offset)
            for (group, tp), offset in committed.items()
            if tp in end
        }

    async def close(self) -> None:
        admin, ends, self._admin, self._ends = self._admin, self._ends, None, None
        if ends is not None:
            await ends.stop()
        if admin is not None:
            await admin.close()
