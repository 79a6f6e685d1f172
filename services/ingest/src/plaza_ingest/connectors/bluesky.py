"""The Bluesky connector: posts that mention one of the city's accounts (or answer one of its
posts), live from Jetstream's WebSocket, resumed from the durable cursor (Jetstream's time_us);
and the deletions of posts, which the runner hands on for the posts Plaza has.

A post's id in Plaza is its at:// URI: the router hands it back as the post to reply to, and the
notifier's channel reads the post at that address (its cid and its thread's root) to reply.
Images keep a URL (Bluesky's CDN by default) built from the author's DID and the blob's cid;
the post's first language is kept; Bluesky has no geotags."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, cast
from urllib.parse import urlencode

import httpx
from plaza.addresses import Resolver, first_not_public, resolve
from plaza.bluesky import DID, MENTION, POST, AtUri, BlueskyAccount
from plaza.posts import PostIn
from pydantic import ValidationError
from websockets.asyncio.client import connect

from plaza_ingest.connectors.base import Batch, Deletion

log = logging.getLogger(__name__)

PLATFORM: Final = "bluesky"
SEEN_MAX: Final = 1000  # post ids a cursor remembers from its rewind window
LANG: Final = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")  # as PostIn.lang takes it
Json = Mapping[str, object]


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _obj(value: object) -> Json:
    return cast(Json, value) if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Position:
    """The cursor: Jetstream's time_us of the last event read, and the posts published within
    the rewind window before it (uri -> time_us), so that the replay after a reconnect, even in
    a new process, publishes none of them again. `since_us`: where the very first start began
    following; a rewind never reaches before it (the first start takes no backfill)."""

    time_us: int
    seen: Mapping[str, int] = field(default_factory=dict)
    since_us: int = 0

    @classmethod
    def parse(cls, cursor: str) -> Position:
        """A stored cursor; a bare number (time_us) is taken too, for a cursor set by hand."""
        if cursor.strip().isdecimal():  # isdigit() takes "²", which int() refuses
            return cls(int(cursor))
        data = _obj(json.loads(cursor))
        time_us, since_us = data.get("time_us"), data.get("since_us", 0)
        if not isinstance(time_us, int) or not isinstance(since_us, int):
            raise ValueError(f"not a Bluesky cursor: {cursor[:100]!r}")
        seen = {k: v for k, v in _obj(data.get("seen")).items() if isinstance(v, int)}
        return cls(time_us, seen, since_us)

    def encode(self) -> str:
        data: dict[str, object] = {"time_us": self.time_us, "seen": self.seen}
        if self.since_us:
            data["since_us"] = self.since_us
        return json.dumps(data, separators=(",", ":"))

    def rewound(self, rewind_us: int) -> int:
        """Where to ask Jetstream to replay from."""
        return max(self.since_us, self.time_us - rewind_us, 0)

    def advance(self, time_us: int, rewind_us: int, post_id: str | None = None) -> Position:
        """Moved on to `time_us` (never back: a replayed event is older), remembering `post_id`."""
        now = max(self.time_us, time_us)
        seen = {k: v for k, v in self.seen.items() if v >= now - rewind_us}
        if post_id is not None:
            seen[post_id] = time_us
        if len(seen) > SEEN_MAX:
            seen = dict(sorted(seen.items(), key=lambda kv: kv[1])[-SEEN_MAX:])
        # Once the rewind window has left it behind, the floor is no longer needed.
        since = self.since_us if self.since_us > now - rewind_us else 0
        return Position(now, seen, since)


def image_cids(record: Json) -> list[str]:
    """The blob cids of a post's images (an images embed, or the media of a quote post)."""
    embed = _obj(record.get("embed"))
    if _str(embed.get("$type")) == "app.bsky.embed.recordWithMedia":
        embed = _obj(embed.get("media"))
    if _str(embed.get("$type")) != "app.bsky.embed.images":
        return []
    cids = []
    for image in map(_obj, _list(embed.get("images"))):
        blob = _obj(image.get("image"))
        # A blob is {"$type": "blob", "ref": {"$link": cid}, ...}; old records hold {"cid": cid}.
        cid = _str(_obj(blob.get("ref")).get("$link")) or _str(blob.get("cid"))
        if cid:
            cids.append(cid)
    return cids


def mentioned_dids(record: Json) -> set[str]:
    return {
        _str(feature.get("did"))
        for facet in map(_obj, _list(record.get("facets")))
        for feature in map(_obj, _list(facet.get("features")))
        if _str(feature.get("$type")) == MENTION
    }


def parent_uri(record: Json) -> str:
    return _str(_obj(_obj(record.get("reply")).get("parent")).get("uri"))


def language(record: Json) -> str:
    """The post's first language as a BCP 47 tag Plaza takes ("" if none or malformed)."""
    langs = _list(record.get("langs"))
    primary, _, rest = (_str(langs[0]) if langs else "").partition("-")
    tag = primary.lower() + (f"-{rest}" if rest else "")
    return tag if LANG.match(tag) else ""


def _created_at(record: Json) -> str | None:
    value = _str(record.get("createdAt"))
    try:
        return value if datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo else None
    except ValueError:
        return None


def event_to_post(event: Json, handle: str, image_url: str) -> PostIn | None:
    """A Jetstream commit event creating a post, as a post; None (and a warning) if it cannot be."""
    did = _str(event.get("did"))
    commit = _obj(event.get("commit"))
    record = _obj(commit.get("record"))
    uri = AtUri(did, _str(commit.get("collection")), _str(commit.get("rkey")))
    media = [image_url.format(did=did, cid=cid) for cid in image_cids(record)]
    text = _str(record.get("text")).strip()
    try:
        return PostIn.model_validate(
            {
                "platform": PLATFORM,
                "post_id": str(uri),
                "author_handle": f"@{handle}" if handle else did,
                "author_id": did,
                "text": (text or "[media]") if media else text,
                "lang": language(record),
                "created_at": _created_at(record),
                "media_urls": media[:10],
                "reply_to": parent_uri(record),
                "url": uri.web_url,
            }
        )
    except (ValidationError, ValueError) as exc:
        log.warning("bluesky post %s is not a post Plaza can take: %s", uri, exc)
        return None


def event_to_deletion(event: Json) -> Deletion | None:
    """A Jetstream commit deleting a post, as a deletion by its author: a repo holds one
    account's records, and only that account (or its PDS) deletes them. None for any other."""
    did = _str(event.get("did"))
    commit = _obj(event.get("commit"))
    if (
        event.get("kind") != "commit"
        or commit.get("operation") != "delete"
        or commit.get("collection") != POST
        or not DID.match(did)
        or not _str(commit.get("rkey"))
    ):
        return None
    time_us = event.get("time_us")
    at = datetime.fromtimestamp(time_us / 1e6, UTC) if isinstance(time_us, int) else None
    uri = AtUri(did, POST, _str(commit.get("rkey")))
    return Deletion(PLATFORM, str(uri), author_id=did, deleted_at=at)


class Identities:
    """Handles and DIDs: the city's handles resolved on its PDS (resolveHandle), authors' handles
    read from their DID documents (the PLC directory, or did:web's well-known document on a
    public address) and verified both ways, as Bluesky's own apps do: a DID document may claim
    any handle, and a reply naming a handle its author does not hold would mention somebody
    else in public. A handle is kept for `ttl` seconds (handles change; Jetstream's identity
    events drop it at once)."""

    def __init__(
        self,
        account: BlueskyAccount,
        http: httpx.AsyncClient,
        capacity: int = 10_000,
        ttl: float = 3600.0,
        *,
        resolver: Resolver = resolve,
        web_transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._account = account
        self._http = http
        self._handles: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._capacity = capacity
        self._ttl = ttl
        # did:web's documents: DNS and the network, replaced in tests
        self._resolver = resolver
        self._web_transport = web_transport

    async def did_of(self, handle_or_did: str) -> str:
        if DID.match(handle_or_did):
            return handle_or_did
        response = await self._http.get(
            f"{self._account.pds_url}/xrpc/com.atproto.identity.resolveHandle",
            params={"handle": handle_or_did},
        )
        response.raise_for_status()
        did = _str(_obj(response.json()).get("did"))
        if not DID.match(did):
            raise ValueError(f"resolveHandle({handle_or_did}) answered no DID")
        return did

    def forget(self, did: str) -> None:
        """The DID's handle may have changed (an identity event): read it again when next asked."""
        self._handles.pop(did, None)

    async def handle_of(self, did: str) -> str:
        """The handle the DID document claims, if it resolves back to the DID; "" otherwise or
        if it cannot be read (the DID stands in)."""
        cached = self._handles.get(did)
        if cached is not None and cached[1] > time.monotonic():
            self._handles.move_to_end(did)
            return cached[0]
        if not did.startswith(("did:plc:", "did:web:")):
            return ""
        try:
            if did.startswith("did:plc:"):
                response = await self._http.get(f"{self._account.plc_url}/{did}")
            else:
                response = await self._did_web_document(did)
            response.raise_for_status()
            aliases = _list(_obj(response.json()).get("alsoKnownAs"))
            claimed = next(
                (a.removeprefix("at://") for a in map(_str, aliases) if a[:5] == "at://"), ""
            )
            handle = await self._verified(did, claimed) if claimed else ""
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
            # Not remembered: the next post of this author asks again.
            log.warning("the handle of %s is unknown (%s: %s)", did, type(exc).__name__, exc)
            return ""
        self._handles[did] = (handle, time.monotonic() + self._ttl)
        self._handles.move_to_end(did)
        while len(self._handles) > self._capacity:
            self._handles.popitem(last=False)
        return handle

    async def _did_web_document(self, did: str) -> httpx.Response:
        """A did:web DID's document, https://<its host>/.well-known/did.json, read only from a
        public address: the DID is the author's choice (did:web:10.0.0.5%3A8443 named a host
        and port of the city's network, which ingest fetched). Every address of the host is
        checked, and the connection goes to the one checked (the name in the Host header and
        the TLS certificate check), so a DNS answer cannot change in between. ValueError for a
        host that is not public."""
        url = httpx.URL(f"https://{did.removeprefix('did:web:').replace('%3A', ':')}")
        url = url.copy_with(path="/.well-known/did.json")
        addresses = await self._resolver(url.raw_host.decode("ascii"), url.port or 443)
        if (address := first_not_public(addresses)) is not None:
            raise ValueError(f"{did}: its host {url.host} is at {address}, not public")
        if not addresses:
            raise ValueError(f"{did}: its host {url.host} has no address")
        # A client of its own: no connection made for another host's SNI, no proxy settings.
        async with httpx.AsyncClient(
            timeout=10.0, trust_env=False, transport=self._web_transport
        ) as http:
            return await http.get(
                url.copy_with(host=addresses[0]),
                headers={"Host": url.netloc.decode("ascii")},
                extensions={"sni_hostname": url.raw_host.decode("ascii")},
            )

    async def _verified(self, did: str, handle: str) -> str:
        """`handle` if it resolves to `did`, else "" (a handle nobody holds, or somebody else's)."""
        response = await self._http.get(
            f"{self._account.pds_url}/xrpc/com.atproto.identity.resolveHandle",
            params={"handle": handle},
        )
        if response.status_code == 400:  # no such handle (HandleNotFound / InvalidRequest)
            resolved = ""
        else:
            response.raise_for_status()
            resolved = _str(_obj(response.json()).get("did"))
        if resolved != did:
            log.warning(
                "bluesky: %s claims the handle %s, which resolves to %s: the DID stands in",
                did,
                handle,
                resolved or "no account",
            )
            return ""
        return handle


class BlueskyMentions:
    """The city's accounts' mentions on Jetstream (app.bsky.feed.post creates whose mention
    facets name one of them, or that reply to one of their posts), from the cursor on."""

    def __init__(
        self,
        account: BlueskyAccount,
        http: httpx.AsyncClient,
        *,
        open_timeout: float = 10.0,
        idle_seconds: float = 1.0,
        checkpoint_seconds: float = 5.0,
    ) -> None:
        self._account = account
        self._identities = Identities(account, http)
        self._open_timeout = open_timeout
        self._idle = idle_seconds
        self._checkpoint = checkpoint_seconds
        self._rewind_us = int(account.rewind_seconds * 1_000_000)
        self._city: frozenset[str] | None = None

    @property
    def name(self) -> str:
        return f"bluesky:{self._account.handle}:mentions"

    @property
    def platform(self) -> str:
        return PLATFORM

    async def city_dids(self) -> frozenset[str]:
        if self._city is None:
            dids = [await self._identities.did_of(a) for a in self._account.mentions]
            self._city = frozenset(dids)
            log.info("bluesky: following mentions of %s", ", ".join(sorted(self._city)))
        return self._city

    def _subscribe_url(self, since_us: int) -> str:
        query = urlencode([("wantedCollections", POST), ("cursor", str(since_us))])
        return f"{self._account.jetstream_url}/subscribe?{query}"

    def _for_the_city(self, event: Json, city: frozenset[str]) -> bool:
        commit = _obj(event.get("commit"))
        if (
            event.get("kind") != "commit"
            or commit.get("operation") != "create"
            or commit.get("collection") != POST
            or _str(event.get("did")) in city  # the city's own posts and replies
        ):
            return False
        record = _obj(commit.get("record"))
        if mentioned_dids(record) & city:
            return True
        # An answer in the city's thread notifies the city like a mention (and the router
        # follows it up), though Bluesky adds no mention facet to a reply.
        parent = parent_uri(record)
        return bool(parent) and parent.removeprefix("at://").split("/")[0] in city

    async def batches(self, cursor: str | None) -> AsyncIterator[Batch]:
        city = await self.city_dids()
        if cursor is None:  # the very first start: from now on, no backfill
            start = now_us()
            position = Position(start, since_us=start)
        else:
            # Rewound: Jetstream replays from there; the posts already published are in `seen`.
            position = Position.parse(cursor)
        since = position.rewound(self._rewind_us)
        loop = asyncio.get_running_loop()
        async with connect(
            self._subscribe_url(since), open_timeout=self._open_timeout, ping_interval=20
        ) as socket:
            checkpoint = loop.time()
            deleted: list[Deletion] = []
            while True:
                try:
                    message = await asyncio.wait_for(socket.recv(), self._idle)
                except TimeoutError:
                    # Quiet for a moment: caught up. The runner stores the cursor if it moved.
                    checkpoint = loop.time()
                    yield Batch((), position.encode(), deleted)
                    deleted = []
                    continue
                event = _obj(json.loads(message))
                time_us = event.get("time_us")
                if not isinstance(time_us, int):
                    continue
                if event.get("kind") == "identity":
                    self._identities.forget(_str(event.get("did")))
                deletion = event_to_deletion(event)
                if deletion is not None:
                    # Every deletion on the network comes by: they go with the next batch (a
                    # checkpoint at the latest), and the runner keeps those of the city's posts.
                    deleted.append(deletion)
                post = None
                if self._for_the_city(event, city):
                    handle = await self._identities.handle_of(_str(event.get("did")))
                    post = event_to_post(event, handle, self._account.image_url)
                if post is not None and post.post_id not in position.seen:
                    position = position.advance(time_us, self._rewind_us, post.post_id)
                    checkpoint = loop.time()
                    yield Batch((post,), position.encode(), deleted)
                    deleted = []
                    continue
                position = position.advance(time_us, self._rewind_us)
                # A busy firehose with nothing for the city: the cursor is stored now and then.
                if loop.time() - checkpoint >= self._checkpoint:
                    checkpoint = loop.time()
                    yield Batch((), position.encode(), deleted)
                    deleted = []
