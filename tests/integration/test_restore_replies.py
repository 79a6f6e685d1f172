"""A town that restores a backup answers no citizen twice in public, on each platform's test
peer (the Bluesky PDS, the local Mastodon that ignores Idempotency-Key as GoToSocial does, the
local X): the replies sent between the backup and the restore are not in the database that
comes back, the posts they answered are read again from the restored cursors (here: routed
again, as ingest publishes them again) and the reply in flight at the backup comes back
pending. Each of them is looked for in the thread first; a post made after the restore is
answered with no lookup."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from plaza.contracts import Envelope, PostClassified
from plaza_cli.backup import backup, restore
from plaza_notifier.bluesky import BlueskyChannel
from plaza_notifier.channels import ReplyChannel
from plaza_notifier.delivery import Deliverer, DeliveryPolicy
from plaza_notifier.handler import PostReply
from plaza_notifier.mastodon import MastodonChannel
from plaza_notifier.x import XChannel
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.integration.bluesky_helpers import account
from tests.integration.lifecycle_helpers import as_event, classified, router
from tests.integration.social_helpers import Places, deliver_until, routed
from tests.peers.bluesky import BlueskyPeer
from tests.peers.mastodon import FakeMastodon
from tests.peers.x_api import FakeX

pytestmark = pytest.mark.postgres

FAST = DeliveryPolicy(base_delay=0.05, max_delay=0.2, poll_interval=0.05)


@dataclass
class Peer:
    """One platform as the test drives it: a citizen posts, the city's replies are counted."""

    platform: str
    channel: ReplyChannel
    posts: Callable[[str], Awaitable[str]]  # the post's id in Plaza
    replies: Callable[[str], Awaitable[int]]  # the city's replies to a post
    calls: list[httpx.Request]  # what the channel asked its platform
    lookup: str  # what a call that looks for the city's reply asks: its path, or its query

    def lookups(self, since: int = 0) -> int:
        """The channel's calls that looked for the city's replies, from call `since` on."""
        return sum(1 for r in self.calls[since:] if self.lookup in unquote(str(r.url)))


@contextlib.asynccontextmanager
async def peer_of(platform: str, request: pytest.FixtureRequest) -> AsyncIterator[Peer]:
    calls: list[httpx.Request] = []

    async def called(req: httpx.Request) -> None:
        calls.append(req)

    async with httpx.AsyncClient(timeout=10, event_hooks={"request": [called]}) as http:
        if platform == "mastodon":
            with FakeMastodon(honour_idempotency=False) as mastodon:

                async def toot(text: str) -> str:
                    return str(mastodon.citizen_posts(text)["id"])

                async def toots(post_id: str) -> int:
                    return len(mastodon.replies_to(post_id))

                yield Peer(
                    platform,
                    MastodonChannel(mastodon.account(), http),
                    toot,
                    toots,
                    calls,
                    "/context",
                )
        elif platform == "x":
            with FakeX() as x:

                async def tweet(text: str) -> str:
                    return str(x.citizen_posts(text)["id"])

                async def tweets(post_id: str) -> int:
                    return len(x.replies_to(post_id))

                channel = XChannel(x.account(), http)
                yield Peer(platform, channel, tweet, tweets, calls, "/2/users/")
        else:
            peer: BlueskyPeer = request.getfixturevalue("bluesky_peer")
            channel = BlueskyChannel(account(peer), http)

            async def skeet(text: str) -> str:
                async with peer.session(peer.citizens[0]) as marta:
                    body = f"@{peer.city.handle} {text}"
                    return (await marta.post(body, mentions=[peer.city], langs=["ca"])).uri

            async def skeets(post_id: str) -> int:
                return sum(
                    1
                    for r in await peer.city_replies()
                    if r["value"]["reply"]["parent"]["uri"] == post_id
                )

            # getRecord or listRecords in the city's own repo
            yield Peer(platform, channel, skeet, skeets, calls, f"repo={peer.city.did}")


async def answered(
    sessions: async_sessionmaker[AsyncSession],
    peer: Peer,
    post: PostClassified,
    *,
    deliver: bool = True,
) -> Envelope:
    """The post routed into a request, its acknowledgement handed to the notifier and, unless
    said, posted."""
    ask = await routed(sessions, post)
    await PostReply(sessions, {peer.platform: peer.channel})(ask)
    if deliver:
        deliverer = Deliverer(sessions, {peer.platform: peer.channel}, FAST)
        await deliver_until(deliverer, sessions, [ask.reply_requested.reply_id], {"posted"})
    return ask


@pytest.mark.parametrize("platform", ["mastodon", "x", "bluesky"])
async def test_a_restored_backup_answers_no_post_twice(
    platform: str,
    request: pytest.FixtureRequest,
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    places = Places(41.400, 2.15)

    def citizens(post_id: str, text: str) -> PostClassified:
        post = classified(post_id, latlon=places.next(), text=text, at=datetime.now(UTC))
        post.post.platform = platform
        return post

    async with peer_of(platform, request) as peer:
        posts = {
            name: await peer.posts(f"El fanal {name} del carrer de Verdi no funciona")
            for name in ("before", "in_flight", "after")
        }
        made = {name: citizens(post_id, name) for name, post_id in posts.items()}
        await answered(sessions, peer, made["before"])
        in_flight = await answered(sessions, peer, made["in_flight"], deliver=False)
        await backup(database_url, tmp_path / "home", "Barcelona", tmp_path / "b.tar")

        # Between the backup and the restore: the reply in flight goes, and a new post is
        # answered; neither is in the backup.
        deliverer = Deliverer(sessions, {platform: peer.channel}, FAST)
        await deliver_until(deliverer, sessions, [in_flight.reply_requested.reply_id], {"posted"})
        await answered(sessions, peer, made["after"])
        assert [await peer.replies(p) for p in posts.values()] == [1, 1, 1]

        await engine.dispose()
        await restore(database_url, tmp_path / "home", tmp_path / "b.tar")

        # The restarted Plaza: a bridge's post comes first (the request numbers move on), then
        # ingest reads again what came since the backup's cursor, then a citizen posts anew.
        bridge = classified("bridge-1", latlon=(41.39, 2.17), text="Un contenidor cremat")
        bridge.post.platform = "webhook"
        await router(sessions)(as_event(bridge))
        again = await answered(sessions, peer, made["after"], deliver=False)
        deliverer = Deliverer(sessions, {platform: peer.channel}, FAST)
        looked = peer.lookups()
        ids = [r.reply_requested.reply_id for r in (in_flight, again)]
        await deliver_until(deliverer, sessions, ids, {"posted"})
        assert peer.lookups() > looked  # each was looked for, and found
        posts["new"] = await peer.posts("El fanal nou del carrer de Verdi no funciona")
        new = await answered(sessions, peer, citizens(posts["new"], "new"), deliver=False)
        calls = len(peer.calls)
        await deliver_until(deliverer, sessions, [new.reply_requested.reply_id], {"posted"})
        assert {name: await peer.replies(p) for name, p in posts.items()} == {
            "before": 1,
            "in_flight": 1,
            "after": 1,
            "new": 1,
        }
        assert peer.lookups(since=calls) == 0  # a post made after the restore: no lookup
