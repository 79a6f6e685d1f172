"""The event contracts: topics, envelopes, decoding errors, generated code and wire compatibility."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from plaza.contracts import (
    TOPICS,
    ContractError,
    Post,
    PostReceived,
    ReplyPosted,
    decode,
    derive_event_id,
    envelope,
    from_timestamp,
    post_key,
    timestamp,
)

from tests.infra import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import protocompat
import protogen


def received(post_id: str = "1") -> PostReceived:
    return PostReceived(
        post=Post(platform="mastodon", post_id=post_id, author_handle="@a", text="hola")
    )


def test_every_event_type_has_its_own_versioned_topic() -> None:
    topics = [t.topic for t in TOPICS.all()]
    assert len(set(topics)) == len(topics) == 9
    assert all(t.startswith("plaza.") and t.endswith(".v1") for t in topics)
    assert TOPICS.POST_RECEIVED.dead_letter_topic == "plaza.post-received.v1.dlq"


def test_an_envelope_round_trips_with_its_metadata() -> None:
    before = datetime.now(UTC)
    out = envelope(received(), key=post_key("mastodon", "1"), event_id="e1", correlation_id="c1")
    after = datetime.now(UTC)
    assert out.topic == "plaza.post-received.v1" and out.key == "mastodon:1"
    env = decode(out.topic, out.encode())
    assert (env.event_id, env.event_type, env.correlation_id, env.schema_version) == (
        "e1",
        "post-received",
        "c1",
        1,
    )
    assert env.post_received.post.text == "hola"
    assert before <= from_timestamp(env.occurred_at) <= after  # now, to the microsecond
    assert env.occurred_at.nanos % 1000 == 0


@pytest.mark.parametrize(
    ("topic", "value", "message"),
    [
        ("plaza.post-received.v1", b"\xff\xff\xff", "not a protobuf Envelope"),
        ("plaza.nowhere.v1", b"", "no event type"),
        ("plaza.post-classified.v1", None, "does not belong"),
        ("plaza.post-received.v1", b"", "no event_id"),
    ],
)
def test_records_that_break_the_contract_are_refused_with_a_reason(
    topic: str, value: bytes | None, message: str
) -> None:
    if value is None:
        value = envelope(received(), key="k", event_id="e", correlation_id="c").encode()
    with pytest.raises(ContractError, match=message):
        decode(topic, value)


@pytest.mark.parametrize(
    ("latitude", "longitude", "message"),
    [
        (float("nan"), 2.17, "latitude nan"),
        (41.39, float("inf"), "longitude inf"),
        (91.0, 2.17, "latitude 91.0 is not within ±90"),
        (41.39, -180.5, "longitude -180.5 is not within ±180"),
    ],
)
def test_a_post_whose_point_is_no_place_on_earth_is_refused(
    latitude: float, longitude: float, message: str
) -> None:
    body = received()
    body.post.latitude, body.post.longitude = latitude, longitude
    value = envelope(body, key="k", event_id="e", correlation_id="c").encode()
    with pytest.raises(ContractError, match=message):
        decode(TOPICS.POST_RECEIVED.topic, value)
    body.post.latitude, body.post.longitude = 90.0, -180.0  # the edges are places
    ok = envelope(body, key="k", event_id="e", correlation_id="c").encode()
    assert decode(TOPICS.POST_RECEIVED.topic, ok).post_received.post.latitude == 90.0


def test_a_future_schema_version_is_refused() -> None:
    out = envelope(received(), key="k", event_id="e", correlation_id="c")
    out.envelope.schema_version = 2
    with pytest.raises(ContractError, match="schema_version 2"):
        decode(out.topic, out.encode())


def test_envelope_refuses_what_is_not_an_event_and_naive_times() -> None:
    with pytest.raises(TypeError, match="not an event"):
        envelope(Post(), key="k", event_id="e", correlation_id="c")
    from datetime import datetime

    with pytest.raises(ValueError, match="timezone"):
        envelope(
            ReplyPosted(),
            key="k",
            event_id="e",
            correlation_id="c",
            occurred_at=datetime(2026, 1, 1),
        )


def test_derived_event_ids_are_stable_and_distinct() -> None:
    assert derive_event_id("a", "b") == derive_event_id("a", "b")
    assert derive_event_id("a", "b") != derive_event_id("ab")


@pytest.mark.parametrize("parts", [("a",), ("post-received", "bsky:3k2x"), ("", "ça", "€ 1")])
def test_derived_event_ids_are_uuid5_in_the_plaza_namespace(parts: tuple[str, ...]) -> None:
    # Ids already on the bus and in inboxes were made by uuid.uuid5: the fast path must agree.
    expected = uuid.uuid5(uuid.UUID("6f1c7a52-3d0e-4d7e-9a55-0b2c1e4d9a10"), "\x1f".join(parts))
    assert derive_event_id(*parts) == str(expected)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 27, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=2))),  # not UTC
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),  # before the epoch
        datetime(1, 1, 1, tzinfo=UTC),
    ],
)
def test_timestamps_are_what_protobuf_makes_of_them(value: datetime) -> None:
    # Events already on the bus were stamped by Timestamp.FromDatetime: the fast path agrees.
    expected = Timestamp()
    expected.FromDatetime(value.astimezone(UTC))
    assert timestamp(value) == expected
    assert from_timestamp(expected) == value == expected.ToDatetime(tzinfo=UTC)


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    for path in protogen.generate(tmp_path):
        committed = ROOT / "lib/plaza/src" / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run make proto"
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run make proto"


def test_the_contracts_keep_every_locked_field() -> None:
    locked = json.loads(protocompat.LOCK.read_text())
    now = protocompat.current()
    assert protocompat.breaking_changes(locked, now, protocompat.reserved_numbers()) == []
    for message, fields in now.items():
        assert set(fields) <= set(locked.get(message, {})), (
            f"{message} has unlocked fields: run make proto"
        )


def test_the_compatibility_check_catches_a_breaking_change() -> None:
    locked = {"plaza.contracts.v1.Post": {"2": "post_id:9:single", "99": "gone:9:single"}}
    now = {"plaza.contracts.v1.Post": {"2": "post_id:3:single"}}
    problems = protocompat.breaking_changes(locked, now, {})
    assert len(problems) == 2
    assert "changed" in problems[0] and "removed" in problems[1]
    assert protocompat.breaking_changes(locked, now, {"plaza.contracts.v1.Post": {2, 99}}) == []
