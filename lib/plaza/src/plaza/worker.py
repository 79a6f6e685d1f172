"""The worker runtime: the one consume-handle-publish-commit loop that wraps every handler.

For each batch of records it decodes each record against its topic's contract, calls the
handler, publishes what the handler returns, and only then commits the offsets (in the
background: the next batch is handled while the broker takes the commit, and a group
coordinator that is slow or gone holds up no post; see Worker._commit_soon). A worker may
also be given a batch handler, which handles up to `batch_size` records in one transaction;
when it fails, those records are handled one by one as usual. A handler
does its own database transaction and must be idempotent: a record whose offset was not
committed (a crash, a rebalance) is handled again, and the handler must then change nothing
and return the same events (their ids are derived from the input, so consumers skip them).

Failures:
- a record that does not decode, or that the handler rejects (`Rejected`), goes to
  `<topic>.dlq` at once with the reason in its headers;
- a transient error (database or broker unavailable) is retried with capped exponential
  backoff for as long as it lasts, since dead-lettering would lose good records; the waits
  stay short (RetryPolicy.transient_max_delay), so the worker resumes seconds after it is back;
- any other error is retried `max_attempts` times, then the record is dead-lettered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import Histogram

from plaza import metrics
from plaza.bus import Bus, Consumer, OutRecord, Record, TopicPartition
from plaza.contracts import (
    ContractError,
    Envelope,
    EventType,
    Outgoing,
    decode,
    from_timestamp,
)
from plaza.pgerrors import database_unavailable

log = logging.getLogger(__name__)

COMMIT_TIMEOUT = 30.0
"""Seconds a commit may take. A broker's SIGKILL left a router's commit retrying against its
consumer group's coordinator while the worker waited for it holding its lock: no post was
routed for minutes. A commit that takes longer is given up; its offsets go with the next."""
COMMIT_RETRY_WAIT = 1.0  # seconds after a failed commit before the next is tried

Handler = Callable[[Envelope], Awaitable[Sequence[Outgoing]]]
# Handles many events in one database transaction, all or nothing: what saves a commit (and its
# disk flush) per record. If it raises, the records are handled one by one by the Handler,
# which finds the failing one and gives it the usual retries and dead letter.
BatchHandler = Callable[[Sequence[Envelope]], Awaitable[Sequence[Outgoing]]]


class BatchingHandler(Protocol):
    """A handler of one event that also handles several at once (`batch`), with the same
    effects as handling them one by one in order."""

    async def __call__(self, event: Envelope) -> Sequence[Outgoing]: ...

    async def batch(self, events: Sequence[Envelope]) -> Sequence[Outgoing]: ...


# The pipeline stage a record of each topic completes (defined with the metric, whose series
# start_at_zero creates for each consumer's topics).
STAGES: Mapping[str, str] = metrics.STAGES


class Rejected(Exception):
    """Raised by a handler for a record that can never succeed; it goes to the dead-letter topic."""


def is_transient(exc: BaseException) -> bool:
    """Errors that say "try again later" rather than "this record is bad"."""
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return True
    # A PostgreSQL restarting answers every connection with "the database system is starting
    # up" for as long as its recovery takes: no sign of a bad record, yet three quick attempts
    # dead-lettered accepted posts while it lasted.
    if database_unavailable(exc):
        return True
    try:
        from sqlalchemy.exc import DBAPIError, OperationalError

        if isinstance(exc, OperationalError):
            return True
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency of plaza
        pass
    try:
        from aiokafka.errors import KafkaError

        if isinstance(exc, KafkaError) and getattr(exc, "retriable", False):
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 30.0
    # The database or the broker away: the wait in progress when it comes back is time the
    # worker sits idle after it is back. Waits of up to 30 s left a worker idle up to 30 s
    # after a restart of PostgreSQL; one attempt every few seconds costs a dead database
    # nothing (a refused connection).
    transient_max_delay: float = 5.0
    # While a transient error lasts, a retry is logged at most this often (the first ones
    # always): the short waits would otherwise log a line every few seconds for hours.
    transient_log_interval: float = 30.0

    def delay(self, attempt: int, *, transient: bool = False) -> float:
        """Full-jitter exponential backoff, capped lower for a transient error."""
        cap = min(self.max_delay, self.transient_max_delay) if transient else self.max_delay
        return random.uniform(0, min(cap, self.base_delay * 2 ** (attempt - 1)))


class _Stopping(Exception):
    pass


class Worker:
    """Runs one handler as a member of consumer group `group`."""

    def __init__(
        self,
        bus: Bus,
        *,
        group: str,
        topics: Sequence[EventType],
        handler: Handler,
        batch_handler: BatchHandler | None = None,
        batch_size: int = 100,
        retry: RetryPolicy = RetryPolicy(),
        max_batch: int = 500,
        poll_timeout: float = 0.5,
        lag_interval: float = 1.0,
        commit_interval: float = 0.0,
    ) -> None:
        self._bus = bus
        self.group = group
        self._topics = [t.topic for t in topics]
        self._written_in_batches = all(t.written_in_batches for t in topics)
        self._handler = handler
        self._batch_handler = batch_handler
        self._batch_size = batch_size
        self._retry = retry
        self._max_batch = max_batch
        self._poll_timeout = poll_timeout
        self._lag_interval = lag_interval
        self._lag_reported_at = 0.0
        self._lag_series: set[TopicPartition] = set()
        self._batch: Sequence[Record] = ()  # the records being handled, in order (for the lag)
        self._lock = asyncio.Lock()
        self._pending: dict[TopicPartition, int] = {}
        self._commit_interval = commit_interval
        self._committed_at = 0.0
        self._committing: asyncio.Task[None] | None = None  # the commit in flight, if any
        self._commit_retry_at = 0.0  # after a failed commit, the next waits until then
        self._consumer: Consumer | None = None
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()

    @classmethod
    def in_batches(
        cls,
        bus: Bus,
        *,
        group: str,
        topics: Sequence[EventType],
        handler: BatchingHandler,
        batch_size: int,
        commit_interval: float = 0.0,
    ) -> Worker:
        """A worker that hands `handler.batch` up to batch_size records at a time (the handler
        itself when a batch fails, record by record)."""
        return cls(
            bus,
            group=group,
            topics=topics,
            handler=handler,
            batch_handler=handler.batch,
            batch_size=batch_size,
            commit_interval=commit_interval,
        )

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Consumes until stop() is called; commits what was handled before returning."""
        self._consumer = await self._bus.subscribe(
            self.group,
            self._topics,
            on_revoked=self._on_revoked,
            written_in_batches=self._written_in_batches,
        )
        self.ready.set()
        self._committed_at = time.monotonic()
        log.info("worker %s consuming %s", self.group, ", ".join(self._topics))
        try:
            while not self._stop.is_set():
                records = await self._consumer.fetch(self._max_batch, self._poll_timeout)
                async with self._lock:
                    if records:
                        await self._handle_batch(self._consumer, records)
                    elif self._pending:
                        self._commit_soon(self._consumer)  # idle: nothing left uncommitted
                await self._report_lag(self._consumer)
        finally:
            self._forget_lag(self._lag_series)
            async with self._lock:
                await self._commit(self._consumer)
            await self._consumer.close()
            log.info("worker %s stopped", self.group)

    async def _on_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        # Kafka calls this from its coordinator while a batch may be in flight: wait for it,
        # then commit what was handled so that the next owner does not handle it again.
        async with self._lock:
            if self._consumer is not None:
                await self._commit(self._consumer)

    async def _handle_batch(self, consumer: Consumer, records: list[Record]) -> None:
        outgoing: list[OutRecord] = []
        owned = consumer.assignment()
        mine = [r for r in records if r.topic_partition in owned]  # the rest: the next owner's
        self._batch = mine
        size = self._batch_size if self._batch_handler is not None else 1
        try:
            for at in range(0, len(mine), size):
                for event in await self._handle_chunk(mine[at : at + size]):
                    outgoing.append(OutRecord(event.topic, event.key, event.encode()))
        except _Stopping:
            log.info("worker %s stopping mid-batch; unhandled records stay uncommitted", self.group)
        if outgoing:
            await self._bus.publish(outgoing)
            for topic, n in collections.Counter(out.topic for out in outgoing).items():
                metrics.MESSAGES_PUBLISHED.labels(topic).inc(n)
        if time.monotonic() - self._committed_at >= self._commit_interval:
            self._commit_soon(consumer)

    async def _handle_chunk(self, records: list[Record]) -> list[Outgoing]:
        """Handles records in order and marks each as done (to commit); with a batch handler,
        all of them in one call, falling back to one by one when that call fails."""
        if self._batch_handler is not None and len(records) > 1:
            decoded: list[tuple[Record, Envelope]] = []
            for record in records:
                try:
                    decoded.append((record, decode(record.topic, record.value)))
                except ContractError:
                    break  # one by one below: it is dead-lettered there
            else:
                started = time.perf_counter()
                try:
                    result = list(await self._batch_handler([event for _, event in decoded]))
                except Exception as exc:
                    log.info(
                        "worker %s: a batch of %d failed (%s: %s); handling its records one by one",
                        self.group,
                        len(records),
                        type(exc).__name__,
                        exc,
                    )
                else:
                    self._observe_batch(decoded, time.perf_counter() - started)
                    return result
        outgoing: list[Outgoing] = []
        for record in records:
            outgoing.extend(await self._handle_one(record))
            self._pending[record.topic_partition] = record.offset + 1
        return outgoing

    def _commit_soon(self, consumer: Consumer) -> None:
        """Commits what was handled in a task of its own, unless one is in flight (what was
        handled meanwhile goes with the next): the worker goes on handling while the broker
        takes it. Kafka's consumer retries a commit until the group's coordinator answers,
        and while a broker that died was coordinating the group that is 10 s or more."""
        if not self._pending or (self._committing is not None and not self._committing.done()):
            return
        if time.monotonic() < self._commit_retry_at:
            return
        offsets, self._pending = self._pending, {}
        self._committed_at = time.monotonic()
        self._committing = asyncio.create_task(
            self._send_commit(consumer, offsets), name=f"commit {self.group}"
        )

    async def _commit(self, consumer: Consumer) -> None:
        """Commits everything handled before returning (a revocation, the worker's stop): the
        commit in flight first (what it could not commit comes back to _pending), then what is
        left, each for at most COMMIT_TIMEOUT."""
        if self._committing is not None:
            await self._committing  # _send_commit raises nothing but its cancellation
        if not self._pending:
            return
        offsets, self._pending = self._pending, {}
        self._committed_at = time.monotonic()
        await self._send_commit(consumer, offsets)

    async def _send_commit(self, consumer: Consumer, offsets: dict[TopicPartition, int]) -> None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(consumer.commit(offsets), COMMIT_TIMEOUT)
        except Exception as exc:
            why = str(exc) or f"no answer within {COMMIT_TIMEOUT:g} s"
            # What this member still owns is committed with the next commit (records handled
            # again after a crash meanwhile are recognised by the handlers' inboxes); what moved
            # to another member is that member's to handle again.
            owned = consumer.assignment()
            kept = {tp: o for tp, o in offsets.items() if tp in owned}
            for tp, offset in kept.items():
                self._pending[tp] = max(offset, self._pending.get(tp, offset))
            self._commit_retry_at = time.monotonic() + COMMIT_RETRY_WAIT
            log.warning(
                "worker %s could not commit %s (%s: %s); %s",
                self.group,
                offsets,
                type(exc).__name__,
                why,
                "kept for the next commit" if kept else "the partitions moved",
            )
        else:
            took = time.monotonic() - started
            if took > COMMIT_TIMEOUT / 3:
                log.warning("worker %s: a commit took %.1f s", self.group, took)

    async def _report_lag(self, consumer: Consumer, waiting: Sequence[Record] = ()) -> None:
        """Sets the lag of the partitions this member owns, and drops those it lost, so each
        partition is reported by one process only. The lag is what lies beyond the member's
        position plus `waiting`, the records fetched but not handled yet (between batches, none).
        """
        now = time.monotonic()
        if now - self._lag_reported_at < self._lag_interval:
            return
        self._lag_reported_at = now
        try:
            lag = await consumer.lag()
        except Exception as exc:
            # A metric is not worth stopping the work for; the gauge goes stale, and says so here.
            log.warning("worker %s could not read its consumer lag: %s", self.group, exc)
            return
        for record in waiting:
            if record.topic_partition in lag:
                lag[record.topic_partition] += 1
        for (topic, partition), records in lag.items():
            metrics.CONSUMER_LAG.labels(self.group, topic, str(partition)).set(records)
        self._forget_lag(self._lag_series - lag.keys())
        self._lag_series = set(lag)

    def _forget_lag(self, partitions: set[TopicPartition]) -> None:
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):  # never reported
                metrics.CONSUMER_LAG.remove(self.group, topic, str(partition))

    async def _report_lag_while_retrying(self, record: Record) -> None:
        """The lag, while a record's handler is retried (the database or the broker may be away
        for minutes, and the loop does not get back to reporting it): the records from this one
        on are still to handle. Only on a retry, so handling costs nothing more."""
        if self._consumer is None:
            return
        at = next((i for i, r in enumerate(self._batch) if r is record), len(self._batch))
        await self._report_lag(self._consumer, self._batch[at:])

    async def _handle_one(self, record: Record) -> Sequence[Outgoing]:
        started = time.perf_counter()
        try:
            try:
                event = decode(record.topic, record.value)
            except ContractError as exc:
                await self._dead_letter(record, "contract", str(exc))
                return ()
            attempt = 0
            waited = logged_at = 0.0  # seconds waited on this record; when last logged
            while True:
                attempt += 1
                try:
                    result = await self._handler(event)
                except Rejected as exc:
                    await self._dead_letter(record, "rejected", str(exc))
                    return ()
                except Exception as exc:
                    transient = is_transient(exc)
                    kind = "transient" if transient else "error"
                    metrics.HANDLER_RETRIES.labels(self.group, record.topic, kind).inc()
                    if not transient and attempt >= self._retry.max_attempts:
                        log.exception(
                            "worker %s: %s@%s/%s failed %d times; dead-lettering",
                            self.group,
                            record.topic,
                            record.partition,
                            record.offset,
                            attempt,
                        )
                        await self._dead_letter(record, "error", f"{type(exc).__name__}: {exc}")
                        return ()
                    delay = self._retry.delay(min(attempt, 16), transient=transient)
                    if attempt <= 3 or waited - logged_at >= self._retry.transient_log_interval:
                        logged_at = waited
                        log.warning(
                            "worker %s: %s error on %s@%s/%s (attempt %d, %.0fs so far), "
                            "retrying in %.2fs: %s",
                            self.group,
                            kind,
                            record.topic,
                            record.partition,
                            record.offset,
                            attempt,
                            waited,
                            delay,
                            exc,
                        )
                    waited += delay
                    await self._report_lag_while_retrying(record)
                    if await self._sleep_or_stop(delay):
                        raise _Stopping from exc
                    continue
                metrics.MESSAGES_CONSUMED.labels(self.group, record.topic, "processed").inc()
                self._observe_stage(record.topic, event)
                return result
        finally:
            metrics.HANDLER_DURATION.labels(self.group, record.topic).observe(
                time.perf_counter() - started
            )

    def _observe_batch(self, done: Sequence[tuple[Record, Envelope]], seconds: float) -> None:
        """Marks a handled batch's records done and counts each (its share of the batch's time,
        its stage latency), with each metric's series looked up once per topic."""
        share = seconds / len(done)
        now = time.time()
        series: dict[str, tuple[Histogram, Histogram | None]] = {}
        for record, event in done:
            topic = record.topic
            if topic not in series:
                stage = STAGES.get(topic)
                series[topic] = (
                    metrics.HANDLER_DURATION.labels(self.group, topic),
                    metrics.PIPELINE_STAGE_LATENCY.labels(stage) if stage else None,
                )
            duration, latency = series[topic]
            duration.observe(share)
            if latency is not None and event.HasField("occurred_at"):
                occurred = event.occurred_at.seconds + event.occurred_at.nanos / 1e9
                latency.observe(max(0.0, now - occurred))
            self._pending[record.topic_partition] = record.offset + 1
        for topic, n in collections.Counter(record.topic for record, _ in done).items():
            metrics.MESSAGES_CONSUMED.labels(self.group, topic, "processed").inc(n)

    @staticmethod
    def _observe_stage(topic: str, event: Envelope) -> None:
        stage = STAGES.get(topic)
        if stage is not None and event.HasField("occurred_at"):
            latency = metrics.seconds_between(from_timestamp(event.occurred_at), datetime.now(UTC))
            metrics.PIPELINE_STAGE_LATENCY.labels(stage).observe(latency)

    async def _sleep_or_stop(self, delay: float) -> bool:
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except TimeoutError:
            return False
        return True

    async def _dead_letter(self, record: Record, reason_class: str, reason: str) -> None:
        log.error(
            "worker %s: dead-lettering %s@%s/%s (%s): %s",
            self.group,
            record.topic,
            record.partition,
            record.offset,
            reason_class,
            reason,
        )
        headers = (
            *record.headers,
            ("plaza-dlq-reason", reason.encode()[:4000]),
            ("plaza-dlq-reason-class", reason_class.encode()),
            ("plaza-dlq-group", self.group.encode()),
            ("plaza-dlq-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
            ("plaza-dlq-at", str(int(time.time() * 1000)).encode()),
        )
        await self._bus.publish(
            [OutRecord(f"{record.topic}.dlq", record.key, record.value, headers)]
        )
        metrics.DEAD_LETTERS.labels(self.group, record.topic, reason_class).inc()
        metrics.MESSAGES_CONSUMED.labels(self.group, record.topic, "dead_lettered").inc()
