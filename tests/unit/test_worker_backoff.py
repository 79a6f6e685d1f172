"""A worker whose database is away retries with waits that stay short, so it resumes within
seconds of the database's return however long it was away, and says so at most every 30 s.
Time is the test's: the worker's sleep advances a clock, and the jitter is its worst."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest
from plaza import worker as worker_module
from plaza.bus import OutRecord
from plaza.bus.memory import MemoryBus
from plaza.contracts import TOPICS, Envelope, Outgoing, Post, PostReceived, envelope
from plaza.worker import Worker

SOURCE = TOPICS.POST_RECEIVED


class DatabaseAway:
    """A handler whose database refuses connections until `back_at` on the test's clock."""

    def __init__(self, back_at: float) -> None:
        self.now = 0.0
        self.back_at = back_at
        self.handled_at: float | None = None
        self.attempts = 0

    async def __call__(self, event: Envelope) -> Sequence[Outgoing]:
        self.attempts += 1
        if self.now < self.back_at:
            raise ConnectionRefusedError("connect call failed ('127.0.0.1', 5432)")
        self.handled_at = self.now
        return ()


async def outage(seconds: float, monkeypatch: pytest.MonkeyPatch) -> DatabaseAway:
    """Runs a worker over one record through an outage of `seconds`; the handler's record."""
    monkeypatch.setattr(worker_module.random, "uniform", lambda low, high: high)
    bus = MemoryBus()
    await bus.create_topics([SOURCE.topic, SOURCE.dead_letter_topic], 1)
    post = Post(platform="test", post_id="1", author_handle="@a", text="a pothole")
    event = envelope(PostReceived(post=post), key="k", event_id="e1", correlation_id="c")
    await bus.publish([OutRecord(event.topic, event.key, event.encode())])
    handler = DatabaseAway(back_at=seconds)
    worker = Worker(bus, group="backoff", topics=[SOURCE], handler=handler)

    async def sleep(delay: float) -> bool:
        handler.now += delay
        if handler.handled_at is not None:
            worker.stop()
        return False

    monkeypatch.setattr(worker, "_sleep_or_stop", sleep)
    task = asyncio.create_task(worker.run())
    for _ in range(10_000):
        if handler.handled_at is not None:
            break
        await asyncio.sleep(0)
    worker.stop()
    await asyncio.wait_for(task, 10)
    assert handler.handled_at is not None, "the record was never handled"
    return handler


@pytest.mark.parametrize("seconds", [2.0, 10.0, 60.0, 3600.0])
async def test_a_worker_resumes_within_seconds_of_the_database_return(
    seconds: float, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="plaza.worker"):
        handler = await outage(seconds, monkeypatch)
    assert handler.handled_at is not None
    assert handler.handled_at - seconds <= 5.0  # idle at most one short wait after its return
    # A long outage is not hammered: one attempt per 5 s once the waits reach their cap.
    assert handler.attempts <= 6 + seconds / 5 + 1
    retries = [r for r in caplog.records if "transient error" in r.getMessage()]
    assert len(retries) <= 3 + seconds / 30 + 1  # the first three, then one per 30 s
    assert "(attempt 1, 0s so far)" in retries[0].getMessage()
