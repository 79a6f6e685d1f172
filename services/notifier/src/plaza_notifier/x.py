"""The X reply channel: a public reply in the citizen's thread (POST /2/tweets with
reply.in_reply_to_tweet_id; X mentions the replied-to author by itself, so the text carries no
handle of the citizen), the resolution photo uploaded first (POST /2/media/upload), rate limits
read from x-rate-limit-remaining/reset and 429s, and, since X has no idempotency key, our reply
looked for on the city's own timeline after the citizen's post before sending again whenever
an earlier attempt's outcome is unknown.

The timeline rather than search: recent search is indexed with a delay, and a reply posted
just before a crash must be found; the timeline is read after the citizen's post id
(`since_id`: X's ids grow with time), newest first, so the reply is on its first page."""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, cast

import httpx
from plaza.x import XAccount

from plaza_notifier.channels import ChannelReply, PostedReply, RateBudget, Refused, same_words
from plaza_notifier.photos import PhotoFetcher

log = logging.getLogger(__name__)

Json = Mapping[str, object]
PAGE: Final = 100
MAX_PAGES: Final = 32  # the timeline serves the newest 3,200 posts
DUPLICATE: Final = "duplicate content"
# X's limit for an image: a larger photo is left out rather than refused by X, which would
# fail the whole reply.
MAX_PHOTO_BYTES: Final = 5 * 1024 * 1024


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _obj(value: object) -> Json:
    return cast(Json, value) if isinstance(value, dict) else {}


def _list(value: object) -> list[Json]:
    return [_obj(v) for v in value] if isinstance(value, list) else []


def words(text: str) -> list[str]:
    """A post's words as X may give them back: unescaped, without mentions (X adds the
    replied-to author's) and without links (X shortens them to t.co)."""
    return [
        w for w in html.unescape(text).split() if not w.startswith(("@", "http://", "https://"))
    ]


# When a budget comes back, in epoch seconds: the 15-minute window's, and the 24-hour caps on
# posting (per user and per app), which a 429 carries when it is one of those that is spent.
_RESET_HEADERS = (
    "x-rate-limit-reset",
    "x-user-limit-24hour-reset",
    "x-app-limit-24hour-reset",
)


def _reset_at(response: httpx.Response) -> datetime | None:
    """When the budget comes back: the latest reset X gave (a day's cap spent outlasts the
    15-minute window, which would otherwise wake the notifier to a 429 every 15 minutes)."""
    # isdecimal, not isdigit: isdigit() takes "²", which int() refuses
    resets = [
        int(value)
        for name in _RESET_HEADERS
        if (value := response.headers.get(name, "")).isdecimal()
    ]
    return datetime.fromtimestamp(max(resets), UTC) if resets else None


class XChannel:
    def __init__(
        self,
        account: XAccount,
        http: httpx.AsyncClient,
        *,
        media_timeout: float = 60.0,
        photos: PhotoFetcher | None = None,
        clock: type[datetime] = datetime,
    ) -> None:
        if account.user_token() is None:
            raise ValueError(
                "X replies need the city account's user token: set PLAZA_X_USER_TOKEN or "
                "PLAZA_X_USER_TOKEN_FILE"
            )
        self._account = account
        self._http = http
        self._media_timeout = media_timeout
        self._photos = photos or PhotoFetcher()
        self._clock = clock
        self._budget = RateBudget(
            "x",
            remaining_header="x-rate-limit-remaining",
            reset_at=lambda response, _now: _reset_at(response),
            detail=_detail,
            now=self._now,
        )

    @property
    def platform(self) -> str:
        return "x"

    @property
    def mention_author(self) -> bool:
        return False  # X mentions the author of the post replied to, outside the 280

    def _now(self) -> datetime:
        return self._clock.now(UTC)

    def _headers(self) -> dict[str, str]:
        token = self._account.user_token()
        assert token is not None  # checked at start; a rotated file is never emptied
        return {"Authorization": f"Bearer {token.get_secret_value()}"}

    def _url(self, path: str) -> str:
        return f"{self._account.api_url}{path}"

    def _before_call(self) -> None:
        self._budget.before_call()

    def _check(self, response: httpx.Response, what: str) -> None:
        self._budget.check(response, what)

    async def _upload(self, photo_url: str) -> str | None:
        """The media id of the photo, ready to attach; None if the photo cannot be attached
        (plaza_notifier.photos says why)."""
        photo = await self._photos.get(photo_url, platform="x", max_bytes=MAX_PHOTO_BYTES)
        if photo is None:
            return None
        self._before_call()
        response = await self._http.post(
            self._url("/2/media/upload"),
            headers=self._headers(),
            data={"media_category": "tweet_image", "media_type": photo.content_type},
            files={"media": (photo.name, photo.content, photo.content_type)},
        )
        self._check(response, "POST /2/media/upload")
        media = _obj(_obj(response.json()).get("data"))
        media_id = _str(media.get("id"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._media_timeout
        # Images are usually ready at once; processing_info says when they are not.
        while _str(_obj(media.get("processing_info")).get("state")) in ("pending", "in_progress"):
            if loop.time() > deadline:
                raise TimeoutError(f"x: media {media_id} still processing")
            wait = _obj(media.get("processing_info")).get("check_after_secs")
            await asyncio.sleep(float(wait) if isinstance(wait, int | float) else 1.0)
            response = await self._http.get(
                self._url("/2/media/upload"),
                params={"command": "STATUS", "media_id": media_id},
                headers=self._headers(),
            )
            self._check(response, "GET /2/media/upload")
            media = _obj(_obj(response.json()).get("data"))
        if _str(_obj(media.get("processing_info")).get("state")) == "failed":
            raise Refused(f"x: media {media_id} failed processing")
        return media_id

    async def post(self, reply: ChannelReply) -> PostedReply:
        self._before_call()
        body: dict[str, object] = {
            "text": reply.text,
            "reply": {"in_reply_to_tweet_id": reply.in_reply_to_post_id},
        }
        if reply.photo_url:
            media_id = await self._upload(reply.photo_url)
            if media_id:
                body["media"] = {"media_ids": [media_id]}
        self._before_call()
        response = await self._http.post(self._url("/2/tweets"), json=body, headers=self._headers())
        if response.status_code == 403 and DUPLICATE in _detail(response):
            # X refuses the same text twice: it may be ours, from an attempt that looked lost.
            found = await self.find(reply)
            if found is not None:
                log.info("reply %s was already posted: %s", reply.reply_id, found.remote_id)
                return found
        self._check(response, "POST /2/tweets")
        data = _obj(_obj(response.json()).get("data"))
        tid = _str(data.get("id"))
        return PostedReply(tid, self._account.post_url(tid))

    async def find(self, reply: ChannelReply) -> PostedReply | None:
        """Our reply to the post on the city's timeline, if it is there."""
        wanted = words(reply.text)
        params = {
            "since_id": reply.in_reply_to_post_id,
            "max_results": str(PAGE),
            "tweet.fields": "referenced_tweets,author_id",
        }
        for _ in range(MAX_PAGES):
            self._before_call()
            response = await self._http.get(
                self._url(f"/2/users/{self._account.user_id}/tweets"),
                params=params,
                headers=self._headers(),
            )
            self._check(response, "GET /2/users/:id/tweets")
            body = _obj(response.json())
            for tweet in _list(body.get("data")):
                replied = {
                    _str(r.get("id"))
                    for r in _list(tweet.get("referenced_tweets"))
                    if r.get("type") == "replied_to"
                }
                if reply.in_reply_to_post_id in replied and same_words(
                    reply, wanted, words(_str(tweet.get("text")))
                ):
                    tid = _str(tweet.get("id"))
                    return PostedReply(tid, self._account.post_url(tid))
            token = _str(_obj(body.get("meta")).get("next_token"))
            if not token:
                return None
            params = {**params, "pagination_token": token}
        log.warning(
            "reply %s: the city posted more than %d times since %s; not found in its timeline",
            reply.reply_id,
            PAGE * MAX_PAGES,
            reply.in_reply_to_post_id,
        )
        return None


def _detail(response: httpx.Response) -> str:
    """A problem's detail (X answers RFC 7807 problems), or the start of the body."""
    try:
        body = _obj(response.json())
    except ValueError:
        return response.text[:200]
    errors = "; ".join(_str(e.get("message")) for e in _list(body.get("errors")))
    detail = _str(body.get("detail")) or _str(body.get("title"))
    return f"{detail} ({errors})" if errors else detail
