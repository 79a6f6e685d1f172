"""A Mastodon server for the tests, written from the official API documentation
(docs.joinmastodon.org): REST paths and payloads, bearer-token auth, `{"error": "..."}` bodies,
X-RateLimit-* headers, min_id/since_id/max_id paging, `Idempotency-Key`, async media processing
(POST /api/v2/media answers 202; GET /api/v1/media/:id answers 206 until processed) and the
streaming API over WebSocket (`/api/v1/streaming?stream=user|user:notification|hashtag&tag=`,
messages `{"stream": [...], "event": ..., "payload": "<JSON string>"}`).

It runs as a FakePlatform (tests/peers/_server.py): uvicorn in a thread, on 127.0.0.1 and a free
port. The test drives it from outside:
citizens post, streams drop, the next calls fail (429, 5xx), a reply's response is held (the
status exists, the client has no answer yet), and `honour_idempotency=False` behaves like
GoToSocial, which ignores the header."""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from plaza.social import MastodonAccount
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.peers._server import FakePlatform, iso

CHAR_LIMIT = 500
RATE_LIMIT = 300
# A 1x1 JPEG-ish payload: the server stores bytes, it does not decode images.
PHOTO = b"\xff\xd8\xff\xe0" + b"plaza-test-photo" * 8 + b"\xff\xd9"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# a client's stream: its event loop, its queue (None ends it) and which stream it follows
_Stream = tuple[asyncio.AbstractEventLoop, asyncio.Queue[str | None], str]


class FakeMastodon(FakePlatform[_Stream]):
    """One instance with the city's account (`@bcn`) and citizens who mention it."""

    name = "Mastodon"
    rate_limit = RATE_LIMIT

    def __init__(self, *, token: str = "city-token", honour_idempotency: bool = True) -> None:
        super().__init__(rate_reset_in=300.0)
        self.token = token
        self.honour_idempotency = honour_idempotency
        self._ids = itertools.count(110_000_000_000_000_001)
        self.city = self._account("bcn")
        self.statuses: dict[str, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self.media: dict[str, dict[str, Any]] = {}
        self.uploads: list[dict[str, Any]] = []
        self._idempotency: dict[str, str] = {}
        self.blocking: set[str] = set()  # citizens (usernames) who blocked the city's account
        # Called (in the server's thread) as each streaming connection is subscribed, before
        # the client has read anything: a test posts there to hit the window right after it.
        self.on_subscribe: Callable[[], object] | None = None

    # --- running ----------------------------------------------------------------------------

    def account(self, hashtags: tuple[str, ...] = ()) -> MastodonAccount:
        """The city's account on this server, as the settings would give it."""
        return MastodonAccount(
            base_url=self.base_url,
            streaming_url=self.base_url.replace("http://", "ws://"),
            token=SecretStr(self.token),
            hashtags=hashtags,
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/accounts/verify_credentials", self._verify_credentials),
                Route("/api/v1/notifications", self._notifications),
                Route("/api/v1/timelines/tag/{hashtag}", self._tag_timeline),
                Route("/api/v1/statuses", self._post_status, methods=["POST"]),
                Route("/api/v1/statuses/{id}", self._get_status),
                Route("/api/v1/statuses/{id}/context", self._context),
                Route("/api/v2/media", self._upload, methods=["POST"]),
                Route("/api/v1/media/{id}", self._get_media),
                Route("/files/{name}", self._file),
                WebSocketRoute("/api/v1/streaming", self._streaming),
            ]
        )

    # --- what the test does -----------------------------------------------------------------

    def _account(self, username: str) -> dict[str, Any]:
        return {
            "id": str(next(self._ids)),
            "username": username,
            "acct": username,
            "display_name": username.title(),
            "url": f"{self.base_url}/@{username}",
        }

    def citizen_posts(
        self,
        text: str,
        *,
        username: str = "marta",
        mention: bool = True,
        tags: tuple[str, ...] = (),
        media: tuple[str, ...] = (),
        language: str = "ca",
        visibility: str = "public",
    ) -> dict[str, Any]:
        """A citizen's status (public unless said); a mention of @bcn notifies the city; both
        are streamed."""
        with self._lock:
            account = self._account(username)
            words = ""
            if mention:
                words += (
                    f'<span class="h-card"><a href="{self.base_url}/@bcn" class="u-url mention">'
                    "@<span>bcn</span></a></span> "
                )
            words += html.escape(text)
            for tag in tags:
                words += (
                    f' <a href="{self.base_url}/tags/{tag}" class="mention hashtag" rel="tag">'
                    f"#<span>{tag}</span></a>"
                )
            status = self._status(account, f"<p>{words}</p>", language=language, tags=tags)
            status["visibility"] = visibility
            status["media_attachments"] = [
                {"id": str(next(self._ids)), "type": "image", "url": url, "description": None}
                for url in media
            ]
            if mention:
                status["mentions"] = [{"id": self.city["id"], "acct": "bcn", "username": "bcn"}]
                notification = {
                    "id": str(next(self._ids)),
                    "type": "mention",
                    "created_at": status["created_at"],
                    "account": account,
                    "status": status,
                }
                self.notifications.append(notification)
                self._push("user:notification", "notification", notification)
                self._push("user", "notification", notification)
            for tag in tags:
                self._push(f"hashtag:{tag.lower()}", "update", status)
            return status

    def blocks_the_city(self, username: str = "marta") -> None:
        """The citizen blocks @bcn: their statuses answer the city's token 404, as Mastodon's
        StatusPolicy hides a blocker's statuses from the blocked; anybody else (no token) still
        sees the public ones."""
        with self._lock:
            self.blocking.add(username)

    def citizen_deletes(self, status_id: str) -> None:
        """The author deletes a status, as Mastodon's RemoveStatusService does: gone from the
        REST API (404) and from the notifications, and a `delete` whose payload is the bare id
        streamed to the mentioned account's `user` stream (not user:notification) and to the
        status's hashtags."""
        with self._lock:
            status = self.statuses.pop(status_id)
            self.notifications = [
                n for n in self.notifications if n.get("status", {}).get("id") != status_id
            ]
        if status["mentions"]:
            self._push("user", "delete", status_id)
        for tag in status["tags"]:
            self._push(f"hashtag:{tag['name']}", "delete", status_id)

    def drop_streams(self) -> None:
        """Closes every streaming connection, as a restarting streaming server does."""
        with self._lock:
            streams, self._streams = self._streams, []
        for loop, queue, _ in streams:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, None)

    def replies_to(self, status_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.statuses.values() if s["in_reply_to_id"] == status_id]

    # --- the API ----------------------------------------------------------------------------

    def _status(
        self,
        account: dict[str, Any],
        content: str,
        *,
        language: str | None,
        tags: tuple[str, ...] = (),
        in_reply_to_id: str | None = None,
    ) -> dict[str, Any]:
        sid = str(next(self._ids))
        status = {
            "id": sid,
            "uri": f"{self.base_url}/users/{account['username']}/statuses/{sid}",
            "url": f"{self.base_url}/@{account['username']}/{sid}",
            "created_at": iso(datetime.now(UTC)),
            "account": account,
            "content": content,
            "spoiler_text": "",
            "visibility": "public",
            "language": language,
            "in_reply_to_id": in_reply_to_id,
            "in_reply_to_account_id": (
                self.statuses[in_reply_to_id]["account"]["id"] if in_reply_to_id else None
            ),
            "reblog": None,
            "media_attachments": [],
            "mentions": [],
            "tags": [{"name": t.lower(), "url": f"{self.base_url}/tags/{t}"} for t in tags],
        }
        self.statuses[sid] = status
        return status

    def _push(self, stream: str, event: str, payload: dict[str, Any] | str) -> None:
        name = ["hashtag", stream.split(":", 1)[1]] if stream.startswith("hashtag:") else [stream]
        # An entity is a JSON string in the payload; a deletion's payload is the id itself.
        body = payload if isinstance(payload, str) else json.dumps(payload)
        message = json.dumps({"stream": name, "event": event, "payload": body})
        for loop, queue, kind in list(self._streams):
            if kind == stream:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(queue.put_nowait, message)

    def _error_body(self, status: int, detail: str) -> dict[str, Any]:
        default = {429: "Too many requests", 503: "Service Unavailable"}.get(status, "Error")
        return {"error": detail or default}

    def _rate_headers(self, remaining: int, reset_at: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": iso(datetime.fromtimestamp(reset_at, UTC)),
        }

    def _gate(self, request: Request) -> Response | None:
        """Logs the call; answers 401 without the token, or the next matching fault."""
        self._record(request)
        if request.url.path.startswith("/files/"):
            return None
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "The access token is invalid")
        return self._fault(request)

    def _json(self, body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers=self._headers())

    @staticmethod
    def _page(items: list[dict[str, Any]], request: Request) -> list[dict[str, Any]]:
        """Mastodon's paging over items sorted oldest first; the answer is newest first."""
        q = request.query_params
        limit = min(int(q.get("limit", "20")), 80 if "notifications" in request.url.path else 40)

        def key(i: dict[str, Any]) -> tuple[int, str]:
            return (len(i["id"]), i["id"])

        items = sorted(items, key=key)
        if q.get("max_id"):
            items = [i for i in items if key(i) < (len(q["max_id"]), q["max_id"])]
        if q.get("since_id"):
            items = [i for i in items if key(i) > (len(q["since_id"]), q["since_id"])]
        if q.get("min_id"):
            items = [i for i in items if key(i) > (len(q["min_id"]), q["min_id"])][:limit]
        return list(reversed(items[-limit:]))

    async def _verify_credentials(self, request: Request) -> Response:
        return self._gate(request) or self._json(self.city)

    async def _notifications(self, request: Request) -> Response:
        if refused := self._gate(request):
            return refused
        types = request.query_params.getlist("types[]")
        with self._lock:
            items = [n for n in self.notifications if not types or n["type"] in types]
        return self._json(self._page(items, request))

    async def _tag_timeline(self, request: Request) -> Response:
        if refused := self._gate(request):
            return refused
        tag = request.path_params["hashtag"].lower()
        with self._lock:
            items = [
                s
                for s in self.statuses.values()
                if any(t["name"] == tag for t in s["tags"]) and s["visibility"] == "public"
            ]
        return self._json(self._page(items, request))

    async def _get_status(self, request: Request) -> Response:
        status = self.statuses.get(request.path_params["id"])
        if "authorization" not in request.headers:
            # Mastodon serves a public or unlisted status to anybody, with no token.
            self._record(request)
            shown = status is not None and status["visibility"] in ("public", "unlisted")
            return self._json(status) if shown else _error(404, "Record not found")
        if refused := self._gate(request):
            return refused
        if status is None or status["account"]["username"] in self.blocking:
            return _error(404, "Record not found")
        return self._json(status)

    async def _context(self, request: Request) -> Response:
        if refused := self._gate(request):
            return refused
        sid = request.path_params["id"]
        with self._lock:
            if sid not in self.statuses:
                return _error(404, "Record not found")
            ancestors: list[dict[str, Any]] = []
            parent = self.statuses[sid]["in_reply_to_id"]
            while parent and parent in self.statuses:
                ancestors.insert(0, self.statuses[parent])
                parent = self.statuses[parent]["in_reply_to_id"]
            descendants, frontier = [], [sid]
            while frontier:
                children = [
                    s for s in self.statuses.values() if s["in_reply_to_id"] in set(frontier)
                ]
                descendants += children
                frontier = [c["id"] for c in children]
        return self._json({"ancestors": ancestors, "descendants": descendants})

    async def _post_status(self, request: Request) -> Response:
        if refused := self._gate(request):
            return refused
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await request.json()
            media_ids = [str(m) for m in body.get("media_ids", [])]
        else:
            form = await request.form()
            body = {k: v for k, v in form.items() if not k.endswith("[]")}
            media_ids = [str(v) for v in form.getlist("media_ids[]")]
        text = str(body.get("status", ""))
        key = request.headers.get("idempotency-key")
        with self._lock:
            if key and self.honour_idempotency and key in self._idempotency:
                return self._json(self.statuses[self._idempotency[key]])
            if not text.strip() and not media_ids:
                return _error(422, "Validation failed: Text can't be blank")
            if len(text) > CHAR_LIMIT:
                return _error(
                    422, f"Validation failed: Text character limit of {CHAR_LIMIT} exceeded"
                )
            reply_to = body.get("in_reply_to_id") or None
            if reply_to and reply_to not in self.statuses:
                return _error(404, "Record not found")
            for mid in media_ids:
                if mid not in self.media:
                    return _error(422, "Validation failed: Media attachments are invalid")
                if self.media[mid]["url"] is None:
                    return _error(
                        422,
                        "Cannot attach files that have not finished processing. "
                        "Try again in a moment!",
                    )
            paragraphs = "".join(
                f"<p>{html.escape(p).replace(chr(10), '<br />')}</p>" for p in text.split("\n\n")
            )
            content = re.sub(
                r"(?<![\w@])@(\w+(?:@[\w.:-]+)?)",
                r'<span class="h-card"><a href="#" class="u-url mention">@<span>\1</span></a></span>',
                paragraphs,
            )
            status = self._status(
                self.city,
                content,
                language=body.get("language") or None,
                in_reply_to_id=reply_to,
            )
            status["visibility"] = body.get("visibility", "public")
            status["media_attachments"] = [self.media[m] for m in media_ids]
            if key:
                self._idempotency[key] = status["id"]
        await self._answer_held()
        return self._json(status)

    async def _upload(self, request: Request) -> Response:
        if refused := self._gate(request):
            return refused
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _error(422, "Validation failed: File can't be blank")
        data = await upload.read()
        mid = str(next(self._ids))
        media = {
            "id": mid,
            "type": "image",
            "url": None,  # processed asynchronously: 202 now, the URL later
            "preview_url": None,
            "description": form.get("description"),
            "blurhash": None,
        }
        with self._lock:
            self.media[mid] = media
            self.uploads.append(
                {"id": mid, "bytes": data, "content_type": upload.content_type, "at": time.time()}
            )
        return self._json(media, status=202)

    async def _get_media(self, request: Request) -> Response:
        if refused := self._gate(request):
            return refused
        media = self.media.get(request.path_params["id"])
        if media is None:
            return _error(404, "Record not found")
        upload = next(u for u in self.uploads if u["id"] == media["id"])
        if media["url"] is None and time.time() - upload["at"] < 0.5:
            return self._json(media, status=206)
        media["url"] = media["preview_url"] = f"{self.base_url}/files/{media['id']}.jpg"
        return self._json(media)

    async def _file(self, request: Request) -> Response:
        self._gate(request)
        return Response(PHOTO, media_type="image/jpeg")

    async def _streaming(self, websocket: WebSocket) -> None:
        q = websocket.query_params
        token = websocket.headers.get("authorization", "").removeprefix("Bearer ")
        if (token or q.get("access_token")) != self.token:
            await websocket.close(code=1008)
            return
        stream = q.get("stream", "")
        kind = f"hashtag:{q.get('tag', '').lower()}" if stream == "hashtag" else stream
        await websocket.accept()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        entry = (asyncio.get_running_loop(), queue, kind)
        with self._lock:
            self._streams.append(entry)
        if self.on_subscribe is not None:
            self.on_subscribe()

        async def until_the_client_leaves() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while (await websocket.receive())["type"] != "websocket.disconnect":
                    pass
            queue.put_nowait(None)

        watcher = asyncio.create_task(until_the_client_leaves())
        try:
            while (message := await queue.get()) is not None:
                await websocket.send_text(message)
            await websocket.close(code=1001)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            watcher.cancel()
            with self._lock:
                if entry in self._streams:
                    self._streams.remove(entry)
