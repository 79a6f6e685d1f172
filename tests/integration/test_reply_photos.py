"""A worker's photo URL cannot make the notifier fetch from the city's own network: on each
platform (the local Mastodon and X, a real PDS) a photo on a loopback address, behind a name
that resolves to one, or behind a redirect to one is refused, and so is one too large or no
image; every time the reply still goes out, without the photo, and the refusal is logged and
counted. The internal service is a local server that records every request it gets; a public
photo host is simulated by routing one public address to that same server."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from plaza_notifier.bluesky import BlueskyChannel
from plaza_notifier.channels import ChannelReply, ReplyChannel
from plaza_notifier.mastodon import MastodonChannel
from plaza_notifier.metrics import REPLY_PHOTOS_REFUSED
from plaza_notifier.photos import PhotoFetcher
from plaza_notifier.x import XChannel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.integration.bluesky_helpers import account
from tests.peers._server import ThreadedServer
from tests.peers.bluesky import BlueskyPeer, tiny_png
from tests.peers.mastodon import FakeMastodon
from tests.peers.x_api import FakeX

PUBLIC = "93.184.216.34"  # the photo host's address, as the patched DNS answers
PHOTO = tiny_png(4, 3, rgb=(200, 120, 20))
SECRET = b"the city's internal secret"


class InternalService:
    """A service on 127.0.0.1 that must never be reached through a photo URL (and, reached
    through PUBLIC, a public photo host): photos, a secret, redirects, a body past every
    platform's cap, a web page. Every request is recorded with its Host header."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, str]] = []
        self.port = 0
        self._server: ThreadedServer | None = None

    def app(self) -> Starlette:
        async def record(request: Request) -> None:
            self.hits.append((request.headers.get("host", ""), request.url.path))

        async def photo(request: Request) -> Response:
            await record(request)
            return Response(PHOTO, media_type="image/png")

        async def secret(request: Request) -> Response:
            await record(request)
            return Response(SECRET, media_type="image/png")  # claims to be an image, even

        async def redirect(request: Request) -> Response:
            await record(request)
            return RedirectResponse(request.query_params["to"], status_code=302)

        async def big(request: Request) -> Response:
            await record(request)

            async def body() -> AsyncIterator[bytes]:
                for _ in range(1024):  # 64 MB, with no Content-Length
                    yield b"\x89" * 65536

            return StreamingResponse(body(), media_type="image/png")

        async def page(request: Request) -> Response:
            await record(request)
            return Response(b"<h1>Ajuntament intranet</h1>", media_type="text/html")

        return Starlette(
            routes=[
                Route("/photo.png", photo),
                Route("/secret", secret),
                Route("/redirect", redirect),
                Route("/big.png", big),
                Route("/page", page),
            ]
        )

    def __enter__(self) -> InternalService:
        self._server = ThreadedServer(self.app(), "the internal service")
        self.port = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reached(self, path: str) -> list[str]:
        """The Host headers of the requests that reached `path`."""
        return [host for host, p in self.hits if p == path]


class PublicInternet(httpx.AsyncBaseTransport):
    """The network as the notifier sees it here: PUBLIC is the internal service (playing a
    public photo host); every other address is reached as it is."""

    def __init__(self, internal: InternalService) -> None:
        self._internal = internal
        self._net = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == PUBLIC:
            request.url = request.url.copy_with(host="127.0.0.1", port=self._internal.port)
        return await self._net.handle_async_request(request)

    async def aclose(self) -> None:
        """Kept open: the fetcher closes its client after each request; this outlives them."""

    async def close_for_good(self) -> None:
        await self._net.aclose()


@pytest.fixture
def internal() -> Iterator[InternalService]:
    with InternalService() as service:
        yield service


@pytest.fixture
async def internet(internal: InternalService) -> AsyncIterator[PublicInternet]:
    net = PublicInternet(internal)
    yield net
    await net.close_for_good()


@pytest.fixture
async def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The system resolver, with the names the test adds (name to address) in front."""
    names: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port or 80))]
        return await real(host, port, *args, **kw)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return names


@dataclass
class Platform:
    """One platform's channel and what the test reads back from it."""

    name: str
    channel: Callable[[httpx.AsyncClient, PhotoFetcher], ReplyChannel]
    citizen_post: Callable[[], Awaitable[str]]  # the id of a new post to reply to
    replies_to: Callable[[str], Awaitable[list[dict[str, Any]]]]
    media: Callable[[dict[str, Any]], list[Any]]  # what a reply has attached
    uploads: Callable[[], int]  # media uploaded to the platform


@pytest.fixture(params=["mastodon", "x", "bluesky"])
def platform(request: pytest.FixtureRequest) -> Iterator[Platform]:
    if request.param == "mastodon":
        with FakeMastodon() as mastodon:

            async def toot() -> str:
                return str(mastodon.citizen_posts("El fanal no funciona")["id"])

            async def toots(post: str) -> list[dict[str, Any]]:
                return mastodon.replies_to(post)

            yield Platform(
                "mastodon",
                lambda http, photos: MastodonChannel(mastodon.account(), http, photos=photos),
                toot,
                toots,
                lambda reply: list(reply["media_attachments"]),
                lambda: len(mastodon.uploads),
            )
    elif request.param == "x":
        with FakeX() as x:

            async def tweet() -> str:
                return str(x.citizen_posts("El fanal no funciona")["id"])

            async def tweets(post: str) -> list[dict[str, Any]]:
                return x.replies_to(post)

            yield Platform(
                "x",
                lambda http, photos: XChannel(x.account(), http, photos=photos),
                tweet,
                tweets,
                lambda reply: list(reply.get("attachments", {}).get("media_keys", [])),
                lambda: len(x.uploads),
            )
    else:
        peer: BlueskyPeer = request.getfixturevalue("bluesky_peer")

        async def skeet() -> str:
            async with peer.session(peer.citizens[0]) as marta:
                post = await marta.post(f"@{peer.city.handle} el fanal no funciona")
            return post.uri

        async def skeets(post: str) -> list[dict[str, Any]]:
            replies = await peer.city_replies()
            return [r for r in replies if r["value"]["reply"]["parent"]["uri"] == post]

        yield Platform(
            "bluesky",
            lambda http, photos: BlueskyChannel(account(peer), http, photos=photos),
            skeet,
            skeets,
            lambda reply: [reply["value"]["embed"]] if "embed" in reply["value"] else [],
            lambda: 0,  # the PDS lists no uploads: the embed tells
        )


async def reply_with_photo(
    platform: Platform, photos: PhotoFetcher, photo_url: str
) -> dict[str, Any]:
    """The reply as posted on the platform, after the channel was given `photo_url`."""
    post = await platform.citizen_post()
    async with httpx.AsyncClient(timeout=10) as http:
        reply = ChannelReply(
            reply_id=f"photo-{uuid.uuid4()}",
            in_reply_to_post_id=post,
            author_handle="@marta",
            text="Fanal arreglat! Petició #12.",
            language="ca",
            photo_url=photo_url,
        )
        await platform.channel(http, photos).post(reply)
    [posted] = await platform.replies_to(post)
    return posted


def refused(platform: Platform, reason: str) -> float:
    return float(REPLY_PHOTOS_REFUSED.labels(platform.name, reason)._value.get())


async def assert_posted_without_the_photo(
    platform: Platform, reply: dict[str, Any], reason: str, before: float, caplog: Any
) -> None:
    assert platform.media(reply) == [] and platform.uploads() == 0
    assert refused(platform, reason) == before + 1
    assert "refused, replying without it" in caplog.text


@pytest.mark.parametrize("path", ["/photo.png", "/redirect?to=/secret"])
async def test_a_photo_on_a_loopback_address_is_refused_by_default(
    platform: Platform,
    internal: InternalService,
    caplog: pytest.LogCaptureFixture,
    path: str,
) -> None:
    """The reviewer's report: http://127.0.0.1:8700/redirect?to=internal."""
    caplog.set_level(logging.WARNING, "plaza_notifier")
    before = refused(platform, "address")
    reply = await reply_with_photo(platform, PhotoFetcher(), f"{internal.url}{path}")
    await assert_posted_without_the_photo(platform, reply, "address", before, caplog)
    assert internal.hits == []  # not even asked


async def test_a_public_name_that_resolves_to_a_loopback_address_is_refused(
    platform: Platform,
    internal: InternalService,
    dns: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "plaza_notifier")
    dns["photos.example.org"] = "127.0.0.1"
    before = refused(platform, "address")
    url = f"http://photos.example.org:{internal.port}/photo.png"
    reply = await reply_with_photo(platform, PhotoFetcher(), url)
    await assert_posted_without_the_photo(platform, reply, "address", before, caplog)
    assert internal.hits == []


async def test_a_redirect_from_a_public_host_to_a_loopback_address_is_refused(
    platform: Platform,
    internal: InternalService,
    internet: PublicInternet,
    dns: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "plaza_notifier")
    dns["photos.example.org"] = PUBLIC
    before = refused(platform, "address")
    url = f"http://photos.example.org/redirect?to={internal.url}/secret"
    reply = await reply_with_photo(platform, PhotoFetcher(transport=internet), url)
    await assert_posted_without_the_photo(platform, reply, "address", before, caplog)
    assert internal.reached("/redirect") == ["photos.example.org"]
    assert internal.reached("/secret") == []  # the redirect was not followed


@pytest.mark.parametrize(("path", "reason"), [("/big.png", "size"), ("/page", "type")])
async def test_a_photo_too_large_or_no_image_is_refused(
    platform: Platform,
    internal: InternalService,
    internet: PublicInternet,
    dns: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    path: str,
    reason: str,
) -> None:
    caplog.set_level(logging.WARNING, "plaza_notifier")
    dns["photos.example.org"] = PUBLIC
    before = refused(platform, reason)
    url = f"http://photos.example.org{path}"
    reply = await reply_with_photo(platform, PhotoFetcher(transport=internet), url)
    await assert_posted_without_the_photo(platform, reply, reason, before, caplog)
    assert internal.reached(path.split("?")[0]) == ["photos.example.org"]


async def test_a_photo_on_a_public_host_is_attached(
    platform: Platform,
    internal: InternalService,
    internet: PublicInternet,
    dns: dict[str, str],
) -> None:
    """The control: the same service, reached as a public host, gives its photo."""
    dns["photos.example.org"] = PUBLIC
    url = "http://photos.example.org/redirect?to=/photo.png"
    reply = await reply_with_photo(platform, PhotoFetcher(transport=internet), url)
    assert len(platform.media(reply)) == 1
    assert internal.reached("/photo.png") == ["photos.example.org"]
