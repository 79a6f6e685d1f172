"""Which consumers wait at the broker for fuller fetches: only those of the topics ingest writes
a post at a time as they come (post-received, post-withdrawn). The others are written a batch at
a time by Plaza's own stages (a worker's batch of outgoing events, a round of the outbox relay),
and a worker consuming them asks the bus to take each batch as it arrives (KafkaBus then ends a
fetch on the first records: tests/integration/test_kafka_pacing.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from plaza.bus.memory import MemoryBus, MemoryConsumer
from plaza.contracts import TOPICS, Envelope, EventType, Outgoing
from plaza.posts import PostIn
from plaza.worker import Worker
from plaza_ingest.publish import post_received, post_withdrawn


def test_only_what_ingest_writes_post_by_post_is_not_written_in_batches() -> None:
    post = PostIn(
        platform="mastodon",
        post_id="1",
        author_handle="@veina",
        text="Fanal apagat al carrer de Sants",
        created_at=datetime(2026, 11, 29, tzinfo=UTC),
    )
    by_ingest = {
        TOPICS.by_topic(event.topic)
        for event in (
            post_received(post, "webhook"),
            post_withdrawn("mastodon", "1", channel="webhook"),
        )
    }
    assert {t for t in TOPICS.all() if not t.written_in_batches} == by_ingest


async def _nothing(event: Envelope) -> Sequence[Outgoing]:
    return ()


@pytest.mark.parametrize(
    ("topics", "in_batches"),
    [
        ([TOPICS.POST_CLASSIFIED], True),  # the router's: the classifier's batches
        ([TOPICS.REPLY_REQUESTED], True),  # the notifier's: the relay's rounds
        ([TOPICS.POST_RECEIVED], False),  # the classifier's: posts as they come
        ([TOPICS.POST_CLASSIFIED, TOPICS.POST_WITHDRAWN], False),  # one trickles: wait for more
    ],
)
async def test_a_worker_asks_for_records_as_they_arrive_only_when_all_its_topics_come_in_batches(
    topics: list[EventType], in_batches: bool
) -> None:
    bus = MemoryBus()
    await bus.create_topics([t.topic for t in topics], 1)
    asked: list[object] = []
    subscribe = bus.subscribe

    async def recording(group: str, names: Sequence[str], **kw: object) -> MemoryConsumer:
        asked.append(kw.get("written_in_batches"))
        return await subscribe(group, names, **kw)  # type: ignore[arg-type]

    bus.subscribe = recording  # type: ignore[method-assign]
    worker = Worker(bus, group="pacing", topics=topics, handler=_nothing, poll_timeout=0.05)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 5)
        assert asked == [in_batches]
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
