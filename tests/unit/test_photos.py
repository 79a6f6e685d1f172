"""Resolution photos without I/O: which addresses are public, and what the fetcher refuses (a
private address at any redirect, too many redirects, a 4xx, no image, too large, compressed)
or raises to be tried again (a 5xx, a resolver that is down), and that it connects to the
address it checked, with the URL's host in the Host header and the TLS name."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
from collections.abc import AsyncIterator, Mapping

import httpx
import pytest
from plaza.addresses import is_public
from plaza.settings import load
from plaza_notifier.__main__ import NotifierSettings
from plaza_notifier.photos import MAX_REDIRECTS, PhotoFetcher, PhotoRefused, Resolver

JPEG = b"\xff\xd8\xff\xe0" + b"fanal" * 20 + b"\xff\xd9"
PUBLIC = "93.184.216.34"
MB = 1024 * 1024


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.0.1",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",  # the cloud metadata service
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.251",
        "255.255.255.255",
        "192.0.2.1",
        "198.18.0.1",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata service
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    ],
)
def test_private_and_special_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def dns(table: Mapping[str, list[str]]) -> Resolver:
    """A resolver answering from `table`; any other name does not exist."""

    async def resolve(host: str, port: int) -> list[str]:
        if host in table:
            return table[host]
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    return resolve


class Web:
    """The photo hosts, by Host header: what each path answers; every request kept."""

    def __init__(self, pages: Mapping[tuple[str, str], httpx.Response]) -> None:
        self.pages = pages
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        page = self.pages.get((request.headers["host"], request.url.path))
        return page if page is not None else httpx.Response(404)


def fetcher(web: Web, table: Mapping[str, list[str]], **kw: bool) -> PhotoFetcher:
    return PhotoFetcher(resolver=dns(table), transport=httpx.MockTransport(web), **kw)


def jpeg(body: bytes = JPEG, **headers: str) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "image/jpeg", **headers}, content=body)


def moved(to: str) -> httpx.Response:
    return httpx.Response(302, headers={"location": to})


async def test_a_public_photo_is_fetched_from_the_address_that_was_checked() -> None:
    web = Web({("photos.example.org", "/fanal.jpg"): jpeg()})
    photos = fetcher(web, {"photos.example.org": [PUBLIC]})
    photo = await photos.fetch("https://photos.example.org/fanal.jpg", max_bytes=MB)
    assert (photo.content, photo.content_type, photo.name) == (JPEG, "image/jpeg", "fanal.jpg")
    [request] = web.requests
    assert request.url.host == PUBLIC  # connected to the checked address, not resolved again
    assert request.headers["host"] == "photos.example.org"
    assert request.extensions["sni_hostname"] == "photos.example.org"  # and TLS checks the name
    assert request.headers["accept-encoding"] == "identity"


async def test_an_ipv6_host_and_an_international_name_are_pinned_too() -> None:
    web = Web({("xn--fanal-ycb.example.org", "/f.jpg"): jpeg()})
    photos = fetcher(web, {"xn--fanal-ycb.example.org": ["2606:4700:4700::1111"]})
    await photos.fetch("https://fanalś.example.org/f.jpg", max_bytes=MB)
    [request] = web.requests
    assert request.url.host == "2606:4700:4700::1111"
    assert request.extensions["sni_hostname"] == "xn--fanal-ycb.example.org"


async def test_a_slow_host_is_given_up_on_and_raised_to_be_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("plaza_notifier.photos.DEADLINE", 0.05)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1)
        return jpeg()

    photos = PhotoFetcher(
        resolver=dns({"a.example.org": [PUBLIC]}), transport=httpx.MockTransport(slow)
    )
    with pytest.raises(TimeoutError, match="not fetched within"):
        await photos.fetch("http://a.example.org/f.jpg", max_bytes=MB)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8700/redirect?to=internal",
        "http://localhost/f.jpg",
        "http://[::1]/f.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706433/f.jpg",  # 127.0.0.1 as one number
        "http://[::ffff:7f00:1]/f.jpg",
        "http://rebind.example.org/f.jpg",
        "http://mixed.example.org/f.jpg",
    ],
)
async def test_a_private_address_is_refused_before_any_request(url: str) -> None:
    web = Web({})
    table = {
        "localhost": ["127.0.0.1", "::1"],
        "2130706433": ["127.0.0.1"],
        "rebind.example.org": ["10.1.2.3"],
        "mixed.example.org": [PUBLIC, "192.168.0.7"],  # either could be the one connected to
    }
    with pytest.raises(PhotoRefused) as refused:
        await fetcher(web, table).fetch(url, max_bytes=MB)
    assert refused.value.reason == "address" and "not public" in str(refused.value)
    assert web.requests == []


async def test_private_hosts_are_allowed_only_when_the_setting_says_so() -> None:
    web = Web({("127.0.0.1:8700", "/f.jpg"): jpeg()})
    photo = await fetcher(web, {}, allow_private_hosts=True).fetch(
        "http://127.0.0.1:8700/f.jpg", max_bytes=MB
    )
    assert photo.content == JPEG


def test_the_setting_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLAZA_MEDIA_ALLOW_PRIVATE_HOSTS", raising=False)
    assert load(NotifierSettings).media_allow_private_hosts is False
    monkeypatch.setenv("PLAZA_MEDIA_ALLOW_PRIVATE_HOSTS", "true")
    assert load(NotifierSettings).media_allow_private_hosts is True


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:8700/internal",
        "http://[::1]/internal",
        "http://metadata.example.org/latest/meta-data/",
        "//127.0.0.1/internal",  # scheme-relative
    ],
)
async def test_a_redirect_to_a_private_address_is_refused(location: str) -> None:
    web = Web({("photos.example.org", "/f.jpg"): moved(location)})
    table = {"photos.example.org": [PUBLIC], "metadata.example.org": ["169.254.169.254"]}
    with pytest.raises(PhotoRefused) as refused:
        await fetcher(web, table).fetch("http://photos.example.org/f.jpg", max_bytes=MB)
    assert refused.value.reason == "address"
    assert len(web.requests) == 1  # the redirect was never followed


async def test_redirects_are_followed_checked_and_counted() -> None:
    web = Web(
        {
            ("a.example.org", "/1"): moved("/2"),  # relative: same host
            ("a.example.org", "/2"): moved("https://cdn.example.org/3.jpg"),
            ("cdn.example.org", "/3.jpg"): jpeg(),
        }
    )
    table = {"a.example.org": [PUBLIC], "cdn.example.org": ["8.8.8.8"]}
    photo = await fetcher(web, table).fetch("http://a.example.org/1", max_bytes=MB)
    assert photo.content == JPEG and photo.name == "3.jpg"
    assert [(r.url.host, r.headers["host"]) for r in web.requests] == [
        (PUBLIC, "a.example.org"),
        (PUBLIC, "a.example.org"),
        ("8.8.8.8", "cdn.example.org"),
    ]


async def test_more_than_three_redirects_are_refused() -> None:
    loop = {("a.example.org", f"/{n}"): moved(f"/{n + 1}") for n in range(10)}
    web = Web(loop)
    with pytest.raises(PhotoRefused) as refused:
        await fetcher(web, {"a.example.org": [PUBLIC]}).fetch(
            "http://a.example.org/0", max_bytes=MB
        )
    assert refused.value.reason == "redirects"
    assert len(web.requests) == MAX_REDIRECTS + 1


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://a.example.org/f.jpg", "gopher://a.example.org/", "f.jpg"]
)
async def test_only_http_urls_are_fetched(url: str) -> None:
    web = Web({})
    with pytest.raises(PhotoRefused) as refused:
        await fetcher(web, {}).fetch(url, max_bytes=MB)
    assert refused.value.reason == "url" and web.requests == []


async def test_a_redirect_to_a_file_url_is_refused() -> None:
    web = Web({("a.example.org", "/f.jpg"): moved("file:///etc/passwd")})
    with pytest.raises(PhotoRefused) as refused:
        await fetcher(web, {"a.example.org": [PUBLIC]}).fetch(
            "http://a.example.org/f.jpg", max_bytes=MB
        )
    assert refused.value.reason == "url"


async def chunks(count: int, sent: list[int]) -> AsyncIterator[bytes]:
    for _ in range(count):
        sent.append(1)
        yield b"\xff" * 65536


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (httpx.Response(404), "status"),
        (httpx.Response(410), "status"),
        (httpx.Response(204), "status"),
        (httpx.Response(200, headers={"content-type": "text/html"}, content=b"<h1>"), "type"),
        (httpx.Response(200, headers={"content-type": "application/json"}, content=b"{}"), "type"),
        (httpx.Response(200, content=JPEG), "type"),  # no content type at all
        (jpeg(gzip.compress(JPEG), **{"content-encoding": "gzip"}), "type"),
        (jpeg(b"\xff" * (MB + 1)), "size"),
    ],
)
async def test_what_is_no_photo_is_refused(answer: httpx.Response, reason: str) -> None:
    web = Web({("a.example.org", "/f.jpg"): answer})
    with pytest.raises(PhotoRefused) as refused:
        await fetcher(web, {"a.example.org": [PUBLIC]}).fetch(
            "http://a.example.org/f.jpg", max_bytes=MB
        )
    assert refused.value.reason == reason


async def test_a_body_without_a_length_is_cut_at_the_cap() -> None:
    sent: list[int] = []
    endless = httpx.Response(200, headers={"content-type": "image/png"}, content=chunks(1000, sent))
    web = Web({("a.example.org", "/f.png"): endless})
    with pytest.raises(PhotoRefused) as refused:
        await fetcher(web, {"a.example.org": [PUBLIC]}).fetch(
            "http://a.example.org/f.png", max_bytes=MB
        )
    assert refused.value.reason == "size"
    assert len(sent) <= MB // 65536 + 1  # stopped reading past the cap, not at the end


async def test_a_5xx_and_a_resolver_that_is_down_are_raised_to_be_tried_again() -> None:
    web = Web({("a.example.org", "/f.jpg"): httpx.Response(503)})
    with pytest.raises(httpx.HTTPStatusError):
        await fetcher(web, {"a.example.org": [PUBLIC]}).fetch(
            "http://a.example.org/f.jpg", max_bytes=MB
        )

    async def down(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(socket.gaierror):
        await PhotoFetcher(resolver=down).fetch("http://a.example.org/f.jpg", max_bytes=MB)


async def test_a_host_that_does_not_exist_is_refused() -> None:
    with pytest.raises(PhotoRefused) as refused:
        await fetcher(Web({}), {}).fetch("http://nowhere.invalid/f.jpg", max_bytes=MB)
    assert refused.value.reason == "address"
