"""`plaza dead-letters` on both adapters: a record a worker gave up on is listed with why, and
once its cause is fixed, replayed onto its topic and handled; a second replay changes nothing."""

from __future__ import annotations

import pytest
from plaza.bus import Bus
from plaza.worker import Worker
from plaza_cli import dead_letters

from tests.integration.test_worker_runtime import (
    FAST,
    SOURCE,
    Recorder,
    post_event,
    publish,
    run_until,
)


async def test_a_dead_letter_is_listed_with_why_and_replayed_once_fixed(bus: Bus) -> None:
    await publish(bus, [post_event(1, "bug"), post_event(2)])
    broken = Recorder(fail={"bug": ValueError("a bug in the router")})
    worker = Worker(bus, group="w-dead", topics=[SOURCE], handler=broken, retry=FAST)
    await run_until(worker, lambda: "2" in broken.seen and broken.seen.count("1") >= 3)

    [letter] = await dead_letters.read(bus, [SOURCE.dead_letter_topic])
    assert letter.source_topic == SOURCE.topic and letter.record.key == "test:1"
    line = letter.line()
    assert line.startswith(f"{SOURCE.dead_letter_topic} {letter.position}  ")
    assert "w-dead  error: ValueError: a bug in the router" in line
    assert f"(from {SOURCE.topic}/" in line and "key test:1)" in line
    # Listing commits nothing: a second listing sees it too.
    assert [d.position for d in await dead_letters.read(bus, [SOURCE.dead_letter_topic])] == [
        letter.position
    ]
    with pytest.raises(dead_letters.DeadLetterError, match="no dead letter at 9/99"):
        dead_letters.chosen([letter], ["9/99"])

    # The bug fixed, the same group handles the replayed record, as it would have.
    fixed = Recorder()
    assert await dead_letters.replay(bus, dead_letters.chosen([letter], [letter.position])) == 1
    await run_until(
        Worker(bus, group="w-dead", topics=[SOURCE], handler=fixed, retry=FAST),
        lambda: fixed.seen == ["1"],
    )
    assert len(await dead_letters.read(bus, [SOURCE.dead_letter_topic])) == 1  # nothing new


def test_a_dead_letter_topic_is_named_as_the_operator_likes() -> None:
    for name in ("post-classified", "plaza.post-classified.v1", "plaza.post-classified.v1.dlq"):
        assert dead_letters.dead_letter_topic(name) == "plaza.post-classified.v1.dlq"
    with pytest.raises(
        dead_letters.DeadLetterError, match="no topic 'posts': one of post-received"
    ):
        dead_letters.dead_letter_topic("posts")
