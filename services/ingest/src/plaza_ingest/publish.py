"""Turns accepted posts into post-received events on the bus."""

from __future__ import annotations

from collections.abc import Sequence

from plaza.bus import Bus, OutRecord
from plaza.contracts import Outgoing, PostReceived, derive_event_id, envelope, post_key
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


async def publish(bus: Bus, events: Sequence[Outgoing]) -> None:
    await bus.publish([OutRecord(e.topic, e.key, e.encode()) for e in events])
    for e in events:
        MESSAGES_PUBLISHED.labels(e.topic).inc()
