"""What protects the gateway: rate limits per key (429 with Retry-After), a cap on request
bodies (413), CORS for the public Open311 reads, and the security headers of every answer."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

from fastapi import HTTPException, Request
from plaza.web import PROBLEM_JSON
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plaza_api.auth import Principal

OPEN311_PREFIX = "/open311/"
PRIVATE_PREFIX = "/api/"  # the manager API, logins and admins': never cached


@dataclass(frozen=True, slots=True)
class Limits:
    """Per minute, for each API key or user; anonymous callers share a budget per address.
    0 turns a limit off (e.g. for `make bench`)."""

    per_key_per_minute: int = 600
    anonymous_per_minute: int = 120
    max_body_bytes: int = 1_048_576
    # Failed logins per user name, from every address together: this many at once, then one
    # every `failed_login_refill_seconds` (an address's own budget alone let a password be
    # guessed from many addresses at 120 tries a minute each).
    failed_logins_per_user: int = 10
    failed_login_refill_seconds: float = 60.0


class RateLimiter:
    """Token buckets in this process: a burst up to the budget, refilled evenly over a minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # bucket -> (tokens, at)

    def take(self, bucket: str, per_minute: int) -> float:
        """0 when allowed, else the seconds until the next request would be."""
        if per_minute <= 0:
            return 0.0
        now = self._clock()
        rate = per_minute / 60.0
        tokens, at = self._buckets.get(bucket, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[bucket] = (tokens, now)
            return (1.0 - tokens) / rate
        if len(self._buckets) > 50_000:
            self._buckets.clear()  # bounded memory; a clear only refills everyone's budget
        self._buckets[bucket] = (tokens - 1.0, now)
        return 0.0


class LoginFailures:
    """Failed logins per user name (known or not, so that a 429 tells nothing of who exists):
    a bucket of `burst` tries, one back every `refill_seconds`. While a name's bucket is empty
    its logins are refused before the password is checked, the right one too (or a 200 among
    429s would still tell a guesser which try was right); its API keys and the tokens already
    issued keep working."""

    def __init__(
        self, burst: int, refill_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._burst = float(burst)
        self._refill = refill_seconds
        self._clock = clock
        self._buckets: dict[bytes, tuple[float, float]] = {}  # name's key -> (tries left, at)

    def _left(self, key: bytes, now: float) -> float:
        tries, at = self._buckets.get(key, (self._burst, now))
        return min(self._burst, tries + (now - at) / self._refill)

    @staticmethod
    def _key(username: str) -> bytes:
        # A digest, not the name: a form's name may be as long as the body (1 MiB), times the
        # 50,000 names kept.
        return hashlib.blake2s(username.encode(errors="replace"), digest_size=16).digest()

    def wait(self, username: str) -> float:
        """0 when `username` may try now, else the seconds until it may."""
        if self._burst <= 0:
            return 0.0
        left = self._left(self._key(username), self._clock())
        return 0.0 if left >= 1.0 else (1.0 - left) * self._refill

    def failed(self, username: str) -> None:
        if self._burst <= 0:
            return
        if len(self._buckets) > 50_000:
            self._buckets.clear()  # bounded memory; a clear only refills everyone's budget
        now, key = self._clock(), self._key(username)
        self._buckets[key] = (max(0.0, self._left(key, now) - 1.0), now)


def enforce_login_budget(request: Request, username: str) -> None:
    """429 while `username` has spent its failed logins (LoginFailures)."""
    failures: LoginFailures = request.app.state.login_failures
    wait = failures.wait(username)
    if wait > 0:
        limits: Limits = request.app.state.limits
        raise HTTPException(
            429,
            f"too many failed logins for {username[:64]!r}: {limits.failed_logins_per_user} at "
            f"most, then one every {limits.failed_login_refill_seconds:g} s, from every "
            f"address together; retry in {math.ceil(wait)} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )


def enforce_rate_limit(request: Request, principal: Principal) -> None:
    limiter: RateLimiter = request.app.state.rate_limiter
    limits: Limits = request.app.state.limits
    if principal.role is None:
        client = request.client.host if request.client else "unknown"
        wait = limiter.take(f"addr:{client}", limits.anonymous_per_minute)
        who = (
            f"{limits.anonymous_per_minute} requests a minute without credentials, per address "
            f"({client}); an API key has its own budget"
        )
    else:
        wait = limiter.take(f"{principal.kind}:{principal.id}", limits.per_key_per_minute)
        who = f"{limits.per_key_per_minute} requests a minute for {principal.actor}"
    if wait > 0:
        raise HTTPException(
            429,
            f"rate limit exceeded: {who}; retry in {math.ceil(wait)} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )


class _BodyTooLarge(Exception):
    pass


def _error_body(path: str, status: int, detail: str) -> tuple[bytes, bytes]:
    """Open311's own error format under /open311/, RFC 9457 problem+json elsewhere."""
    if path.startswith(OPEN311_PREFIX):
        if path.endswith(".xml"):
            xml = (
                f"<?xml version='1.0' encoding='utf-8'?>\n<errors><error><code>{status}</code>"
                f"<description>{escape(detail)}</description></error></errors>"
            )
            return xml.encode(), b"text/xml; charset=utf-8"
        return json.dumps([{"code": status, "description": detail}]).encode(), b"application/json"
    body = {"type": "about:blank", "title": "Content Too Large", "status": status, "detail": detail}
    return json.dumps(body).encode(), PROBLEM_JSON.encode()


_NOT_ASCII = re.compile(rb"[\x80-\xff]")


def _percent_encoded(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match[0][0]


class Utf8Forms:
    """A urlencoded body's raw non-ASCII bytes (`curl -d 'password=contrasenya-ñ'` sends them
    as they are) percent-encoded on the way in, so that every form parser reads them as the
    UTF-8 they are: Starlette's reads raw bytes as Latin-1, and a manager whose password has an
    ñ could not log in."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD")
            or not any(
                name == b"content-type"
                and value.lower().startswith(b"application/x-www-form-urlencoded")
                for name, value in scope["headers"]
            )
        ):
            await self.app(scope, receive, send)
            return

        async def utf8_receive() -> Message:
            message = await receive()
            body = message.get("body", b"")
            if message["type"] == "http.request" and not body.isascii():
                message = {**message, "body": _NOT_ASCII.sub(_percent_encoded, body)}
            return message

        await self.app(scope, utf8_receive, send)


class BodySizeLimit:
    """Refuses a body over `max_bytes` with 413, by its Content-Length or, when it is streamed,
    as soon as it grows past the cap."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_bytes <= 0:
            await self.app(scope, receive, send)
            return
        detail = f"the request body is larger than {self.max_bytes} bytes"
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    await self._refuse(scope, send, detail)
                    return
                has_body = True
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:  # HTTP/1.1: no Content-Length and no Transfer-Encoding, no body
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(scope, send, detail)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, detail: str) -> None:
        body, content_type = _error_body(scope["path"], 413, detail)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", content_type), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class PublicCors:
    """CORS for Open311 only: any web page may read the public data and POST requests with its
    api_key (no cookies are involved). The manager API sends no CORS headers: browsers keep
    other sites' pages from calling it with a manager's token."""

    ALLOW = (
        (b"access-control-allow-origin", b"*"),
        (b"access-control-expose-headers", b"Retry-After"),
    )
    PREFLIGHT = (
        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
        (b"access-control-allow-headers", b"Content-Type, X-API-Key"),
        (b"access-control-max-age", b"86400"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(OPEN311_PREFIX):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and any(
            name == b"access-control-request-method" for name, _ in scope["headers"]
        ):
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [*self.ALLOW, *self.PREFLIGHT, (b"vary", b"Origin")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.ALLOW]}
            await send(message)

        await self.app(scope, receive, with_cors)


class SecurityHeaders:
    """The headers that keep browsers from misusing an answer, on every one: no MIME sniffing
    (a citizen's text read as HTML), no framing (clickjacking a manager's screen), no Referer
    (a live updates URL carries its token, ?access_token=). The manager API's answers, staff
    data and tokens, are never stored by a browser or a proxy (`no-store`, unless the route set
    its own Cache-Control); Open311's public reads, the docs and static files may be. With an
    https public URL, HSTS."""

    EVERY = (
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", b"frame-ancestors 'none'"),
        (b"referrer-policy", b"no-referrer"),
    )
    PRIVATE = ((b"cache-control", b"no-store"),)
    HSTS = ((b"strict-transport-security", b"max-age=31536000"),)

    def __init__(self, app: ASGIApp, https: bool = False) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [*self.EVERY, *(self.HSTS if self.https else ())]
        if scope["path"].startswith(PRIVATE_PREFIX):
            extra += self.PRIVATE

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
