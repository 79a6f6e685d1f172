"""The Bluesky peer is real and usable: a real PDS, its firehose re-served as Jetstream JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.peers.bluesky import (
    MENTION,
    POST,
    BlueskyPeer,
    XrpcError,
    tid,
    tiny_png,
)

Event = dict[str, Any]


@pytest.fixture
async def jetstream(bluesky_peer: BlueskyPeer) -> AsyncIterator[Callable[..., Any]]:
    """Opens Jetstream subscriptions (closed after the test)."""
    opened: list[ClientConnection] = []

    async def open_(**filters: Any) -> ClientConnection:
        ws = await connect(bluesky_peer.subscribe_url(**filters), open_timeout=10)
        opened.append(ws)
        return ws

    yield open_
    for ws in opened:
        await ws.close()


async def next_event(
    ws: ClientConnection, match: Callable[[Event], bool], timeout: float = 5.0
) -> Event:
    async with asyncio.timeout(timeout):
        while True:
            event: Event = json.loads(await ws.recv())
            if match(event):
                return event


def is_create(rkey: str) -> Callable[[Event], bool]:
    return lambda e: e["kind"] == "commit" and e["commit"]["rkey"] == rkey


async def test_a_post_mentioning_the_city_arrives_on_jetstream_with_its_facet(
    bluesky_peer: BlueskyPeer, jetstream: Callable[..., Any]
) -> None:
    peer = bluesky_peer
    ws = await jetstream(collections=[POST])
    text = "Bon dia @ajuntament.test, la font de la plaça del Sol no raja 💧"
    async with peer.session(peer.citizens[0]) as marta:
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        post = await marta.post(text, mentions=[peer.city], langs=["ca"])
        event = await next_event(ws, is_create(post.rkey))
        latency = loop.time() - sent_at

    assert latency < 3.0
    assert event["did"] == peer.citizens[0].did
    assert isinstance(event["time_us"], int)
    commit = event["commit"]
    assert commit["operation"] == "create"
    assert commit["collection"] == POST
    assert commit["cid"] == post.cid
    assert commit["rev"]
    record = commit["record"]
    assert record["$type"] == POST
    assert record["text"] == text
    assert record["langs"] == ["ca"]
    [facet] = record["facets"]
    assert facet["features"] == [{"$type": MENTION, "did": peer.city.did}]
    start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
    # UTF-8 byte offsets, not character offsets: "plaça" and the emoji come after, "Bon dia " before.
    assert text.encode()[start:end] == b"@ajuntament.test"


async def test_a_cursor_in_the_past_replays_and_one_in_the_future_does_not(
    bluesky_peer: BlueskyPeer, jetstream: Callable[..., Any]
) -> None:
    peer = bluesky_peer
    citizen = peer.citizens[1]
    live = await jetstream(collections=[POST], dids=[citizen.did])
    async with peer.session(citizen) as jordi:
        first = await jordi.post("@ajuntament.test hi ha un fanal apagat", mentions=[peer.city])
        second = await jordi.post("@ajuntament.test i un altre al costat", mentions=[peer.city])
    seen_first = await next_event(live, is_create(first.rkey))
    seen_second = await next_event(live, is_create(second.rkey))
    assert seen_first["time_us"] < seen_second["time_us"]

    # Resuming from the first event's cursor replays it, then what followed, in order.
    resumed = await jetstream(collections=[POST], dids=[citizen.did], cursor=seen_first["time_us"])
    replayed = [json.loads(await asyncio.wait_for(resumed.recv(), 5)) for _ in range(2)]
    assert replayed == [seen_first, seen_second]

    # A cursor from the future is live-tail: nothing old comes back.
    future = await jetstream(
        collections=[POST], dids=[citizen.did], cursor=seen_second["time_us"] + 60_000_000
    )
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(future.recv(), 1.0)


async def test_filters_keep_other_repos_and_collections_out(
    bluesky_peer: BlueskyPeer, jetstream: Callable[..., Any]
) -> None:
    peer = bluesky_peer
    marta, jordi = peer.citizens
    only_jordi = await jetstream(collections=[POST], dids=[jordi.did])
    only_likes = await jetstream(collections=["app.bsky.feed.like"], dids=[marta.did])
    async with peer.session(marta) as client:
        post = await client.post("@ajuntament.test prova", mentions=[peer.city])
        like = await client.create_record(
            "app.bsky.feed.like",
            {
                "$type": "app.bsky.feed.like",
                "subject": post.strong_ref(),
                "createdAt": "2026-01-01T00:00:00.000Z",
            },
        )
    liked = await next_event(only_likes, lambda e: e["kind"] == "commit")
    assert liked["commit"]["rkey"] == like.rkey
    assert liked["commit"]["record"]["subject"] == post.strong_ref()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(only_jordi.recv(), 1.0)


async def test_a_reply_with_a_fixed_rkey_is_refused_the_second_time(
    bluesky_peer: BlueskyPeer, jetstream: Callable[..., Any]
) -> None:
    peer = bluesky_peer
    city_stream = await jetstream(collections=[POST], dids=[peer.city.did])
    async with peer.session(peer.citizens[0]) as marta:
        question = await marta.post("@ajuntament.test el contenidor és ple", mentions=[peer.city])
    # A key derived from the post answered, as a reply that must never be posted twice would use;
    # for a post it has to be a TID (another rkey is refused as "Invalid TID string").
    rkey = tid(1_767_225_600_000_000, clock_id=int(question.rkey.encode().hex(), 16) % 1024)
    async with peer.session(peer.city) as city:
        reply = await city.reply(
            question,
            "Gràcies, @marta.test: avisem l'equip.",
            mentions=[peer.citizens[0]],
            rkey=rkey,
        )
        assert reply.rkey == rkey
        with pytest.raises(XrpcError) as refused:
            await city.reply(question, "Gràcies (bis)", rkey=rkey)
    # HTTP 500 with a generic body, not 409: the reason is only in the PDS's log. The first reply
    # stands unchanged.
    assert (refused.value.status, refused.value.error) == (500, "InternalServerError")
    assert f"There is already a value at key: app.bsky.feed.post/{rkey}" in (
        peer.log_path.read_text()
    )

    event = await next_event(city_stream, is_create(rkey))
    assert event["commit"]["record"]["reply"] == {
        "root": question.strong_ref(),
        "parent": question.strong_ref(),
    }
    [answered] = [r for r in await peer.city_replies() if r["uri"] == reply.uri]
    assert answered["value"]["text"] == "Gràcies, @marta.test: avisem l'equip."
    async with peer.anonymous() as anyone:
        stored = await anyone.get_record(reply)
    assert stored["cid"] == reply.cid
    assert stored["value"]["text"] == "Gràcies, @marta.test: avisem l'equip."
    assert stored["value"]["reply"]["parent"]["uri"] == question.uri


async def test_a_post_with_an_image_carries_the_uploaded_blob(
    bluesky_peer: BlueskyPeer, jetstream: Callable[..., Any]
) -> None:
    peer = bluesky_peer
    ws = await jetstream(collections=[POST])
    photo = tiny_png(4, 3)
    async with peer.session(peer.citizens[1]) as jordi:
        blob = await jordi.upload_blob(photo, "image/png")
        assert blob["$type"] == "blob"
        assert blob["mimeType"] == "image/png"
        assert blob["size"] == len(photo)
        post = await jordi.post(
            "@ajuntament.test una pintada a la porta",
            mentions=[peer.city],
            images=[(photo, "la porta")],
        )
    event = await next_event(ws, is_create(post.rkey))
    embed = event["commit"]["record"]["embed"]
    assert embed["$type"] == "app.bsky.embed.images"
    [image] = embed["images"]
    assert image["alt"] == "la porta"
    assert image["image"]["mimeType"] == "image/png"
    cid = image["image"]["ref"]["$link"]
    # The blob is stored: the PDS serves its bytes to anyone (how Plaza would fetch the photo).
    async with httpx.AsyncClient() as http:
        res = await http.get(
            f"{peer.pds_url}/xrpc/com.atproto.sync.getBlob", params={"did": post.did, "cid": cid}
        )
    assert res.status_code == 200
    assert res.content == photo


async def test_bad_subscriptions_are_refused(bluesky_peer: BlueskyPeer) -> None:
    async with httpx.AsyncClient() as http:
        res = await http.get(bluesky_peer.jetstream_url.replace("ws://", "http://") + "/")
    assert res.status_code == 200
    with pytest.raises(Exception, match="400"):
        await connect(bluesky_peer.subscribe_url(collections=["not a collection"]), open_timeout=5)


def test_the_peer_listens_on_loopback_only(bluesky_peer: BlueskyPeer) -> None:
    fds = Path(f"/proc/{bluesky_peer.pid}/fd")
    sockets = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                sockets.add(target.removeprefix("socket:[").rstrip("]"))
    listening = [
        cols[1]
        for table in ("/proc/net/tcp", "/proc/net/tcp6")
        for cols in (line.split() for line in Path(table).read_text().splitlines()[1:])
        if cols[3] == "0A" and cols[9] in sockets  # LISTEN, and the peer's own
    ]
    assert len(listening) == 3, listening  # PLC, PDS, Jetstream
    assert all(addr.startswith("0100007F:") for addr in listening), listening
