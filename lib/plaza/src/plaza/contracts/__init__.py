"""Plaza's event contracts: the topics, their event types, and the envelope every record carries."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

# An enum's values as module constants: `Urgency.URGENCY_URGENT` goes through protobuf's
# EnumTypeWrapper.__getattr__ (0.7 us a lookup, several per post on the hot paths).
from plaza.contracts.v1.events_pb2 import (
    LOCATION_SOURCE_GEO,
    LOCATION_SOURCE_NONE,
    LOCATION_SOURCE_TEXT,
    REPLY_KIND_ACKNOWLEDGED,
    REPLY_KIND_ASSIGNED,
    REPLY_KIND_DELAYED,
    REPLY_KIND_DUPLICATE,
    REPLY_KIND_NOT_ACTIONABLE,
    REPLY_KIND_NOT_RESPONSIBLE,
    REPLY_KIND_RESOLVED,
    REPLY_KIND_TRANSFERRED,
    URGENCY_NORMAL,
    URGENCY_URGENT,
    Envelope,
    LocationSource,
    Placement,
    Post,
    PostClassified,
    PostReceived,
    PostWithdrawn,
    ReplyKind,
    ReplyPosted,
    ReplyRequested,
    RequestCreated,
    RequestMerged,
    RequestSlaBreached,
    RequestStatusChanged,
    Urgency,
)

__all__ = [
    "LOCATION_SOURCE_GEO",
    "LOCATION_SOURCE_NONE",
    "LOCATION_SOURCE_TEXT",
    "REPLY_KIND_ACKNOWLEDGED",
    "REPLY_KIND_ASSIGNED",
    "REPLY_KIND_DELAYED",
    "REPLY_KIND_DUPLICATE",
    "REPLY_KIND_NOT_ACTIONABLE",
    "REPLY_KIND_NOT_RESPONSIBLE",
    "REPLY_KIND_RESOLVED",
    "REPLY_KIND_TRANSFERRED",
    "SCHEMA_VERSION",
    "TOPICS",
    "URGENCY_NORMAL",
    "URGENCY_URGENT",
    "ContractError",
    "Envelope",
    "EventType",
    "LocationSource",
    "Outgoing",
    "Placement",
    "Post",
    "PostClassified",
    "PostReceived",
    "PostWithdrawn",
    "ReplyKind",
    "ReplyPosted",
    "ReplyRequested",
    "RequestCreated",
    "RequestMerged",
    "RequestSlaBreached",
    "RequestStatusChanged",
    "Urgency",
    "decode",
    "derive_event_id",
    "envelope",
    "from_timestamp",
    "post_key",
    "timestamp",
]

SCHEMA_VERSION: Final = 1
_NAMESPACE = uuid.UUID("6f1c7a52-3d0e-4d7e-9a55-0b2c1e4d9a10")
_NAMESPACE_BYTES = _NAMESPACE.bytes


@dataclass(frozen=True, slots=True)
class EventType:
    """One kind of event: its name, its topic and the envelope field that holds it.

    `written_in_batches`: whether Plaza's own batching stages write its topic, a batch at a time
    (a worker's batch of outgoing events, a round of the outbox relay), rather than a post at a
    time as they come (ingest: webhooks, streams). A consumer of such a topic gains nothing by
    waiting at the broker for more records: what arrives together is already a batch."""

    name: str
    body_field: str
    written_in_batches: bool = True

    @property
    def topic(self) -> str:
        return f"plaza.{self.name}.v1"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic}.dlq"


class TOPICS:
    POST_RECEIVED: Final = EventType("post-received", "post_received", written_in_batches=False)
    POST_CLASSIFIED: Final = EventType("post-classified", "post_classified")
    REQUEST_CREATED: Final = EventType("request-created", "request_created")
    REQUEST_STATUS_CHANGED: Final = EventType("request-status-changed", "request_status_changed")
    REPLY_REQUESTED: Final = EventType("reply-requested", "reply_requested")
    REPLY_POSTED: Final = EventType("reply-posted", "reply_posted")
    REQUEST_MERGED: Final = EventType("request-merged", "request_merged")
    REQUEST_SLA_BREACHED: Final = EventType("request-sla-breached", "request_sla_breached")
    POST_WITHDRAWN: Final = EventType("post-withdrawn", "post_withdrawn", written_in_batches=False)

    @classmethod
    def all(cls) -> tuple[EventType, ...]:
        return tuple(v for v in vars(cls).values() if isinstance(v, EventType))

    @classmethod
    def by_topic(cls, topic: str) -> EventType:
        event_type = _BY_TOPIC.get(topic)
        if event_type is None:
            raise KeyError(f"no event type is published on topic {topic!r}")
        return event_type


_BY_TOPIC: Final = {event_type.topic: event_type for event_type in TOPICS.all()}
_CARRIES_A_POST: Final = frozenset({TOPICS.POST_RECEIVED, TOPICS.POST_CLASSIFIED})


class ContractError(ValueError):
    """A record that does not satisfy the contract of its topic (a poison message)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An event ready to publish: topic, partition key and the encoded envelope."""

    topic: str
    key: str
    envelope: Envelope

    def encode(self) -> bytes:
        return self.envelope.SerializeToString(deterministic=True)


def post_key(platform: str, post_id: str) -> str:
    """The partition key of every event about one post."""
    return f"{platform}:{post_id}"


def derive_event_id(*parts: str) -> str:
    """A deterministic event id, so that re-processing a redelivered input re-emits the same
    events and consumers recognise them as already seen."""
    # uuid.uuid5 without its UUID object (the same string: RFC 4122 version 5, SHA-1 based).
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> Timestamp:
    """Timestamp.FromDatetime's value, computed directly (it took four times as long, on every
    event of every hop)."""
    if value.tzinfo is None:
        raise ValueError("datetimes on the bus must be timezone-aware")
    since = value - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def _now() -> Timestamp:
    """timestamp(datetime.now(UTC)) to the microsecond, without the datetime."""
    micros = time.time_ns() // 1000
    return Timestamp(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000)


def from_timestamp(ts: Timestamp) -> datetime:
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


_BODY_TYPES: dict[type[Message], EventType] = {
    PostReceived: TOPICS.POST_RECEIVED,
    PostClassified: TOPICS.POST_CLASSIFIED,
    RequestCreated: TOPICS.REQUEST_CREATED,
    RequestStatusChanged: TOPICS.REQUEST_STATUS_CHANGED,
    ReplyRequested: TOPICS.REPLY_REQUESTED,
    ReplyPosted: TOPICS.REPLY_POSTED,
    RequestMerged: TOPICS.REQUEST_MERGED,
    RequestSlaBreached: TOPICS.REQUEST_SLA_BREACHED,
    PostWithdrawn: TOPICS.POST_WITHDRAWN,
}


def envelope(
    body: Message,
    *,
    key: str,
    event_id: str,
    correlation_id: str,
    occurred_at: datetime | None = None,
) -> Outgoing:
    """Wraps an event body in the envelope of its topic."""
    event_type = _BODY_TYPES.get(type(body))
    if event_type is None:
        raise TypeError(f"{type(body).__name__} is not an event of the contract")
    env = Envelope(
        event_id=event_id,
        event_type=event_type.name,
        correlation_id=correlation_id,
        schema_version=SCHEMA_VERSION,
        occurred_at=timestamp(occurred_at) if occurred_at is not None else _now(),
    )
    getattr(env, event_type.body_field).CopyFrom(body)
    return Outgoing(topic=event_type.topic, key=key, envelope=env)


def decode(topic: str, value: bytes) -> Envelope:
    """Decodes and checks a record of `topic`; raises ContractError naming what is wrong."""
    try:
        event_type = TOPICS.by_topic(topic)
    except KeyError as exc:
        raise ContractError(str(exc)) from exc
    env = Envelope()
    try:
        env.ParseFromString(value)
    except DecodeError as exc:
        raise ContractError(f"not a protobuf Envelope: {exc}") from exc
    if not env.event_id:
        raise ContractError("envelope has no event_id")
    if env.schema_version != SCHEMA_VERSION:
        raise ContractError(
            f"schema_version {env.schema_version} is not supported (expected {SCHEMA_VERSION})"
        )
    if env.event_type != event_type.name:
        raise ContractError(
            f"event_type {env.event_type!r} does not belong on {topic} ({event_type.name!r})"
        )
    if env.WhichOneof("body") != event_type.body_field:
        raise ContractError(
            f"envelope body is {env.WhichOneof('body')!r}, expected {event_type.body_field!r}"
        )
    if event_type in _CARRIES_A_POST:
        _check_point(getattr(env, event_type.body_field).post)
    return env


def _check_point(post: Post) -> None:
    """A post's point, when it has one, is a place on Earth (WGS84 degrees): not NaN, not an
    infinity, within range. Whatever publishes onto the bus, a bad point stops here."""
    for field, value, limit in (
        ("latitude", post.latitude if post.HasField("latitude") else None, 90.0),
        ("longitude", post.longitude if post.HasField("longitude") else None, 180.0),
    ):
        if value is not None and not -limit <= value <= limit:  # False for NaN too
            raise ContractError(f"post {field} {value} is not within ±{limit:g} degrees")
