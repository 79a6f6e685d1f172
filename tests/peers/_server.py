"""What the local Mastodon and X share: uvicorn in a thread on 127.0.0.1 and a free port, the
calls seen, faults queued for the next calls, rate-limit headers on every answer, and a reply whose
answer is held back (the post exists, the client has no answer yet)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


StreamT = TypeVar("StreamT")


@dataclass
class Fault:
    method: str
    path: str  # which request paths it answers: see FakePlatform._fault_applies
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    media_type: str = "application/json"


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    at: float
    body: bytes = b""


class ThreadedServer:
    """An ASGI app served by uvicorn on a free port of 127.0.0.1, in a thread of its own, so
    that code under test reaches it over real HTTP from the test's event loop."""

    def __init__(self, app: Starlette, name: str) -> None:
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._name = name

    def start(self) -> int:
        """Starts serving; the port it listens on."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, f"{self._name} did not start"
            time.sleep(0.02)
        port: int = self._server.servers[0].sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


class FakePlatform(Generic[StreamT]):
    """The running server and the test's hooks; each platform adds its API (`app`), what its
    streams are (StreamT) and how it drops them, its error bodies and its rate-limit headers."""

    name: ClassVar[str]  # as the platform is called in a failure message
    rate_limit: ClassVar[int]  # the budget of a rate-limit window
    error_media_type: ClassVar[str] = "application/json"

    def __init__(self, *, rate_reset_in: float) -> None:
        self.host = ""
        self.base_url = ""
        self._lock = threading.RLock()
        self.requests: list[Seen] = []
        self.faults: deque[Fault] = deque()
        self.rate_remaining: int | None = None  # force the remaining budget (e.g. 0)
        self.rate_reset_in = rate_reset_in
        self._streams: list[StreamT] = []
        self._hold = threading.Event()  # while armed, replies are created but not answered
        self._holding = threading.Event()
        self._release = threading.Event()
        self._server: ThreadedServer | None = None

    # --- running ----------------------------------------------------------------------------

    def app(self) -> Starlette:
        raise NotImplementedError

    def drop_streams(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._server = ThreadedServer(self.app(), f"the fake {self.name}")
        self.host = f"127.0.0.1:{self._server.start()}"
        self.base_url = f"http://{self.host}"
        return self

    def stop(self) -> None:
        self.release_replies()
        self.drop_streams()
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what the test does -----------------------------------------------------------------

    def stream_count(self) -> int:
        with self._lock:
            return len(self._streams)

    def fail_next(
        self,
        method: str,
        path: str,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        detail: str = "",
    ) -> None:
        """The next `times` calls to `path` answer `status`, with the platform's error body (saying
        `detail`) and its rate-limit headers, `headers` on top."""
        for _ in range(times):
            body = self._error_body(status, detail)
            fault = Fault(method, path, status, dict(headers or {}), body, self.error_media_type)
            self.faults.append(fault)

    def rate_limited(self, seconds: float) -> dict[str, str]:
        """The headers of a 429: the budget is spent until the reset, `seconds` from now."""
        return self._rate_headers(0, time.time() + seconds)

    def hold_replies(self) -> None:
        """The next reply the city posts is created, then not answered until release_replies():
        a client killed meanwhile never learns that it posted."""
        self._release.clear()
        self._holding.clear()
        self._hold.set()

    def wait_until_holding(self, timeout: float = 30) -> bool:
        return self._holding.wait(timeout)

    def release_replies(self) -> None:
        self._hold.clear()
        self._release.set()

    def seen(self, method: str, path: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path)]

    # --- for the API ------------------------------------------------------------------------

    def _error_body(self, status: int, detail: str) -> dict[str, Any]:
        raise NotImplementedError

    def _rate_headers(self, remaining: int, reset_at: float) -> dict[str, str]:
        """The platform's rate-limit headers for a budget with `remaining` calls left until
        `reset_at` (epoch seconds)."""
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        with self._lock:
            remaining = self.rate_remaining
            if remaining is None:
                remaining = max(0, self.rate_limit - len(self.requests))
        return self._rate_headers(remaining, time.time() + self.rate_reset_in)

    def _record(self, request: Request, body: bytes = b"") -> None:
        with self._lock:
            self.requests.append(
                Seen(
                    request.method,
                    request.url.path,
                    request.url.query,
                    dict(request.headers),
                    time.monotonic(),
                    body,
                )
            )

    @staticmethod
    def _fault_applies(fault_path: str, path: str) -> bool:
        return path.startswith(fault_path)

    def _fault(self, request: Request) -> JSONResponse | None:
        """The answer of the first queued fault for this call, taken off the queue."""
        with self._lock:
            for fault in list(self.faults):
                if fault.method == request.method and self._fault_applies(
                    fault.path, request.url.path
                ):
                    self.faults.remove(fault)
                    return JSONResponse(
                        fault.body,
                        status_code=fault.status,
                        headers={**self._headers(), **fault.headers},
                        media_type=fault.media_type,
                    )
        return None

    async def _answer_held(self) -> None:
        """Once the reply is created: no answer while hold_replies() is armed."""
        if self._hold.is_set():
            self._holding.set()
            await asyncio.to_thread(self._release.wait)
