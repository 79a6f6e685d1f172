"""Reply channels: what a platform adapter implements to answer citizens in public
(ReplyChannel), and the log channel, which keeps a reply in the database (and the log) instead,
for every platform that has no channel configured."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutgoingReply:
    reply_id: str
    service_request_id: str
    kind: str
    language: str
    platform: str
    in_reply_to_post_id: str
    author_handle: str
    text: str


@dataclass(frozen=True, slots=True)
class ChannelReply:
    """A reply to post in the thread of the citizen's post."""

    reply_id: str  # unique per reply: an idempotency key, or a record key, can derive from it
    in_reply_to_post_id: str
    author_handle: str
    text: str  # already fitted to the platform's length limit (plaza_notifier.length)
    language: str
    photo_url: str | None  # the resolution photo to attach, fetched by plaza_notifier.photos
    # When the database was restored from a backup, if the post was made before: a reply to it
    # may have gone out in the time the restore lost, for a request that had another number
    # then. `find` also takes the city's reply to the post whose words are these but for their
    # numbers (unnumbered).
    restored_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PostedReply:
    remote_id: str
    public_url: str = ""


class RateLimited(Exception):
    """The platform refused for now (a 429, or a spent rate-limit budget): nothing was posted.
    No reply goes to this platform before `until`; it does not count as a failed attempt."""

    def __init__(self, until: datetime, reason: str) -> None:
        super().__init__(f"{reason} (until {until.isoformat()})")
        self.until = until


class Refused(Exception):
    """The platform refused this reply for good (4xx: deleted post, invalid text, bad token):
    retrying cannot help, so it is dead-lettered at once for a manager to look at."""


class Gone(Refused):
    """The post the reply answers is gone from its platform: its author deleted it. No reply
    goes, and Plaza withdraws the post as if the platform's stream had said so."""


class ReplyChannel(Protocol):
    """Posts replies on one platform. Any other exception from `post` or `find` (5xx, a
    timeout, a dropped connection) is transient: retried with backoff, then dead-lettered.

    After a crash or a timeout the outcome of a `post` is unknown; before sending again the
    delivery loop calls `find`, so a channel must be able to recognise its own reply in the
    thread (by its text, or by a record key derived from `reply_id`)."""

    @property
    def platform(self) -> str:
        """The platform it answers on: replies to posts of this platform go through it."""
        ...

    @property
    def mention_author(self) -> bool:
        """Whether the text must start with the citizen's handle for them to be notified."""
        ...

    async def post(self, reply: ChannelReply) -> PostedReply:
        """Posts `reply` in reply to its post, with its photo; raises RateLimited or Refused."""
        ...

    async def find(self, reply: ChannelReply) -> PostedReply | None:
        """Our reply in the thread of `reply.in_reply_to_post_id`, if it was already posted."""
        ...


def unnumbered(words: Sequence[str]) -> list[str]:
    """A reply's words without those holding a digit (the request's number, a time): what the
    same reply to the same post says whichever request it was given."""
    return [w for w in words if not any(c.isdigit() for c in w)]


def same_words(reply: ChannelReply, wanted: Sequence[str], found: Sequence[str]) -> bool:
    """Whether `found` (a reply's words in the thread) are those of `reply` (`wanted`): exactly,
    or but for their numbers after a restore."""
    if list(found) == list(wanted):
        return True
    return reply.restored_at is not None and unnumbered(found) == unnumbered(wanted)


# One statement whatever the number of replies (prepared once): the rows as arrays, unnested.
_RECORD_REPLIES = text(
    """
    INSERT INTO replies (reply_id, service_request_id, kind, language, platform, channel,
                         in_reply_to_post_id, text, remote_id, posted_at)
    SELECT r.reply_id, r.service_request_id, r.kind, r.language, r.platform, 'log',
           r.in_reply_to_post_id, r.text, NULL, :posted_at
    FROM unnest(CAST(:reply_ids AS text[]), CAST(:request_ids AS bigint[]),
                CAST(:kinds AS text[]), CAST(:languages AS text[]), CAST(:platforms AS text[]),
                CAST(:posts AS text[]), CAST(:texts AS text[]))
         AS r(reply_id, service_request_id, kind, language, platform, in_reply_to_post_id, text)
    ON CONFLICT (reply_id) DO NOTHING
    RETURNING reply_id
    """
)


async def record_replies(
    session: AsyncSession, replies: Sequence[OutgoingReply], posted_at: datetime
) -> set[str]:
    """The log channel: stores each reply once (by reply_id), all in one statement; the ids of
    those recorded now (not those already recorded: redeliveries)."""
    if not replies:
        return set()
    result = await session.execute(
        _RECORD_REPLIES,
        {
            "posted_at": posted_at,
            "reply_ids": [r.reply_id for r in replies],
            "request_ids": [
                int(r.service_request_id) if r.service_request_id else None for r in replies
            ],
            "kinds": [r.kind for r in replies],
            "languages": [r.language for r in replies],
            "platforms": [r.platform for r in replies],
            "posts": [r.in_reply_to_post_id for r in replies],
            "texts": [r.text for r in replies],
        },
    )
    created = set(result.scalars())
    if created:
        # One log record for the statement, a line per reply: a record each was an eighth of
        # the notifier's CPU in a burst.
        log.info(
            "recorded %d %s:%s",
            len(created),
            "reply" if len(created) == 1 else "replies",
            "".join(
                f"\n  reply {r.reply_id} to {r.author_handle} on {r.platform}: {r.text}"
                for r in replies
                if r.reply_id in created
            ),
        )
    return created


class RateBudget:
    """A platform's rate-limit budget as its answers report it, and what an answer means.

    Every platform channel checks each answer the same way: a budget reported spent (the
    platform's "remaining" header at 0) pauses calls until its reset, and so does a 429 (a
    minute when no reset is given); a 5xx, 408 or 401 (a token expired or being rotated) is
    raised as httpx.HTTPStatusError, to be tried again; any other failure is Refused, for good. The platforms differ only in the
    names of their headers and the shape of their error bodies."""

    def __init__(
        self,
        platform: str,
        *,
        remaining_header: str,
        reset_at: Callable[[httpx.Response, datetime], datetime | None],
        detail: Callable[[httpx.Response], str],
        now: Callable[[], datetime],
    ) -> None:
        self._platform = platform
        self._remaining_header = remaining_header
        self._reset_at = reset_at
        self._detail = detail
        self._now = now
        self._paused_until: datetime | None = None

    def before_call(self) -> None:
        """Raises RateLimited while the budget is spent."""
        if self._paused_until is not None and self._paused_until > self._now():
            raise RateLimited(self._paused_until, f"{self._platform}: rate-limit budget spent")

    def check(self, response: httpx.Response, what: str) -> None:
        """Reads the rate-limit headers; raises on anything but success."""
        now = self._now()
        reset = self._reset_at(response, now)
        if response.headers.get(self._remaining_header) == "0" and reset and reset > now:
            self._paused_until = reset
        if response.status_code == 429:
            until = reset if reset and reset > now else now + timedelta(seconds=60)
            self._paused_until = until
            raise RateLimited(until, f"{self._platform}: 429 on {what}")
        if response.is_success:
            return
        message = f"{self._platform}: {response.status_code} on {what}: {self._detail(response)}"
        # 401: an expired or rotated token (X's user token lives two hours, read again from its
        # file): the reply is tried again, not given up on with every other one meanwhile.
        if response.status_code >= 500 or response.status_code in (401, 408):
            raise httpx.HTTPStatusError(
                message.strip(), request=response.request, response=response
            )
        raise Refused(message.strip())
