"""The Mastodon reply channel: a public reply in the citizen's thread (POST /api/v1/statuses
with in_reply_to_id and an Idempotency-Key derived from the reply id), the resolution photo
uploaded first (POST /api/v2/media, waiting for it to be processed), rate limits read from
X-RateLimit-Remaining/Reset and 429s, and our reply found in the thread
(GET /api/v1/statuses/:id/context) when an earlier attempt's outcome is unknown."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final, cast
from urllib.parse import urlsplit

import httpx
from plaza.social import MastodonAccount, html_to_text

from plaza_notifier.channels import (
    ChannelReply,
    Gone,
    PostedReply,
    RateBudget,
    Refused,
    same_words,
)
from plaza_notifier.photos import PhotoFetcher

log = logging.getLogger(__name__)

Json = Mapping[str, object]
# Mastodon's image limit before 4.0 (16 MB since; an instance may set its own): a larger photo
# is left out rather than refused by the instance, which would fail the whole reply.
MAX_PHOTO_BYTES: Final = 10 * 1024 * 1024


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _obj(value: object) -> Json:
    return cast(Json, value) if isinstance(value, dict) else {}


# A status id as it goes in a path of the city's instance: Mastodon's are numbers (other servers'
# letters and digits). Anything else ("../accounts/…", "1?x=") would reach another endpoint of
# the instance with the city's token.
_STATUS_ID: Final = re.compile(r"[A-Za-z0-9]{1,64}")


def _status_id(post_id: str) -> str:
    """The status a reply answers, if `post_id` is one (a bridge chooses it); Refused if not."""
    if not _STATUS_ID.fullmatch(post_id):
        raise Refused(f"{post_id[:80]!r} is not a Mastodon status id (letters and digits)")
    return post_id


def _words(text: str) -> list[str]:
    """A reply's words without mentions: Mastodon shows `@marta` for `@marta@bcn.social`."""
    return [w for w in text.split() if not w.startswith("@")]


def _reset_at(response: httpx.Response, now: datetime) -> datetime | None:
    """When the budget comes back: Retry-After (seconds or a date) or X-RateLimit-Reset."""
    retry = response.headers.get("retry-after")
    if retry:
        if retry.isdecimal():  # isdigit() takes "²", which int() refuses
            return now + timedelta(seconds=int(retry))
        return parsedate_to_datetime(retry)
    reset = response.headers.get("x-ratelimit-reset")
    if reset:
        try:
            return datetime.fromisoformat(reset.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _detail(response: httpx.Response) -> str:
    """Mastodon's error body: {"error": "..."}."""
    try:
        return _str(_obj(response.json()).get("error"))
    except ValueError:
        return response.text[:200]


class MastodonChannel:
    def __init__(
        self,
        account: MastodonAccount,
        http: httpx.AsyncClient,
        *,
        media_timeout: float = 30.0,
        photos: PhotoFetcher | None = None,
        clock: type[datetime] = datetime,
    ) -> None:
        self._account = account
        self._http = http
        self._media_timeout = media_timeout
        self._photos = photos or PhotoFetcher()
        self._clock = clock
        self._budget = RateBudget(
            "mastodon",
            remaining_header="x-ratelimit-remaining",
            reset_at=_reset_at,
            detail=_detail,
            now=self._now,
        )
        self._own_id: str | None = None
        self.host = urlsplit(account.base_url).netloc

    @property
    def platform(self) -> str:
        return "mastodon"

    @property
    def mention_author(self) -> bool:
        return True

    def _now(self) -> datetime:
        return self._clock.now(UTC)

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._account.token.get_secret_value()}", **extra}

    def _before_call(self) -> None:
        self._budget.before_call()

    def _check(self, response: httpx.Response, what: str) -> None:
        self._budget.check(response, what)

    async def _own_account_id(self) -> str:
        if self._own_id is None:
            self._before_call()
            response = await self._http.get(
                f"{self._account.base_url}/api/v1/accounts/verify_credentials",
                headers=self._headers(),
            )
            self._check(response, "verify_credentials")
            self._own_id = _str(_obj(response.json()).get("id"))
        return self._own_id

    async def _upload(self, photo_url: str) -> str | None:
        """The media id of the photo, processed and ready to attach; None if the photo cannot
        be attached (plaza_notifier.photos says why)."""
        photo = await self._photos.get(photo_url, platform="mastodon", max_bytes=MAX_PHOTO_BYTES)
        if photo is None:
            return None
        self._before_call()
        response = await self._http.post(
            f"{self._account.base_url}/api/v2/media",
            headers=self._headers(),
            files={"file": (photo.name, photo.content, photo.content_type)},
        )
        self._check(response, "POST /api/v2/media")
        media = _obj(response.json())
        media_id = _str(media.get("id"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._media_timeout
        # 202: processed in the background; GET answers 206 until it is, then 200 with its URL.
        while response.status_code != 200 or not media.get("url"):
            if loop.time() > deadline:
                raise TimeoutError(f"mastodon: media {media_id} still processing")
            await asyncio.sleep(0.2)
            response = await self._http.get(
                f"{self._account.base_url}/api/v1/media/{media_id}", headers=self._headers()
            )
            self._check(response, "GET /api/v1/media")
            media = _obj(response.json())
        return media_id

    async def _visibility_of(self, status_id: str) -> str:
        """The visibility of the status a reply answers, so the reply reaches no wider than it
        (Mastodon's own clients do the same): a citizen's direct or followers-only mention
        gets a reply only they (or their followers) see, not a public one naming them. A
        status that is gone answers 404: its author deleted it (Gone). One whose author blocked
        the city's account answers it 404 too, while anybody else still sees it: refused, and
        the post stays."""
        self._before_call()
        url = f"{self._account.base_url}/api/v1/statuses/{_status_id(status_id)}"
        response = await self._http.get(url, headers=self._headers())
        if response.status_code == 404:
            if await self._shown_to_anybody(url):
                raise Refused(
                    f"mastodon: the status {status_id} is hidden from the city's account but "
                    "not deleted (its author blocked the city): no reply, and the post stays"
                )
            raise Gone(f"mastodon: the status {status_id} is gone (deleted by its author)")
        self._check(response, "GET /api/v1/statuses/:id")
        visibility = _str(_obj(response.json()).get("visibility"))
        return visibility if visibility in _VISIBILITIES else "public"

    async def _shown_to_anybody(self, url: str) -> bool:
        """Whether the status is there for a visitor with no token (Mastodon shows public and
        unlisted statuses to anybody; a server that shows nothing without a token answers 401,
        and a followers-only status 404: taken as gone, as they cannot be told apart)."""
        response = await self._http.get(url)
        return response.status_code == 200

    async def post(self, reply: ChannelReply) -> PostedReply:
        visibility = await self._visibility_of(reply.in_reply_to_post_id)
        self._before_call()
        fields: list[tuple[str, str]] = [
            ("status", reply.text),
            ("in_reply_to_id", reply.in_reply_to_post_id),
            ("visibility", visibility),
        ]
        if reply.language:
            fields.append(("language", reply.language))
        if reply.photo_url:
            media_id = await self._upload(reply.photo_url)
            if media_id:
                fields.append(("media_ids[]", media_id))
        response = await self._http.post(
            f"{self._account.base_url}/api/v1/statuses",
            data=cast(Mapping[str, Sequence[str]], _multi(fields)),
            # Mastodon keeps this key for an hour: a repeated POST returns the first status.
            headers=self._headers(**{"Idempotency-Key": reply.reply_id}),
        )
        self._check(response, "POST /api/v1/statuses")
        status = _obj(response.json())
        return PostedReply(_str(status.get("id")), _str(status.get("url")))

    async def find(self, reply: ChannelReply) -> PostedReply | None:
        status_id = _status_id(reply.in_reply_to_post_id)
        own = await self._own_account_id()
        self._before_call()
        response = await self._http.get(
            f"{self._account.base_url}/api/v1/statuses/{status_id}/context",
            headers=self._headers(),
        )
        self._check(response, "GET /api/v1/statuses/:id/context")
        descendants = _obj(response.json()).get("descendants")
        wanted = _words(reply.text)
        for status in map(_obj, descendants if isinstance(descendants, list) else []):
            if (
                _str(_obj(status.get("account")).get("id")) == own
                and _str(status.get("in_reply_to_id")) == reply.in_reply_to_post_id
                and same_words(reply, wanted, _words(html_to_text(_str(status.get("content")))))
            ):
                return PostedReply(_str(status.get("id")), _str(status.get("url")))
        return None


# Mastodon's visibilities, widest first.
_VISIBILITIES = ("public", "unlisted", "private", "direct")


def _multi(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Form fields with repeated names (media_ids[]) as httpx takes them."""
    out: dict[str, list[str]] = {}
    for name, value in fields:
        out.setdefault(name, []).append(value)
    return out
