"""The Mastodon connector: the city account's mentions and followed hashtags, live over the
streaming API's WebSocket, caught up through the REST API from the last seen id after a gap.

Mastodon has no geotags; media attachments keep their URLs; HTML content becomes plain text.
A streamed `delete` (its payload the status id) is a deletion: Mastodon streams it to the
timelines that showed the status (a hashtag's; the mentioned accounts' `user` stream) and only
its author or the server's moderators delete a status."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import cast
from urllib.parse import quote, urlencode, urlsplit

import httpx
from plaza.posts import PostIn
from plaza.social import MastodonAccount, html_to_text
from pydantic import ValidationError
from websockets.asyncio.client import connect

from plaza_ingest.connectors.base import Batch, Deletion, RetryAfter

log = logging.getLogger(__name__)

PLATFORM = "mastodon"
PAGE = 40  # the REST API's largest page
Json = Mapping[str, object]


class Source(StrEnum):
    MENTIONS = "mentions"
    HASHTAG = "hashtag"


def newer(a: str, b: str) -> bool:
    """Mastodon ids (digits) and GoToSocial's (ULIDs) both order by length, then as text."""
    return (len(a), a) > (len(b), b)


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _obj(value: object) -> Json:
    return cast(Json, value) if isinstance(value, dict) else {}


def status_to_post(status: Json, instance_host: str) -> PostIn | None:
    """A status as a post, or None (and a warning) if it cannot be one."""
    account = _obj(status.get("account"))
    acct = _str(account.get("acct"))
    handle = f"@{acct}" if "@" in acct else f"@{acct}@{instance_host}"
    media = status.get("media_attachments")
    media_urls = [
        _str(m.get("url")) for m in (_obj(x) for x in (media if isinstance(media, list) else []))
    ]
    text = html_to_text(_str(status.get("content")))
    if _str(status.get("spoiler_text")):
        text = f"{status['spoiler_text']}\n\n{text}"
    try:
        return PostIn.model_validate(
            {
                "platform": PLATFORM,
                "post_id": _str(status.get("id")),
                "author_handle": handle,
                "author_id": _str(account.get("id")),
                "text": (text or "[media]") if media_urls else text,
                "lang": _str(status.get("language")).lower(),
                "created_at": _str(status.get("created_at")) or None,
                "media_urls": [u for u in media_urls if u][:10],
                "reply_to": _str(status.get("in_reply_to_id")),
                "url": _str(status.get("url")) or None,
            }
        )
    except (ValidationError, ValueError) as exc:
        log.warning("mastodon status %s is not a post Plaza can take: %s", status.get("id"), exc)
        return None


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from a 429's Retry-After or X-RateLimit-Reset (ISO 8601), if any."""
    if response.status_code != 429:
        return None
    now = datetime.now().astimezone()
    value = response.headers.get("retry-after")
    if value:
        if value.isdecimal():  # isdigit() takes "²", which float() refuses
            return float(value)
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    reset = response.headers.get("x-ratelimit-reset")
    if reset:
        at = datetime.fromisoformat(reset.replace("Z", "+00:00"))
        return max(0.0, (at - now).total_seconds())
    return 60.0


class MastodonStream:
    """One stream of the city's account: its mentions (notifications of type mention; the
    cursor is a notification id) or one hashtag's public timeline (the cursor is a status id)."""

    def __init__(
        self,
        account: MastodonAccount,
        source: Source,
        http: httpx.AsyncClient,
        *,
        hashtag: str = "",
        open_timeout: float = 10.0,
    ) -> None:
        if (source is Source.HASHTAG) != bool(hashtag):
            raise ValueError("a hashtag stream needs its hashtag, and only it")
        self._account = account
        self._source = source
        self._hashtag = hashtag
        self._http = http
        self._open_timeout = open_timeout
        self._host = urlsplit(account.base_url).netloc
        self._own_id: str | None = None

    @property
    def name(self) -> str:
        what = "mentions" if self._source is Source.MENTIONS else f"tag:{self._hashtag.lower()}"
        return f"mastodon:{self._host}:{what}"

    @property
    def platform(self) -> str:
        return PLATFORM

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._account.token.get_secret_value()}"}

    def _stream_url(self) -> str:
        if self._source is Source.MENTIONS:
            # `user`, not `user:notification`: the same notifications, and also the deletions
            # of statuses that mentioned the account (Mastodon sends those to the account's
            # timeline channel, which user:notification does not carry).
            query = {"stream": "user"}
        else:
            query = {"stream": "hashtag", "tag": self._hashtag}
        return f"{self._account.streaming_url}/api/v1/streaming?{urlencode(query)}"

    async def _get(self, path: str, params: Sequence[tuple[str, str]]) -> httpx.Response:
        response = await self._http.get(
            f"{self._account.base_url}{path}",
            params=tuple(params),
            headers=self._headers(),
        )
        wait = retry_after(response)
        if wait is not None:
            raise RetryAfter(wait, f"{self.name}: rate limited on {path}")
        response.raise_for_status()
        return response

    async def _own_account_id(self) -> str:
        if self._own_id is None:
            me = (await self._get("/api/v1/accounts/verify_credentials", [])).json()
            self._own_id = _str(_obj(me).get("id"))
        return self._own_id

    async def _page(self, min_id: str | None, limit: int) -> list[tuple[str, Json]]:
        """(cursor id, status) pairs, oldest first, just after `min_id` (the newest if None)."""
        params: list[tuple[str, str]] = [("limit", str(limit))]
        if min_id is not None:
            params.append(("min_id", min_id))
        if self._source is Source.MENTIONS:
            params.append(("types[]", "mention"))
            items = (await self._get("/api/v1/notifications", params)).json()
            pairs = [(_str(n.get("id")), _obj(n.get("status"))) for n in map(_obj, items)]
        else:
            path = f"/api/v1/timelines/tag/{quote(self._hashtag, safe='')}"
            items = (await self._get(path, params)).json()
            pairs = [(_str(s.get("id")), s) for s in map(_obj, items)]
        return sorted(pairs, key=lambda p: (len(p[0]), p[0]))

    def _wanted(self, status: Json, own_id: str) -> bool:
        return (
            bool(status)
            and status.get("reblog") is None
            and _str(_obj(status.get("account")).get("id")) != own_id
        )

    def _posts(self, pairs: list[tuple[str, Json]], own_id: str) -> list[PostIn]:
        posts = (status_to_post(s, self._host) for _, s in pairs if self._wanted(s, own_id))
        return [p for p in posts if p is not None]

    def _live(self, message: str | bytes) -> tuple[str, Json] | Deletion | None:
        """A streamed event as (cursor id, status), a deletion, or None for events we do not
        follow."""
        event = _obj(json.loads(message))
        payload = event.get("payload")
        if event.get("event") == "delete":
            # The payload is the deleted status's id itself, not JSON (a GoToSocial ULID is not
            # even a JSON value): decoding it as the other events' payloads broke the stream.
            status_id = payload.strip() if isinstance(payload, str) else ""
            return (
                Deletion(PLATFORM, status_id, deleted_at=datetime.now(UTC)) if status_id else None
            )
        body = _obj(json.loads(payload)) if isinstance(payload, str) else {}
        if self._source is Source.MENTIONS:
            if event.get("event") != "notification" or body.get("type") != "mention":
                return None
            return _str(body.get("id")), _obj(body.get("status"))
        if event.get("event") != "update":
            return None
        return _str(body.get("id")), body

    async def batches(self, cursor: str | None) -> AsyncIterator[Batch]:
        own_id = await self._own_account_id()
        if cursor is None:  # the very first start: follow from now on, no backfill
            # "Now" is fixed before subscribing: what comes after it is caught up below or
            # streamed, never taken for history (a post in between used to be lost).
            newest = await self._page(None, 1)
            cursor = newest[-1][0] if newest else "0"
        # Subscribe first, then catch up: what is posted meanwhile waits in the socket, and the
        # overlap is dropped by id (and by the runner).
        async with connect(
            self._stream_url(),
            additional_headers=self._headers(),
            open_timeout=self._open_timeout,
            ping_interval=20,
        ) as socket:
            while True:  # until an empty page: a short one is not the end (Mastodon filters
                # a page after reading it, so hidden or muted statuses leave it short)
                pairs = await self._page(cursor, PAGE)
                if not pairs:
                    break
                cursor = pairs[-1][0]
                yield Batch(self._posts(pairs, own_id), cursor)
            yield Batch((), cursor)
            async for message in socket:
                item = self._live(message)
                if item is None:
                    continue
                if isinstance(item, Deletion):
                    yield Batch((), cursor, (item,))
                    continue
                # Mastodon fans notifications out from background jobs, so the stream is not in
                # id order (mastodon/mastodon#19693): an older item arriving after a newer one
                # is still published (the runner drops what it has seen by its post key), and
                # the cursor only moves forward.
                if newer(item[0], cursor):
                    cursor = item[0]
                yield Batch(self._posts([item], own_id), cursor)
