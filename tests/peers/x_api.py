"""An X API v2 server for the tests, written from the official documentation (docs.x.com):
bearer-token auth (app-only for the filtered stream and its rules, user context for posting and
media upload, as documented), problem+json error bodies, `x-rate-limit-limit/remaining/reset`
headers (epoch seconds) on every answer, snowflake post ids, field selection
(`tweet.fields`, `expansions`, `user.fields`, `media.fields`, `place.fields`: only what is asked
for comes back) and:

- `GET /2/tweets/search/stream`: the filtered stream, newline-delimited JSON
  `{"data", "includes", "matching_rules"}` with `\\r\\n` keep-alive heartbeats (every 20 s, less
  in tests), one connection at a time (a second is refused: 429 TooManyConnections);
- `GET/POST /2/tweets/search/stream/rules` (add, delete);
- `GET /2/users/:id/mentions` and `GET /2/users/:id/tweets`: newest first, `since_id`,
  `until_id`, `max_results` (5-100), `pagination_token`, `meta.newest_id/oldest_id/next_token`;
- `GET /2/tweets/search/recent` (`conversation_id:`, `from:`, `in_reply_to_tweet_id:`);
- `POST /2/tweets` with `reply.in_reply_to_tweet_id` (the replied-to author is mentioned
  automatically; leading mentions do not count towards the 280) and `media.media_ids`,
  answering 201; duplicate text refused (403), as X does;
- `POST /2/media/upload` (multipart `media`, `media_category`) and its STATUS query;
- the batch compliance endpoints (docs.x.com, "Batch compliance": quick start and API
  reference): `POST /2/compliance/jobs` `{"type": "tweets"|"users", "name"}` (app-only; one job
  of a type at a time: another while one is `created` or `in_progress` is refused, 400 here, as
  X names no status for it), `GET /2/compliance/jobs/:id`; the job's `upload_url` and
  `download_url` are signed URLs served here too, without a token (X's are Google Cloud
  Storage's): PUT the ids there one per line (text/plain), then the job is `in_progress`, and
  `complete` (or the next of `job_outcomes`: `failed`, `expired`) once its status has been
  asked `polls_to_complete` times; the download is one JSON line (`id`, `action`,
  `created_at`, `redacted_at`, `reason`) for each uploaded id with a compliance event: a post
  its author deleted (`delete`, reason `deleted`), or one the test gives another action.

It runs as a FakePlatform (tests/peers/_server.py): uvicorn in a thread, on 127.0.0.1 and a free
port. The test drives it from outside:
citizens post (with photos and geotags), streams drop, the next calls fail (429, 5xx, 403),
and a reply's answer is held (the post exists, the client has no answer yet)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from plaza.x import EPOCH_MS, XAccount
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.peers._server import FakePlatform, iso

RATE_LIMIT = 450
WINDOW = 900  # X's rate-limit windows are 15 minutes
MAX_WEIGHTED = 280
URL_WEIGHT = 23
PHOTO = b"\xff\xd8\xff\xe0" + b"plaza-x-photo" * 8 + b"\xff\xd9"
PROBLEM_JSON = "application/problem+json"
URL = re.compile(r"https?://\S+")
LEADING_MENTIONS = re.compile(r"^(@\w+\s+)+")
PROBLEMS = {
    400: ("Invalid Request", "https://api.x.com/2/problems/invalid-request"),
    401: ("Unauthorized", "about:blank"),
    403: ("Forbidden", "about:blank"),
    404: ("Not Found Error", "https://api.x.com/2/problems/resource-not-found"),
    429: ("Too Many Requests", "about:blank"),
    500: ("Internal Server Error", "about:blank"),
    502: ("Bad Gateway", "about:blank"),
    503: ("Service Unavailable", "about:blank"),
}
APP_ONLY = (
    "Authenticating with OAuth 2.0 User Context is forbidden for this endpoint.  Supported "
    "authentication types are [OAuth 2.0 Application-Only]."
)
USER_CONTEXT = (
    "Authenticating with OAuth 2.0 Application-Only is forbidden for this endpoint.  Supported "
    "authentication types are [OAuth 1.0a User Context, OAuth 2.0 User Context]."
)


def weighted_length(text: str) -> int:
    """twitter-text's count: URLs 23, code points in the Latin, punctuation and general ranges
    1, everything else (CJK, emoji) 2."""
    text = URL.sub("x" * URL_WEIGHT, text)
    light = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
    return sum(1 if any(a <= ord(c) <= b for a, b in light) else 2 for c in text)


def problem(status: int, detail: str = "", **extra: Any) -> dict[str, Any]:
    title, kind = PROBLEMS.get(status, ("Error", "about:blank"))
    return {"title": title, "detail": detail or title, "type": kind, "status": status, **extra}


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str | None]
    params: dict[str, str]


class FakeX(FakePlatform[_Stream]):
    """X with the city's account (`@bcn`) and citizens who mention it."""

    name = "X"
    rate_limit = RATE_LIMIT
    error_media_type = PROBLEM_JSON

    def __init__(
        self,
        *,
        app_token: str = "x-app-token",
        user_token: str = "x-user-token",
        heartbeat: float = 20.0,
        max_streams: int = 1,
    ) -> None:
        super().__init__(rate_reset_in=float(WINDOW))
        self.app_token = app_token
        self.user_token = user_token
        self.heartbeat = heartbeat
        self.max_streams = max_streams
        self._sequence = itertools.count()
        self._last_ms = 0
        self.users: dict[str, dict[str, Any]] = {}
        self.city = self._user("bcn")
        self.tweets: dict[str, dict[str, Any]] = {}
        self.media: dict[str, dict[str, Any]] = {}  # by media_key
        self.places: dict[str, dict[str, Any]] = {}
        self.uploads: list[dict[str, Any]] = []
        self.rules: list[dict[str, str]] = []
        self._window_start = time.time()
        self.jobs: dict[str, dict[str, Any]] = {}  # compliance jobs, by id
        self.uploaded: dict[str, list[str]] = {}  # the ids uploaded to each job
        self.compliance: dict[str, dict[str, Any]] = {}  # by post id: its compliance event
        self.job_outcomes: deque[str] = deque()  # what the next jobs become (else complete)
        self.polls_to_complete = 1
        self._polls: dict[str, int] = {}

    # --- running ----------------------------------------------------------------------------

    def account(self) -> XAccount:
        """The city's account on this server, as the settings would give it."""
        return XAccount(
            api_url=self.base_url,
            user_id=self.city["id"],
            username=self.city["username"],
            bearer_token=SecretStr(self.app_token),
            user_token=SecretStr(self.user_token),
        )

    def settings(self) -> dict[str, str]:
        """The city's account on this server as Plaza's environment (the tokens apart)."""
        return {
            "PLAZA_X_API_URL": self.base_url,
            "PLAZA_X_USER_ID": self.city["id"],
            "PLAZA_X_USERNAME": self.city["username"],
        }

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/2/tweets/search/stream", self._stream),
                Route("/2/tweets/search/stream/rules", self._rules, methods=["GET", "POST"]),
                Route("/2/tweets/search/recent", self._search_recent),
                Route("/2/tweets", self._create_tweet, methods=["POST"]),
                Route("/2/tweets/{id}", self._get_tweet),
                Route("/2/users/{id}/mentions", self._mentions),
                Route("/2/users/{id}/tweets", self._timeline),
                Route("/2/media/upload", self._upload, methods=["POST"]),
                Route("/2/media/upload", self._upload_status, methods=["GET"]),
                Route("/media/{name}", self._file),
                Route("/2/compliance/jobs", self._create_job, methods=["POST"]),
                Route("/2/compliance/jobs/{id}", self._get_job),
                Route("/compliance/upload/{id}", self._upload_ids, methods=["PUT"]),
                Route("/compliance/download/{id}", self._download_results),
            ]
        )

    # --- what the test does -----------------------------------------------------------------

    def _id(self) -> str:
        """A snowflake: milliseconds since X's epoch, then a sequence number."""
        with self._lock:
            ms = max(int(time.time() * 1000), self._last_ms)
            self._last_ms = ms
            return str(((ms - EPOCH_MS) << 22) | (next(self._sequence) % 4096))

    def _user(self, username: str) -> dict[str, Any]:
        for user in self.users.values():
            if user["username"] == username:
                return user
        user = {"id": str(int(self._id()) >> 10), "username": username, "name": username.title()}
        self.users[user["id"]] = user
        return user

    def citizen_posts(
        self,
        text: str,
        *,
        username: str = "marta",
        mention: bool = True,
        photos: int = 0,
        point: tuple[float, float] | None = None,
        place: dict[str, Any] | None = None,
        lang: str = "ca",
        in_reply_to: str | None = None,
    ) -> dict[str, Any]:
        """A citizen's post (`point` is (lat, long); `place` a place with its bbox); it reaches
        the filtered stream when it matches a rule."""
        with self._lock:
            author = self._user(username)
            tid = self._id()
            tweet: dict[str, Any] = {
                "id": tid,
                "text": (f"@{self.city['username']} " if mention else "") + html.escape(text),
                "author_id": author["id"],
                "created_at": iso(datetime.now(UTC)),
                "lang": lang,
                "conversation_id": tid,
                "edit_history_tweet_ids": [tid],
            }
            if in_reply_to:
                tweet["conversation_id"] = self.tweets[in_reply_to]["conversation_id"]
                tweet["referenced_tweets"] = [{"type": "replied_to", "id": in_reply_to}]
            if photos:
                keys = [self._photo(f"3_{self._id()}") for _ in range(photos)]
                tweet["attachments"] = {"media_keys": keys}
            if point is not None or place is not None:
                tweet["geo"] = {}
            if place is not None:
                self.places[place["id"]] = place
                tweet["geo"]["place_id"] = place["id"]
            if point is not None:
                tweet["geo"]["coordinates"] = {"type": "Point", "coordinates": [point[1], point[0]]}
            self.tweets[tid] = tweet
        self._publish(tweet)
        return tweet

    def deletes(self, tweet_id: str) -> None:
        """Its author deletes the post: gone from the API; a compliance job reports it."""
        self.compliance_event(tweet_id, "delete", "deleted")
        with self._lock:
            self.tweets.pop(tweet_id, None)

    def compliance_event(self, tweet_id: str, action: str, reason: str) -> None:
        """What a compliance job reports about the post from now on (`protect`, `scrub_geo`...)."""
        with self._lock:
            created = self.tweets[tweet_id]["created_at"] if tweet_id in self.tweets else ""
            self.compliance[tweet_id] = {
                "id": tweet_id,
                "action": action,
                "created_at": created,
                "redacted_at": iso(datetime.now(UTC)),
                "reason": reason,
            }

    def _photo(self, key: str) -> str:
        """A photo served here, known by its media key (which it returns)."""
        url = f"{self.base_url}/media/{key}.jpg"
        self.media[key] = {"media_key": key, "type": "photo", "url": url}
        return key

    def drop_streams(self, *, error: bool = False) -> None:
        """Ends every stream connection (with an operational-disconnect message if `error`)."""
        with self._lock:
            streams, self._streams = self._streams, []
        message = json.dumps(
            {
                "errors": [
                    {
                        "title": "operational-disconnect",
                        "disconnect_type": "UpstreamOperationalDisconnect",
                        "detail": "This stream has been disconnected upstream for operational "
                        "reasons.",
                        "type": "https://api.x.com/2/problems/operational-disconnect",
                    }
                ]
            }
        )
        for stream in streams:
            with contextlib.suppress(RuntimeError):
                if error:
                    stream.loop.call_soon_threadsafe(stream.queue.put_nowait, message)
                stream.loop.call_soon_threadsafe(stream.queue.put_nowait, None)

    def rate_limited(self, seconds: float) -> dict[str, str]:
        """The headers of a 429: the endpoint's budget is spent until the reset (epoch seconds,
        whole: the client must not wake before it)."""
        return self._rate_headers(0, int(time.time() + seconds) + 1)

    def replies_to(self, tweet_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                t
                for t in self.tweets.values()
                if {"type": "replied_to", "id": tweet_id} in t.get("referenced_tweets", [])
            ]

    # --- the API ----------------------------------------------------------------------------

    def _error_body(self, status: int, detail: str) -> dict[str, Any]:
        return problem(status, detail)

    def _rate_headers(self, remaining: int, reset_at: float) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(RATE_LIMIT),
            "x-rate-limit-remaining": str(remaining),
            "x-rate-limit-reset": str(int(reset_at)),
        }

    def _json(self, body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers=self._headers())

    def _problem(self, status: int, detail: str = "", **extra: Any) -> JSONResponse:
        return JSONResponse(
            problem(status, detail, **extra),
            status_code=status,
            headers=self._headers(),
            media_type=PROBLEM_JSON,
        )

    @staticmethod
    def _fault_applies(fault_path: str, path: str) -> bool:
        """The request path, or a prefix of it when it ends with /."""
        return path == fault_path or (fault_path.endswith("/") and path.startswith(fault_path))

    async def _gate(self, request: Request, auth: str) -> Response | None:
        """Logs the call; checks the token (`auth`: app, user or any); the next fault."""
        self._record(request, await request.body())
        token = request.headers.get("authorization", "")
        if token not in (f"Bearer {self.app_token}", f"Bearer {self.user_token}"):
            return JSONResponse(
                {
                    "title": "Unauthorized",
                    "type": "about:blank",
                    "status": 401,
                    "detail": "Unauthorized",
                },
                status_code=401,
                headers=self._headers(),
            )
        if auth == "app" and token != f"Bearer {self.app_token}":
            return self._unsupported(APP_ONLY)
        if auth == "user" and token != f"Bearer {self.user_token}":
            return self._unsupported(USER_CONTEXT)
        return self._fault(request)

    def _unsupported(self, detail: str) -> JSONResponse:
        body = {
            "title": "Unsupported Authentication",
            "detail": detail,
            "type": "https://api.x.com/2/problems/unsupported-authentication",
            "status": 403,
        }
        return JSONResponse(body, status_code=403, headers=self._headers())

    @staticmethod
    def _fields(query: Mapping[str, str], name: str) -> set[str]:
        return {f for f in query.get(name, "").split(",") if f}

    def _view(self, tweets: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
        """`data` and `includes` as asked: default fields, `tweet.fields`, `expansions`."""
        wanted = self._fields(query, "tweet.fields")
        expansions = self._fields(query, "expansions")
        data = [
            {
                k: v
                for k, v in t.items()
                if k in {"id", "text", "edit_history_tweet_ids"} or k in wanted
            }
            for t in tweets
        ]
        includes: dict[str, list[dict[str, Any]]] = {}
        if "author_id" in expansions:
            user_fields = self._fields(query, "user.fields") | {"id", "name", "username"}
            authors = {t["author_id"] for t in tweets}
            includes["users"] = [
                {k: v for k, v in self.users[a].items() if k in user_fields} for a in authors
            ]
        if "attachments.media_keys" in expansions:
            media_fields = self._fields(query, "media.fields") | {"media_key", "type"}
            keys = [k for t in tweets for k in t.get("attachments", {}).get("media_keys", [])]
            if keys:
                includes["media"] = [
                    {k: v for k, v in self.media[key].items() if k in media_fields} for key in keys
                ]
        if "geo.place_id" in expansions:
            place_fields = self._fields(query, "place.fields") | {"id", "full_name"}
            ids = {t["geo"]["place_id"] for t in tweets if t.get("geo", {}).get("place_id")}
            if ids:
                includes["places"] = [
                    {k: v for k, v in self.places[p].items() if k in place_fields} for p in ids
                ]
        body: dict[str, Any] = {"data": data}
        if includes:
            body["includes"] = includes
        return body

    def _page(self, items: list[dict[str, Any]], request: Request) -> JSONResponse:
        """Newest first, after since_id, before until_id, `max_results` at a time."""
        q = request.query_params
        try:
            limit = int(q.get("max_results", "10"))
        except ValueError:
            limit = 0
        if not 5 <= limit <= 100:
            return self._problem(
                400,
                "One or more parameters to your request was invalid.",
                errors=[{"parameters": {"max_results": [q.get("max_results")]}}],
            )
        items = sorted(items, key=lambda t: int(t["id"]), reverse=True)
        if q.get("since_id"):
            items = [t for t in items if int(t["id"]) > int(q["since_id"])]
        if q.get("until_id"):
            items = [t for t in items if int(t["id"]) < int(q["until_id"])]
        if q.get("pagination_token"):
            items = [t for t in items if int(t["id"]) < int(q["pagination_token"], 16)]
        page = items[:limit]
        if not page:
            return self._json({"meta": {"result_count": 0}})
        body = self._view(page, request.query_params)
        meta: dict[str, Any] = {
            "result_count": len(page),
            "newest_id": page[0]["id"],
            "oldest_id": page[-1]["id"],
        }
        if len(items) > limit:
            meta["next_token"] = format(int(page[-1]["id"]), "x")
        body["meta"] = meta
        return self._json(body)

    def _mentioned(self, tweet: dict[str, Any], username: str) -> bool:
        return bool(re.search(rf"(?<!\w)@{re.escape(username)}\b", tweet["text"], re.I))

    async def _mentions(self, request: Request) -> Response:
        if refused := await self._gate(request, "any"):
            return refused
        user = self.users.get(request.path_params["id"])
        if user is None:
            return self._problem(404, "Could not find user with id.")
        with self._lock:
            items = [
                t
                for t in self.tweets.values()
                if self._mentioned(t, user["username"]) and t["author_id"] != user["id"]
            ]
        return self._page(items, request)

    async def _timeline(self, request: Request) -> Response:
        if refused := await self._gate(request, "any"):
            return refused
        uid = request.path_params["id"]
        with self._lock:
            items = [t for t in self.tweets.values() if t["author_id"] == uid]
        return self._page(items, request)

    async def _search_recent(self, request: Request) -> Response:
        if refused := await self._gate(request, "any"):
            return refused
        terms = dict(
            term.split(":", 1)
            for term in request.query_params.get("query", "").split()
            if ":" in term
        )
        with self._lock:
            items = list(self.tweets.values())
        if "conversation_id" in terms:
            items = [t for t in items if t["conversation_id"] == terms["conversation_id"]]
        if "from" in terms:
            author = self._user(terms["from"])["id"]
            items = [t for t in items if t["author_id"] == author]
        if "in_reply_to_tweet_id" in terms:
            wanted = {"type": "replied_to", "id": terms["in_reply_to_tweet_id"]}
            items = [t for t in items if wanted in t.get("referenced_tweets", [])]
        return self._page(items, request)

    async def _get_tweet(self, request: Request) -> Response:
        if refused := await self._gate(request, "any"):
            return refused
        tweet = self.tweets.get(request.path_params["id"])
        if tweet is None:
            return self._problem(404, "Could not find tweet with id.")
        body = self._view([tweet], request.query_params)
        body["data"] = body["data"][0]
        return self._json(body)

    async def _create_tweet(self, request: Request) -> Response:
        if refused := await self._gate(request, "user"):
            return refused
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self._problem(400, "Request body is not valid JSON.")
        text = str(body.get("text", ""))
        in_reply_to = str((body.get("reply") or {}).get("in_reply_to_tweet_id") or "")
        media_ids = [str(m) for m in (body.get("media") or {}).get("media_ids", [])]
        with self._lock:
            if not text.strip() and not media_ids:
                return self._problem(400, "One or more parameters to your request was invalid.")
            if in_reply_to and in_reply_to not in self.tweets:
                return self._problem(
                    403, "You attempted to reply to a Tweet that is deleted or not visible to you."
                )
            for mid in media_ids:
                if not any(u["id"] == mid for u in self.uploads):
                    return self._problem(400, f"Your media IDs are invalid: {mid}")
            if in_reply_to:
                parent = self.tweets[in_reply_to]
                author = self.users[parent["author_id"]]["username"]
                if not text.lower().startswith(f"@{author.lower()}"):
                    text = f"@{author} {text}"  # the replied-to author is mentioned for us
            counted = LEADING_MENTIONS.sub("", text) if in_reply_to else text
            if weighted_length(counted) > MAX_WEIGHTED:
                return self._problem(
                    400,
                    "One or more parameters to your request was invalid.",
                    errors=[{"message": f"Tweet text is longer than {MAX_WEIGHTED} characters."}],
                )
            escaped = html.escape(text, quote=False)
            mine = [t for t in self.tweets.values() if t["author_id"] == self.city["id"]]
            if any(t["text"] == escaped for t in mine):
                return self._problem(
                    403, "You are not allowed to create a Tweet with duplicate content."
                )
            tid = self._id()
            tweet: dict[str, Any] = {
                "id": tid,
                "text": escaped,
                "author_id": self.city["id"],
                "created_at": iso(datetime.now(UTC)),
                "lang": "und",
                "conversation_id": self.tweets[in_reply_to]["conversation_id"]
                if in_reply_to
                else tid,
                "edit_history_tweet_ids": [tid],
            }
            if in_reply_to:
                tweet["referenced_tweets"] = [{"type": "replied_to", "id": in_reply_to}]
                tweet["in_reply_to_user_id"] = self.tweets[in_reply_to]["author_id"]
            if media_ids:
                keys = [self._photo(f"3_{mid}") for mid in media_ids]
                tweet["attachments"] = {"media_keys": keys}
            self.tweets[tid] = tweet
        self._publish(tweet)
        await self._answer_held()
        return self._json(
            {"data": {"id": tid, "text": escaped, "edit_history_tweet_ids": [tid]}}, 201
        )

    async def _upload(self, request: Request) -> Response:
        if refused := await self._gate(request, "user"):
            return refused
        form = await request.form()
        upload = form.get("media")
        category = form.get("media_category")
        if (
            upload is None
            or isinstance(upload, str)
            or category
            not in {
                "tweet_image",
                "dm_image",
                "subtitles",
            }
        ):
            return self._problem(400, "One or more parameters to your request was invalid.")
        data = await upload.read()
        mid = self._id()
        with self._lock:
            self.uploads.append(
                {
                    "id": mid,
                    "bytes": data,
                    "content_type": upload.content_type,
                    "media_type": form.get("media_type"),
                    "category": category,
                }
            )
        return self._json(
            {
                "data": {
                    "id": mid,
                    "media_key": f"3_{mid}",
                    "size": len(data),
                    "expires_after_secs": 86400,
                    "image": {"image_type": "image/jpeg", "w": 1, "h": 1},
                }
            }
        )

    async def _upload_status(self, request: Request) -> Response:
        if refused := await self._gate(request, "user"):
            return refused
        mid = request.query_params.get("media_id", "")
        if not any(u["id"] == mid for u in self.uploads):
            return self._problem(400, "Invalid media_id.")
        return self._json(
            {
                "data": {
                    "id": mid,
                    "media_key": f"3_{mid}",
                    "processing_info": {"state": "succeeded", "progress_percent": 100},
                }
            }
        )

    async def _file(self, request: Request) -> Response:
        return Response(PHOTO, media_type="image/jpeg")

    # --- batch compliance -------------------------------------------------------------------

    def _signed(self, kind: str, job_id: str) -> str:
        return f"{self.base_url}/compliance/{kind}/{job_id}?X-Goog-Signature={job_id[::-1]}"

    async def _create_job(self, request: Request) -> Response:
        if refused := await self._gate(request, "app"):
            return refused
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self._problem(400, "Request body is not valid JSON.")
        kind = body.get("type") if isinstance(body, dict) else None
        if kind not in ("tweets", "users"):
            return self._problem(
                400,
                "One or more parameters to your request was invalid.",
                errors=[
                    {"parameters": {"type": [kind]}, "message": "type must be tweets or users"}
                ],
            )
        now = datetime.now(UTC)
        with self._lock:
            if any(
                j["type"] == kind and j["status"] in ("created", "in_progress")
                for j in self.jobs.values()
            ):
                return self._problem(400, f"You can have one concurrent job per job type: {kind}")
            job_id = self._id()
            job = {
                "id": job_id,
                "type": kind,
                "name": str(body.get("name", "")),
                "status": "created",
                "resumable": False,
                "created_at": iso(now),
                "upload_url": self._signed("upload", job_id),
                "upload_expires_at": iso(now + timedelta(minutes=15)),
                "download_url": self._signed("download", job_id),
                "download_expires_at": iso(now + timedelta(days=7)),
            }
            self.jobs[job_id] = job
        return self._json({"data": job})

    async def _get_job(self, request: Request) -> Response:
        if refused := await self._gate(request, "app"):
            return refused
        job_id = request.path_params["id"]
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return self._problem(404, "Could not find job with id.")
            if job["status"] == "in_progress":
                self._polls[job_id] = self._polls.get(job_id, 0) + 1
                if self._polls[job_id] >= self.polls_to_complete:
                    outcomes = self.job_outcomes
                    job["status"] = outcomes.popleft() if outcomes else "complete"
            return self._json({"data": dict(job)})

    def _signature_ok(self, request: Request, kind: str) -> dict[str, Any] | None:
        job = self.jobs.get(request.path_params["id"])
        if job is None or str(request.url) != job[f"{kind}_url"]:
            return None
        return job

    async def _upload_ids(self, request: Request) -> Response:
        body = await request.body()
        self._record(request, body)
        if fault := self._fault(request):
            return fault
        with self._lock:
            job = self._signature_ok(request, "upload")
            if job is None or job["status"] != "created":
                return Response("<Error><Code>AccessDenied</Code></Error>", status_code=403)
            self.uploaded[job["id"]] = [i for i in body.decode().splitlines() if i.strip()]
            job["status"] = "in_progress"
        return Response(status_code=200)

    async def _download_results(self, request: Request) -> Response:
        self._record(request)
        if fault := self._fault(request):
            return fault
        with self._lock:
            job = self._signature_ok(request, "download")
            if job is None or job["status"] != "complete":
                return Response("<Error><Code>NoSuchKey</Code></Error>", status_code=404)
            lines = [
                json.dumps(self.compliance[i])
                for i in self.uploaded.get(job["id"], [])
                if i in self.compliance
            ]
        return Response("".join(f"{line}\n" for line in lines), media_type="application/json")

    # --- the filtered stream ----------------------------------------------------------------

    def _matches(self, rule: str, tweet: dict[str, Any]) -> bool:
        """Enough of the rule language for the tests: @mentions, #hashtags and words (all
        required), and the negations -from:, -is:retweet, -is:reply."""
        author = self.users[tweet["author_id"]]["username"].lower()
        text = html.unescape(tweet["text"]).lower()
        for term in rule.split():
            negate = term.startswith("-")
            term = term.lstrip("-").lower()
            if term.startswith("from:"):
                hit = author == term[5:].lstrip("@")
            elif term == "is:retweet":
                hit = any(r["type"] == "retweeted" for r in tweet.get("referenced_tweets", []))
            elif term == "is:reply":
                hit = any(r["type"] == "replied_to" for r in tweet.get("referenced_tweets", []))
            elif term.startswith("@"):
                hit = bool(re.search(rf"(?<!\w){re.escape(term)}\b", text))
            else:
                hit = term in text
            if hit == negate:
                return False
        return True

    def _publish(self, tweet: dict[str, Any]) -> None:
        with self._lock:
            matching = [
                {"id": r["id"], "tag": r.get("tag", "")}
                for r in self.rules
                if self._matches(r["value"], tweet)
            ]
            streams = list(self._streams)
        if not matching:
            return
        for stream in streams:
            body = self._view([tweet], stream.params)
            body["data"] = body["data"][0]
            body["matching_rules"] = matching
            with contextlib.suppress(RuntimeError):
                stream.loop.call_soon_threadsafe(stream.queue.put_nowait, json.dumps(body))

    async def _rules(self, request: Request) -> Response:
        if refused := await self._gate(request, "app"):
            return refused
        sent = iso(datetime.now(UTC))
        if request.method == "GET":
            with self._lock:
                rules = list(self.rules)
            if not rules:
                return self._json({"meta": {"sent": sent, "result_count": 0}})
            return self._json({"data": rules, "meta": {"sent": sent, "result_count": len(rules)}})
        body = json.loads(await request.body())
        with self._lock:
            if "add" in body:
                created = []
                for rule in body["add"]:
                    if any(r["value"] == rule["value"] for r in self.rules):
                        continue
                    new = {"id": self._id(), "value": rule["value"]}
                    if rule.get("tag"):
                        new["tag"] = rule["tag"]
                    self.rules.append(new)
                    created.append(new)
                summary = {
                    "created": len(created),
                    "not_created": len(body["add"]) - len(created),
                    "valid": len(body["add"]),
                    "invalid": 0,
                }
                return self._json(
                    {"data": created, "meta": {"sent": sent, "summary": summary}}, 201
                )
            ids = set((body.get("delete") or {}).get("ids", []))
            before = len(self.rules)
            self.rules = [r for r in self.rules if r["id"] not in ids]
            summary = {
                "deleted": before - len(self.rules),
                "not_deleted": len(ids) - before + len(self.rules),
            }
            return self._json({"meta": {"sent": sent, "summary": summary}})

    async def _stream(self, request: Request) -> Response:
        if refused := await self._gate(request, "app"):
            return refused
        with self._lock:
            if len(self._streams) >= self.max_streams:
                return self._json(
                    {
                        "title": "ConnectionException",
                        "detail": "This stream is currently at the maximum allowed connection "
                        "limit.",
                        "connection_issue": "TooManyConnections",
                        "type": "https://api.x.com/2/problems/streaming-connection",
                    },
                    429,
                )
            stream = _Stream(
                asyncio.get_running_loop(), asyncio.Queue(), dict(request.query_params)
            )
            self._streams.append(stream)

        async def lines() -> AsyncIterator[bytes]:
            try:
                while True:
                    try:
                        message = await asyncio.wait_for(stream.queue.get(), self.heartbeat)
                    except TimeoutError:
                        yield b"\r\n"  # keep-alive
                        continue
                    if message is None:
                        return
                    yield message.encode() + b"\r\n"
            finally:
                with self._lock:
                    if stream in self._streams:
                        self._streams.remove(stream)

        return StreamingResponse(lines(), media_type="application/json", headers=self._headers())
