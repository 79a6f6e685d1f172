"""A worker goes on handling records while its commit waits on the broker: a consumer group's
coordinator that is slow or gone (a broker SIGKILLed) holds up no post. A commit that fails or
takes too long is given up and its offsets go with the next one, so nothing handled is left
uncommitted for good; a clean stop still commits, waiting at most COMMIT_TIMEOUT."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

import pytest
from plaza import worker as worker_module
from plaza.bus import OutRecord, TopicPartition
from plaza.bus.memory import MemoryBus, MemoryConsumer
from plaza.contracts import TOPICS, Envelope, Outgoing, Post, PostReceived, envelope
from plaza.worker import Worker

SOURCE = TOPICS.POST_RECEIVED
GROUP = "commits"


class Coordinator:
    """Stands between the worker's consumer and the bus's commit: `hang` makes every commit
    wait until released, `fail` makes the next n commits raise."""

    def __init__(self) -> None:
        self.hang = False
        self.fail = 0
        self.attempts = 0
        self.released = asyncio.Event()

    def wrap(self, consumer: MemoryConsumer) -> MemoryConsumer:
        commit = consumer.commit

        async def guarded(offsets: Mapping[TopicPartition, int]) -> None:
            self.attempts += 1
            if self.hang:
                await self.released.wait()
            if self.fail:
                self.fail -= 1
                raise ConnectionError("coordinator (node 2) is not available")
            await commit(offsets)

        consumer.commit = guarded  # type: ignore[method-assign]
        return consumer


class Handled:
    def __init__(self) -> None:
        self.posts: list[str] = []

    async def __call__(self, event: Envelope) -> Sequence[Outgoing]:
        self.posts.append(event.post_received.post.post_id)
        return ()


async def publish(bus: MemoryBus, ids: range) -> None:
    records = []
    for n in ids:
        post = Post(platform="test", post_id=str(n), author_handle="@a", text="a pothole")
        event = envelope(PostReceived(post=post), key=str(n), event_id=f"e{n}", correlation_id="c")
        records.append(OutRecord(event.topic, event.key, event.encode()))
    await bus.publish(records)


async def started(
    coordinator: Coordinator,
) -> tuple[MemoryBus, Worker, Handled, asyncio.Task[None]]:
    bus = MemoryBus()
    await bus.create_topics([SOURCE.topic, SOURCE.dead_letter_topic], 1)
    subscribe = bus.subscribe

    async def subscribing(group: str, topics: Sequence[str], **kw: object) -> MemoryConsumer:
        return coordinator.wrap(await subscribe(group, topics, **kw))  # type: ignore[arg-type]

    bus.subscribe = subscribing  # type: ignore[method-assign]
    handled = Handled()
    worker = Worker(bus, group=GROUP, topics=[SOURCE], handler=handled, poll_timeout=0.05)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 5)
    return bus, worker, handled, task


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Polls what the worker does in its own task (it offers no event to wait on)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


async def test_records_are_handled_while_a_commit_hangs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(worker_module, "COMMIT_TIMEOUT", 0.5)
    coordinator = Coordinator()
    coordinator.hang = True
    bus, worker, handled, task = await started(coordinator)
    with caplog.at_level(logging.WARNING, logger="plaza.worker"):
        await publish(bus, range(3))
        await until(lambda: len(handled.posts) == 3)
        await until(lambda: coordinator.attempts >= 1)  # a commit is in flight, and hangs
        # Posts that come while it hangs are handled all the same (they waited for it before).
        await publish(bus, range(3, 6))
        await until(lambda: len(handled.posts) == 6, timeout=0.4)
        assert bus.committed(GROUP) == {}
        # The hung commit is given up after COMMIT_TIMEOUT; once the coordinator answers, the
        # next commit carries everything handled.
        await until(lambda: any("could not commit" in r.getMessage() for r in caplog.records))
        coordinator.hang = False
        coordinator.released.set()
        await until(lambda: bus.committed(GROUP) == {(SOURCE.topic, 0): 6})
        worker.stop()
        await asyncio.wait_for(task, 5)
    failed = [r.getMessage() for r in caplog.records if "could not commit" in r.getMessage()]
    assert "TimeoutError: no answer within 0.5 s" in failed[0], failed
    assert "kept for the next commit" in failed[0], failed
    assert handled.posts == [str(n) for n in range(6)]


async def test_a_failed_commit_is_retried_with_the_next_and_nothing_is_left_uncommitted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(worker_module, "COMMIT_RETRY_WAIT", 0.05)
    coordinator = Coordinator()
    coordinator.fail = 2
    bus, worker, _, task = await started(coordinator)
    with caplog.at_level(logging.WARNING, logger="plaza.worker"):
        await publish(bus, range(4))
        # No more records come: the idle worker retries until the commit goes through.
        await until(lambda: bus.committed(GROUP) == {(SOURCE.topic, 0): 4})
        worker.stop()
        await asyncio.wait_for(task, 5)
    assert coordinator.attempts == 3
    failed = [r.getMessage() for r in caplog.records if "could not commit" in r.getMessage()]
    assert len(failed) == 2 and "ConnectionError: coordinator (node 2)" in failed[0], failed


async def test_a_stop_commits_what_was_handled_but_waits_for_a_hung_commit_no_longer_than_its_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "COMMIT_TIMEOUT", 0.3)
    coordinator = Coordinator()
    bus, worker, handled, task = await started(coordinator)
    await publish(bus, range(2))
    await until(lambda: bus.committed(GROUP) == {(SOURCE.topic, 0): 2})
    coordinator.hang = True
    await publish(bus, range(2, 5))
    await until(lambda: len(handled.posts) == 5)
    worker.stop()
    loop = asyncio.get_running_loop()
    stopping = loop.time()
    await asyncio.wait_for(task, 5)
    # The commit in flight, then the last one: each given up after its 0.3 s.
    assert loop.time() - stopping < 1.5
    assert bus.committed(GROUP) == {(SOURCE.topic, 0): 2}
