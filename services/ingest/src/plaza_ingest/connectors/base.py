"""What a platform adapter implements to bring posts into Plaza: a Connector."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from plaza.posts import PostIn


@dataclass(frozen=True, slots=True)
class Deletion:
    """A post deleted on its platform, as the platform announced it: `author_id` is the account
    that deleted it when the platform says (a Bluesky repo's DID), else empty."""

    platform: str
    post_id: str
    author_id: str = ""
    deleted_at: datetime | None = None
    location_only: bool = False  # only the post's location was taken off it (X's scrub_geo)


@dataclass(frozen=True, slots=True)
class Batch:
    """Posts in the platform's order, and the cursor that is valid once they are on the bus;
    and posts deleted meanwhile (the runner hands on those Plaza has).

    An empty batch says "connected and caught up": the runner stores its cursor if it moved and
    resets its reconnect backoff."""

    posts: Sequence[PostIn]
    cursor: str
    deletions: Sequence[Deletion] = ()


class RetryAfter(Exception):
    """The platform asked us to wait (a 429, an exhausted rate-limit budget) before reconnecting."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(f"{reason}; retrying in {seconds:.1f}s")
        self.seconds = seconds


class Connector(Protocol):
    """One live source of posts on one platform (a Mastodon account's mentions, a hashtag, a
    Bluesky account's mentions on Jetstream, X's filtered stream...).

    `batches(cursor)` is one connection: it connects, catches up on what was posted after
    `cursor` (None on the very first start: begin from now), then follows the live stream,
    yielding batches in order. It returns or raises when the connection is lost; the runner
    then waits (backoff with jitter, or RetryAfter) and calls it again with the stored cursor.
    It may yield a post twice (catch-up and stream overlap): the runner drops repeats."""

    @property
    def name(self) -> str:
        """Unique and stable, the key of its durable cursor: "mastodon:bcn.social:mentions"."""
        ...

    @property
    def platform(self) -> str:
        """The `platform` of its posts (mastodon, bluesky, x): (platform, post_id) is unique."""
        ...

    def batches(self, cursor: str | None) -> AsyncIterator[Batch]: ...
