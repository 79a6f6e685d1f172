"""Between Plaza and the Bluesky peer: a TCP proxy that cuts connections (a dropped Jetstream)
and withholds an answer (a notifier that dies while the PDS has already created its post)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from plaza.bluesky import BlueskyAccount
from pydantic import SecretStr

from tests.peers.bluesky import BlueskyPeer


def account(peer: BlueskyPeer, *, password: bool = True, **urls: str) -> BlueskyAccount:
    """The city's account on the peer; images served by the PDS itself (no CDN here)."""
    return BlueskyAccount(
        handle=peer.city.handle,
        password=SecretStr(peer.city.password) if password else None,
        pds_url=urls.get("pds_url", peer.pds_url),
        jetstream_url=urls.get("jetstream_url", peer.jetstream_url),
        plc_url=peer.plc_url,
        image_url=image_url(peer),
    )


class Faults(httpx.AsyncBaseTransport):
    """The real PDS, except for the answers queued with `fail_next`: what the PDS answers when
    rate-limited (429, RateLimit-* headers, a RateLimitExceeded body) or down (5xx); the call is
    not passed on. `calls` keeps every XRPC method called."""

    def __init__(self) -> None:
        self._real = httpx.AsyncHTTPTransport()
        self._queued: list[tuple[str, httpx.Response]] = []
        self.calls: list[str] = []

    def fail_next(
        self,
        method: str,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        error: str = "",
        times: int = 1,
    ) -> None:
        error = error or ("RateLimitExceeded" if status == 429 else "InternalServerError")
        for _ in range(times):
            body = {"error": error, "message": "Rate Limit Exceeded" if status == 429 else error}
            self._queued.append((method, httpx.Response(status, headers=headers, json=body)))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        method = request.url.path.removeprefix("/xrpc/")
        self.calls.append(method)
        for i, (wanted, response) in enumerate(self._queued):
            if wanted == method:
                del self._queued[i]
                return response
        return await self._real.handle_async_request(request)

    async def aclose(self) -> None:
        await self._real.aclose()


def image_url(peer: BlueskyPeer) -> str:
    return f"{peer.pds_url}/xrpc/com.atproto.sync.getBlob?did={{did}}&cid={{cid}}"


class TcpProxy:
    """127.0.0.1:<port> to a target on loopback. `drop()` cuts every connection and refuses new
    ones until `restore()`; `hold(marker)` lets a request containing `marker` through but never
    its answer. `requests` keeps the first line of every request (the Jetstream cursor...)."""

    def __init__(self, target_url: str) -> None:
        scheme, _, rest = target_url.partition("://")
        host, _, port = rest.split("/")[0].partition(":")
        self._scheme = scheme
        self._target = (host, int(port))
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._down = False
        self._hold: bytes | None = None
        self.holding = asyncio.Event()
        self.requests: list[str] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def drop(self) -> None:
        self._down = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self._down = False

    def hold(self, marker: bytes) -> None:
        self._hold = marker
        self.holding.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        held = asyncio.Event()

        async def upstream() -> None:
            first = True
            while data := await reader.read(65536):
                if first:
                    self.requests.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
                    first = False
                if self._hold is not None and self._hold in data:
                    held.set()
                    self.holding.set()
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if held.is_set():
                    continue  # the answer never comes back
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.gather(upstream(), downstream())
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()


@contextlib.asynccontextmanager
async def proxy(target_url: str) -> AsyncIterator[TcpProxy]:
    p = await TcpProxy(target_url).start()
    try:
        yield p
    finally:
        await p.stop()
