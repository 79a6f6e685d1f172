"""`plaza dead-letters`: list the records the workers dead-lettered, and send them back to their topic.

A worker writes a record it gave up on to `<topic>.dlq` with why in its headers (plaza.worker);
once the cause is fixed (a bug, a database that was away), the operator replays it: the same
key and value go back onto the source topic, and the worker handles it as it would have.
Replaying one twice changes nothing: every handler recognises an event it has handled (its
inbox), as after any redelivery. Reading never commits: each listing reads every dead letter
still kept (the topics' retention decides how long)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from plaza.bus import Bus, OutRecord, Record
from plaza.contracts import TOPICS

# Set on a replayed record: where in the dead-letter topic it came from.
REPLAYED_FROM = "plaza-replayed-from"
IDLE_SECONDS = 2.0
"""A dead-letter topic is read to its end once no record came for this long."""


class DeadLetterError(ValueError):
    """A dead-letter topic or position that does not exist, named in the message."""


def dead_letter_topic(name: str) -> str:
    """The dead-letter topic an operator names: `post-classified`, `plaza.post-classified.v1`
    or `plaza.post-classified.v1.dlq` are the same one."""
    for event_type in TOPICS.all():
        if name in (event_type.name, event_type.topic, event_type.dead_letter_topic):
            return event_type.dead_letter_topic
    known = ", ".join(t.name for t in TOPICS.all())
    raise DeadLetterError(f"no topic {name!r}: one of {known}")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-lettered record and what its headers say about it."""

    record: Record

    @property
    def position(self) -> str:
        return f"{self.record.partition}/{self.record.offset}"

    @property
    def source_topic(self) -> str:
        return self.record.topic.removesuffix(".dlq")

    def _header(self, name: str) -> str:
        value = self.record.header(name)
        return value.decode(errors="replace") if value is not None else "?"

    def line(self) -> str:
        """One line: where, when, which group gave up, why, and where it was first."""
        at = self._header("plaza-dlq-at")
        when = (
            datetime.fromtimestamp(int(at) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            if at.isdigit()
            else "?"
        )
        reason = " ".join(self._header("plaza-dlq-reason").split())
        return (
            f"{self.record.topic} {self.position}  {when}  {self._header('plaza-dlq-group')}  "
            f"{self._header('plaza-dlq-reason-class')}: {reason}  "
            f"(from {self._header('plaza-dlq-source')}, key {self.record.key})"
        )


async def read(bus: Bus, topics: Sequence[str]) -> list[DeadLetter]:
    """Every record kept in the dead-letter `topics`, in partition and offset order, read by a
    group of its own that commits nothing."""
    consumer = await bus.subscribe(f"plaza-dead-letters-{uuid.uuid4().hex[:12]}", list(topics))
    records: list[Record] = []
    try:
        while batch := await consumer.fetch(500, IDLE_SECONDS):
            records.extend(batch)
    finally:
        await consumer.close()
    records.sort(key=lambda r: (r.topic, r.partition, r.offset))
    return [DeadLetter(r) for r in records]


def chosen(letters: Sequence[DeadLetter], positions: Sequence[str]) -> list[DeadLetter]:
    """The dead letters at `positions` (`partition/offset`, as listed); every one of them."""
    by_position = {letter.position: letter for letter in letters}
    missing = [p for p in positions if p not in by_position]
    if missing:
        raise DeadLetterError(
            f"no dead letter at {', '.join(missing)} (positions are partition/offset, "
            "as `plaza dead-letters list` shows them)"
        )
    return [by_position[p] for p in positions]


async def replay(bus: Bus, letters: Sequence[DeadLetter]) -> int:
    """Publishes each dead letter's key and value back onto its source topic; returns how many."""
    await bus.publish(
        [
            OutRecord(
                letter.source_topic,
                letter.record.key,
                letter.record.value,
                (
                    *((k, v) for k, v in letter.record.headers if not k.startswith("plaza-dlq-")),
                    (REPLAYED_FROM, f"{letter.record.topic}/{letter.position}".encode()),
                ),
            )
            for letter in letters
        ]
    )
    return len(letters)
