"""The X connector: posts mentioning the city's account, live on the API v2 filtered stream
(one rule of ours, tagged), caught up through the mentions timeline (`since_id`) after a gap,
and polled on that timeline instead while the stream is unavailable (403: not in this access
tier; 429; 5xx) or when configured so. The cursor is the newest post id seen.

Reconnects follow X's documented rules (docs.x.com, "Handling disconnections"): a connection
that drops is reopened at once; network errors back off linearly (+250 ms, up to 16 s), HTTP
errors exponentially (5 s doubling, up to 320 s), 429s exponentially from a minute. A stream
silent for longer than its 20-second heartbeat is taken as dead.

Media keep their URLs (photos) or previews (videos, GIFs); a precise geotag (a GeoJSON Point,
[long, lat]) becomes lat/long; a tagged place gives its name as the address, and its bounding
box's centre as lat/long only when the box is small enough to point at a street."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, cast

import httpx
from plaza.posts import PostIn
from plaza.x import IngestMode, XAccount, newer, snowflake_at
from pydantic import ValidationError

from plaza_ingest.connectors.base import Batch, RetryAfter

log = logging.getLogger(__name__)

PLATFORM = "x"
PAGE = 100  # the mentions timeline's largest page
MAX_MEDIA = 10
SMALL_PLACE_METRES = 1000.0  # a place box wider than this does not locate an incident
# X's codes for "no language" (undetermined, media only, hashtags only...), as "".
NO_LANGUAGE = frozenset({"und", "zxx", "qam", "qct", "qht", "qme", "qst", "art"})
QUERY: Final[Mapping[str, str]] = {
    "tweet.fields": "author_id,created_at,lang,attachments,geo,referenced_tweets,"
    "conversation_id,note_tweet,entities",
    "expansions": "author_id,attachments.media_keys,geo.place_id",
    "user.fields": "username",
    "media.fields": "url,preview_image_url,type",
    "place.fields": "full_name,geo,place_type,country_code",
}
Json = Mapping[str, object]


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _obj(value: object) -> Json:
    return cast(Json, value) if isinstance(value, dict) else {}


def _list(value: object) -> list[Json]:
    return [_obj(v) for v in value] if isinstance(value, list) else []


@dataclass(frozen=True, slots=True)
class Includes:
    """A response's expanded objects, by id: authors, media and places."""

    users: Mapping[str, Json]
    media: Mapping[str, Json]
    places: Mapping[str, Json]

    @classmethod
    def of(cls, *bodies: Json) -> Includes:
        users: dict[str, Json] = {}
        media: dict[str, Json] = {}
        places: dict[str, Json] = {}
        for body in bodies:
            includes = _obj(body.get("includes"))
            users.update((_str(u.get("id")), u) for u in _list(includes.get("users")))
            media.update((_str(m.get("media_key")), m) for m in _list(includes.get("media")))
            places.update((_str(p.get("id")), p) for p in _list(includes.get("places")))
        return cls(users, media, places)


def _place_centre(place: Json) -> tuple[float, float] | None:
    """The centre (lat, long) of a place's bbox [west, south, east, north], if it is small."""
    bbox = _obj(place.get("geo")).get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        return None
    try:
        west, south, east, north = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None
    lat = (south + north) / 2
    height = (north - south) * 111_320
    width = (east - west) * 111_320 * math.cos(math.radians(lat))
    if max(height, width) > SMALL_PLACE_METRES:
        return None
    return lat, (west + east) / 2


def tweet_to_post(tweet: Json, includes: Includes) -> PostIn | None:
    """A post (X's name for a tweet) as Plaza's post, or None (and a warning) if it cannot be."""
    tid = _str(tweet.get("id"))
    author = includes.users.get(_str(tweet.get("author_id")), {})
    username = _str(author.get("username"))
    # Long posts carry their whole text in note_tweet; X escapes &, < and > in text.
    text = html.unescape(_str(_obj(tweet.get("note_tweet")).get("text")) or _str(tweet.get("text")))
    keys = _obj(tweet.get("attachments")).get("media_keys")
    media_urls = []
    for key in keys if isinstance(keys, list) else []:
        media = includes.media.get(_str(key), {})
        url = _str(media.get("url")) or _str(media.get("preview_image_url"))
        if url:
            media_urls.append(url)
    geo = _obj(tweet.get("geo"))
    point = _obj(geo.get("coordinates"))
    coordinates = point.get("coordinates")
    where: dict[str, object] = {}
    if point.get("type") == "Point" and isinstance(coordinates, list) and len(coordinates) == 2:
        where = {"long": coordinates[0], "lat": coordinates[1]}  # GeoJSON: [long, lat]
    place = includes.places.get(_str(geo.get("place_id")), {})
    if place:
        where["address"] = _str(place.get("full_name"))[:500]
        centre = _place_centre(place)
        if centre is not None and "lat" not in where:
            where["lat"], where["long"] = centre
    lang = _str(tweet.get("lang")).lower()
    replied = [r for r in _list(tweet.get("referenced_tweets")) if r.get("type") == "replied_to"]
    try:
        return PostIn.model_validate(
            {
                "platform": PLATFORM,
                "post_id": tid,
                "author_handle": f"@{username}" if username else _str(tweet.get("author_id")),
                "author_id": _str(tweet.get("author_id")),
                "text": (text or "[media]") if media_urls else text,
                "lang": "" if lang in NO_LANGUAGE else lang,
                "created_at": _str(tweet.get("created_at")) or None,
                "media_urls": media_urls[:MAX_MEDIA],
                "reply_to": _str(replied[0].get("id")) if replied else "",
                "url": f"https://x.com/{username}/status/{tid}" if username else None,
                **where,
            }
        )
    except (ValidationError, ValueError) as exc:
        log.warning("x post %s is not a post Plaza can take: %s", tid, exc)
        return None


def reset_in(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds until `x-rate-limit-reset` (epoch seconds), if the header is there."""
    reset = response.headers.get("x-rate-limit-reset", "")
    if not reset.isdecimal():  # isdigit() takes "²", which int() refuses
        return None
    return max(0.0, int(reset) - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class Backoff:
    """X's documented reconnect delays, by kind of failure and consecutive failures `n`."""

    network_step: float = 0.25
    network_max: float = 16.0
    http_first: float = 5.0
    http_max: float = 320.0
    rate_first: float = 60.0
    rate_max: float = 3600.0  # X names no cap; an hour keeps one from growing without end

    def network(self, n: int) -> float:
        return min(self.network_max, self.network_step * n)

    def http(self, n: int) -> float:
        return min(self.http_max, self.http_first * 2.0 ** (n - 1))

    def rate_limited(self, n: int) -> float:
        return min(self.rate_max, self.rate_first * 2.0 ** (n - 1))


class StreamLost(Exception):
    """The filtered stream sent an error (an operational disconnect) instead of posts."""


class XMentions:
    """Posts mentioning the city's X account (not its own posts, not reposts)."""

    def __init__(
        self,
        account: XAccount,
        http: httpx.AsyncClient,
        *,
        backoff: Backoff = Backoff(),
        stall_timeout: float = 30.0,
        mode: IngestMode | None = None,
        poll_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._account = account
        self._http = http
        self._backoff = backoff
        # The heartbeat comes every 20 s: 10 more seconds of silence before calling it dead
        # keeps a late heartbeat from costing a reconnect.
        self._stall_timeout = stall_timeout
        self._mode = mode or account.mode
        self._poll_interval = poll_interval or account.poll_seconds
        self._clock = clock
        self._stream_back_at = 0.0  # while the clock is before it, mentions are polled
        self._network_failures = 0
        self._http_failures = 0
        self._rate_failures = 0
        self.rule = f"@{account.username} -from:{account.username} -is:retweet"
        self.rule_tag = f"plaza:mentions:{account.user_id}"
        self.streaming = False  # connected to the filtered stream (else polling or down)

    @property
    def name(self) -> str:
        return f"x:{self._account.user_id}:mentions"

    @property
    def platform(self) -> str:
        return PLATFORM

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._account.bearer_token.get_secret_value()}"}

    def _url(self, path: str) -> str:
        return f"{self._account.api_url}{path}"

    async def _get(self, path: str, params: Mapping[str, str]) -> Json:
        response = await self._http.get(self._url(path), params=params, headers=self._headers())
        if response.status_code == 429:
            wait = reset_in(response)
            raise RetryAfter(60.0 if wait is None else wait, f"{self.name}: 429 on {path}")
        response.raise_for_status()
        return _obj(response.json())

    def _wanted(self, tweet: Json) -> bool:
        reposted = any(r.get("type") == "retweeted" for r in _list(tweet.get("referenced_tweets")))
        return _str(tweet.get("author_id")) != self._account.user_id and not reposted

    def _posts(self, tweets: Sequence[Json], includes: Includes) -> list[PostIn]:
        posts = (tweet_to_post(t, includes) for t in tweets if self._wanted(t))
        return [p for p in posts if p is not None]

    async def _mentions_after(self, since_id: str) -> AsyncIterator[Batch]:
        """Every mention after `since_id`, oldest first, a page at a time. X pages backwards
        (newest first), so all pages are read before the first batch is yielded."""
        pages: list[Json] = []
        params = {**QUERY, "since_id": since_id, "max_results": str(PAGE)}
        while True:
            body = await self._get(f"/2/users/{self._account.user_id}/mentions", params)
            pages.append(body)
            token = _str(_obj(body.get("meta")).get("next_token"))
            if not token:
                break
            params = {**params, "pagination_token": token}
        includes = Includes.of(*pages)
        tweets = sorted(
            (t for body in pages for t in _list(body.get("data"))),
            key=lambda t: int(_str(t.get("id")) or 0),
        )
        for start in range(0, len(tweets), PAGE):
            chunk = tweets[start : start + PAGE]
            yield Batch(self._posts(chunk, includes), _str(chunk[-1].get("id")))

    async def _ensure_rule(self) -> None:
        """Our rule, tagged, on the app's stream (other rules of the app are left alone)."""
        url = self._url("/2/tweets/search/stream/rules")
        response = await self._http.get(url, headers=self._headers())
        self._check_stream_answer(response, "GET rules")
        ours = [
            r for r in _list(_obj(response.json()).get("data")) if r.get("tag") == self.rule_tag
        ]
        if any(r.get("value") == self.rule for r in ours):
            return
        if ours:  # the handle changed: replace the old rule
            stale = {"delete": {"ids": [_str(r.get("id")) for r in ours]}}
            response = await self._http.post(url, json=stale, headers=self._headers())
            self._check_stream_answer(response, "POST rules (delete)")
        add = {"add": [{"value": self.rule, "tag": self.rule_tag}]}
        response = await self._http.post(url, json=add, headers=self._headers())
        self._check_stream_answer(response, "POST rules (add)")
        log.info("%s: filtered stream rule added: %s", self.name, self.rule)

    def _check_stream_answer(self, response: httpx.Response, what: str) -> None:
        """An answer that keeps us off the stream sets when to try it again."""
        if response.is_success:
            return
        status = response.status_code
        if status == 429:
            self._rate_failures += 1
            wait = max(self._backoff.rate_limited(self._rate_failures), reset_in(response) or 0.0)
        else:
            self._http_failures += 1
            wait = self._backoff.http(self._http_failures)
        try:
            detail = _str(_obj(response.json()).get("detail"))
        except ValueError:
            detail = response.text[:200]
        self._stream_back_at = self._clock() + wait
        raise _StreamRefused(f"{status} on {what}: {detail}", wait)

    async def batches(self, cursor: str | None) -> AsyncIterator[Batch]:
        if cursor is None:  # the very first start: follow from now on, no backfill
            cursor = snowflake_at(datetime.now(UTC))
        if self._mode is IngestMode.POLL:
            async for batch in self._poll(cursor, until=None):
                yield batch
            return
        if self._clock() < self._stream_back_at:
            async for batch in self._poll(cursor, until=self._stream_back_at):
                yield batch
            return
        try:
            async for batch in self._stream(cursor):
                cursor = batch.cursor
                yield batch
        except _StreamRefused as exc:
            log.warning(
                "%s: the filtered stream is unavailable (%s); polling mentions for %.0fs",
                self.name,
                exc,
                exc.seconds,
            )
            async for batch in self._poll(cursor, until=self._stream_back_at):
                yield batch
        except (httpx.TransportError, StreamLost) as exc:
            self._network_failures += 1
            wait = self._backoff.network(self._network_failures)
            raise RetryAfter(
                wait, f"{self.name}: stream lost ({type(exc).__name__}: {exc})"
            ) from exc
        finally:
            self.streaming = False

    async def _stream(self, cursor: str) -> AsyncIterator[Batch]:
        await self._ensure_rule()
        timeout = httpx.Timeout(10.0, read=self._stall_timeout)
        async with self._http.stream(
            "GET",
            self._url("/2/tweets/search/stream"),
            params=QUERY,
            headers=self._headers(),
            timeout=timeout,
        ) as response:
            if not response.is_success:
                await response.aread()
                self._check_stream_answer(response, "GET /2/tweets/search/stream")
            self._http_failures = self._rate_failures = 0
            # Connected first, then caught up: what is posted meanwhile waits in the socket,
            # and the overlap is dropped by id (and by the runner).
            async for batch in self._mentions_after(cursor):
                cursor = batch.cursor
                yield batch
            self.streaming = True
            self._network_failures = 0
            yield Batch((), cursor)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue  # the keep-alive heartbeat
                message = _obj(json.loads(line))
                tweet = _obj(message.get("data"))
                if not tweet:
                    errors = _list(message.get("errors"))
                    detail = "; ".join(
                        _str(e.get("detail")) or _str(e.get("title")) for e in errors
                    )
                    raise StreamLost(detail or line[:200])
                tags = {_str(r.get("tag")) for r in _list(message.get("matching_rules"))}
                tid = _str(tweet.get("id"))
                if (tags and self.rule_tag not in tags) or not newer(tid, cursor):
                    continue
                cursor = tid
                yield Batch(self._posts([tweet], Includes.of(message)), cursor)
        # X ended the stream (a deploy, a restart): the runner reconnects at once.

    async def _poll(self, cursor: str, until: float | None) -> AsyncIterator[Batch]:
        """Mentions after the cursor every poll interval, until `until` (forever if None)."""
        while True:
            async for batch in self._mentions_after(cursor):
                cursor = batch.cursor
                yield batch
            yield Batch((), cursor)
            wait = self._poll_interval
            if until is not None:
                left = until - self._clock()
                if left <= 0:
                    return
                wait = min(wait, left)
            await asyncio.sleep(wait)


class _StreamRefused(Exception):
    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.seconds = seconds
