"""The resolution photo a reply attaches, fetched from the URL the worker gave: only from public
addresses (each redirect checked again, and the connection made to the address that was
checked, so a DNS answer cannot change between the check and the connection), only an image,
only up to the platform's size limit, within a short deadline.

A worker's URL is input from outside: without these checks the notifier would fetch anything
it can reach (the metadata service, an internal admin page, a redirect into the city's network)
and post the body as media on the city's public account."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

import httpx
from plaza.addresses import Resolver, first_not_public, resolve

from plaza_notifier.metrics import REPLY_PHOTOS_REFUSED

log = logging.getLogger(__name__)

MAX_REDIRECTS: Final = 3
DEADLINE: Final = 20.0  # seconds for the whole fetch, every redirect included
TIMEOUT: Final = httpx.Timeout(5.0, read=10.0)
DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class PhotoRefused(Exception):
    """The photo can never be attached (a private address, too many redirects, a 4xx, not an
    image, too large): the reply goes without it. `reason` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Photo:
    content: bytes
    content_type: str  # image/..., without parameters
    name: str  # the file name the URL gives, for the upload


@dataclass(frozen=True, slots=True)
class PhotoFetcher:
    """Fetches photos for every channel. `allow_private_hosts` (PLAZA_MEDIA_ALLOW_PRIVATE_HOSTS)
    lets private and loopback addresses through: for the tests' local servers, never for a
    city's notifier. `resolver` and `transport` replace DNS and the network in tests."""

    allow_private_hosts: bool = False
    resolver: Resolver = resolve
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False)

    async def get(self, url: str, *, platform: str, max_bytes: int) -> Photo | None:
        """The photo at `url`; None, logged and counted, if it cannot be attached. A 5xx, a
        timeout or a dropped connection is raised: the delivery tries again later."""
        try:
            return await self.fetch(url, max_bytes=max_bytes)
        except PhotoRefused as exc:
            log.warning("%s: photo %s refused, replying without it: %s", platform, url, exc)
            REPLY_PHOTOS_REFUSED.labels(platform, exc.reason).inc()
            return None

    async def fetch(self, url: str, *, max_bytes: int) -> Photo:
        """The photo at `url`, following at most MAX_REDIRECTS redirects, each checked."""
        current = _parse(url)
        try:
            async with asyncio.timeout(DEADLINE):
                for _ in range(MAX_REDIRECTS + 1):
                    async with self._get(current) as response:
                        if not response.is_redirect:
                            return await _read(current, response, max_bytes)
                        try:
                            current = _parse(current.join(response.headers["location"]))
                        except httpx.InvalidURL as exc:
                            raise PhotoRefused("url", f"redirected to a bad URL: {exc}") from exc
        except TimeoutError:
            # Raised, not refused: a slow host may answer next time (the delivery tries again).
            raise TimeoutError(f"photo {url}: not fetched within {DEADLINE:g}s") from None
        raise PhotoRefused("redirects", f"more than {MAX_REDIRECTS} redirects")

    async def _addresses(self, url: httpx.URL) -> list[str]:
        """The addresses of the URL's host, every one checked: one private address among
        public ones is refused too (the connection could go to any of them)."""
        port = url.port or DEFAULT_PORTS[url.scheme]
        try:
            addresses = await self.resolver(url.raw_host.decode("ascii"), port)
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise  # the resolver is down for now: try again later
            raise PhotoRefused("address", f"{url.host} does not resolve: {exc}") from exc
        if not addresses:
            raise PhotoRefused("address", f"{url.host} has no address")
        if not self.allow_private_hosts and (address := first_not_public(addresses)):
            raise PhotoRefused("address", f"{url.host} is at {address}, not public")
        return addresses

    @contextlib.asynccontextmanager
    async def _get(self, url: httpx.URL) -> AsyncIterator[httpx.Response]:
        """GET `url` at one of its checked addresses, the body not yet read. The URL's host
        still goes in the Host header and, over TLS, in the SNI and the certificate check."""
        addresses = await self._addresses(url)
        headers = {
            "Host": url.netloc.decode("ascii"),
            "Accept": "image/*",
            "Accept-Encoding": "identity",  # a compressed body could inflate past the cap
        }
        extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
        # A client per request: no connection (made for another host's SNI), cookie or proxy
        # setting is shared with the platforms' calls or with the next redirect.
        async with httpx.AsyncClient(
            timeout=TIMEOUT, trust_env=False, transport=self.transport
        ) as http:
            for n, address in enumerate(addresses):
                request = http.build_request(
                    "GET", url.copy_with(host=address), headers=headers, extensions=extensions
                )
                try:
                    response = await http.send(request, stream=True)
                except httpx.ConnectError:
                    if n + 1 == len(addresses):
                        raise
                    continue
                try:
                    yield response
                finally:
                    await response.aclose()
                return


def _parse(url: httpx.URL | str) -> httpx.URL:
    """The URL, if it is one the notifier may fetch."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise PhotoRefused("url", f"not a URL: {exc}") from exc
    if parsed.scheme not in DEFAULT_PORTS or not parsed.host:
        raise PhotoRefused("url", f"{parsed} is no http(s) URL")
    return parsed


async def _read(url: httpx.URL, response: httpx.Response, max_bytes: int) -> Photo:
    """The body of a final answer, if it is an image within `max_bytes`."""
    if response.status_code >= 500:
        raise httpx.HTTPStatusError(
            f"photo {url} answered {response.status_code}",
            request=response.request,
            response=response,
        )
    if response.status_code != 200:
        raise PhotoRefused("status", f"answered {response.status_code}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith("image/"):
        raise PhotoRefused("type", f"is {content_type or 'of no type'}, not an image")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise PhotoRefused("type", f"came compressed ({encoding}), though asked not to be")
    length = response.headers.get("content-length", "")
    if length.isdecimal() and int(length) > max_bytes:
        raise PhotoRefused("size", f"has {length} bytes, over {max_bytes}")
    body = bytearray()
    async for chunk in response.aiter_bytes():  # as sent: only identity gets here
        body += chunk
        if len(body) > max_bytes:
            raise PhotoRefused("size", f"has over {max_bytes} bytes")
    name = url.path.rsplit("/", 1)[-1] or "photo.jpg"
    return Photo(bytes(body), content_type, name)
