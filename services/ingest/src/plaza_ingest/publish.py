"""Turns accepted posts into post-received events on the bus."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from plaza.bus import Bus, OutRecord
from plaza.contracts import (
    Outgoing,
    PostReceived,
    PostWithdrawn,
    derive_event_id,
    envelope,
    post_key,
    timestamp,
)
from plaza.metrics import MESSAGES_PUBLISHED
from plaza.posts import PostIn


def post_received(post_in: PostIn, channel: str) -> Outgoing:
    """The event for one post. Its id derives from (platform, post_id): sending a post twice
    yields the same event, which downstream consumers recognise."""
    key = post_key(post_in.platform, post_in.post_id)
    event_id = derive_event_id("post-received", key)
    return envelope(
        PostReceived(post=post_in.to_post(channel)),
        key=key,
        event_id=event_id,
        correlation_id=event_id,
    )


def post_withdrawn(
    platform: str,
    post_id: str,
    *,
    channel: str,
    author_id: str = "",
    author_handle: str = "",
    withdrawn_at: datetime | None = None,
    location_only: bool = False,
) -> Outgoing:
    """The event for a post its author deleted (or, `location_only`, took its location off).
    Its id derives from the post, who deleted it and what: the same deletion seen twice (a
    stream's replay, a bridge's retry) is one event, while somebody else's refused attempt does
    not make the author's look like a redelivery, nor a location's removal the post's."""
    key = post_key(platform, post_id)
    what = ("location",) if location_only else ()
    event_id = derive_event_id("post-withdrawn", key, author_id, author_handle, *what)
    return envelope(
        PostWithdrawn(
            platform=platform,
            post_id=post_id,
            author_id=author_id,
            author_handle=author_handle,
            withdrawn_at=timestamp(withdrawn_at or datetime.now(UTC)),
            channel=channel,
            location_only=location_only,
        ),
        key=key,
        event_id=event_id,
        correlation_id=event_id,
    )


async def publish(bus: Bus, events: Sequence[Outgoing]) -> None:
    await bus.publish([OutRecord(e.topic, e.key, e.encode()) for e in events])
    for e in events:
        MESSAGES_PUBLISHED.labels(e.topic).inc()
