"""Reply deliveries: the consumer hands each platform reply over as a `reply_deliveries` row
(pending), and the delivery loop posts it through the platform's channel, apart from the
consumer, so that one failing reply never holds up the others.

Never two replies for one event, even if the process dies between the HTTP call and the commit:
- a delivery is claimed (state `sending`, a lease, `maybe_sent`) in a committed transaction
  before the HTTP call;
- a `sending` delivery whose lease ran out belongs to a process that died mid-call: it is
  claimed again, and because `maybe_sent` is set the channel first looks for our reply in the
  thread (`ReplyChannel.find`) and only posts if it is not there; channels that can also send
  an idempotency key derived from the reply id (Mastodon) do;
- after `plaza restore`, the replies posted since the backup are unknown to the database: its
  unsent deliveries came back `maybe_sent`, and a reply to a post made before the restore (read
  again from a restored cursor, under another request number perhaps) is looked for too, for
  `restores.LOOK_FOR`; a post made after it is answered with no lookup;
- `posted`, the `replies` row and the reply-posted event (through the outbox) are committed
  together.
Rate limits pause the platform until its reset time; other errors are retried with
exponential backoff and jitter; after `max_attempts`, or at once when the platform refuses the
reply for good, it is `failed` (the dead letter) until a manager retries it through the API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from plaza import metrics
from plaza.contracts import (
    PostWithdrawn,
    ReplyPosted,
    derive_event_id,
    envelope,
    post_key,
    timestamp,
)
from plaza.db.models import Reply, ReplyDelivery, RequestReport
from plaza.outbox import stage
from plaza.withdrawals import WITHDRAWN_STATE, lock_posts, unmentioned, was_withdrawn
from sqlalchemy import and_, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from plaza_notifier.channels import (
    ChannelReply,
    Gone,
    PostedReply,
    RateLimited,
    Refused,
    ReplyChannel,
)
from plaza_notifier.metrics import (
    REPLIES_DEAD_LETTERED,
    REPLIES_FAILED,
    REPLIES_POSTED,
    REPLIES_RATE_LIMITED,
)
from plaza_notifier.restores import LOOK_FOR, restored_at

log = logging.getLogger(__name__)


class State(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    POSTED = "posted"
    FAILED = "failed"  # the dead letter: a manager may retry it
    WITHDRAWN = WITHDRAWN_STATE  # the post it answers was deleted: never sent


@dataclass(frozen=True, slots=True)
class Delivery:
    """A worded reply for a platform, as the consumer hands it over."""

    reply_id: str
    service_request_id: int | None
    kind: str
    language: str
    platform: str
    in_reply_to_post_id: str
    author_handle: str
    text: str
    photo_url: str | None
    correlation_id: str
    # who wrote the post it answers, where no report says (a thanks's): plaza.withdrawals
    reporter: str = ""


def _row(delivery: Delivery, now: datetime) -> dict[str, object]:
    return {
        "reply_id": delivery.reply_id,
        "service_request_id": delivery.service_request_id,
        "kind": delivery.kind,
        "language": delivery.language,
        "platform": delivery.platform,
        "in_reply_to_post_id": delivery.in_reply_to_post_id,
        "author_handle": delivery.author_handle,
        "body": delivery.text,
        "photo_url": delivery.photo_url,
        "correlation_id": delivery.correlation_id,
        "reporter": delivery.reporter,
        "state": State.PENDING.value,
        "attempts": 0,
        "maybe_sent": False,
        "next_attempt_at": now,
    }


async def enqueue(session: AsyncSession, delivery: Delivery, now: datetime) -> bool:
    """Adds the delivery once (by reply id); False if it was already there (a redelivery)."""
    return bool(await enqueue_all(session, [delivery], now))


async def enqueue_all(
    session: AsyncSession, deliveries: Iterable[Delivery], now: datetime
) -> set[str]:
    """Adds each delivery once (by reply id), in one statement; the reply ids added now."""
    rows = [_row(d, now) for d in deliveries]
    if not rows:
        return set()
    stmt = (
        insert(ReplyDelivery)
        .on_conflict_do_nothing(index_elements=[ReplyDelivery.reply_id])
        .returning(ReplyDelivery.reply_id)
    )
    return set((await session.execute(stmt, rows)).scalars())


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    max_attempts: int = 5
    base_delay: float = 2.0
    max_delay: float = 600.0
    # Longer than any one attempt may take (each is cut at half of it): a claim older than
    # this belongs to a process that died.
    lease: float = 60.0
    poll_interval: float = 0.5
    batch: int = 20

    def backoff(self, attempt: int) -> float:
        """Exponential, with jitter over its upper half so that retries spread out."""
        delay = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return delay / 2 + random.uniform(0, delay / 2)


@dataclass(frozen=True, slots=True)
class _Claim:
    reply: ChannelReply
    delivery: Delivery
    attempts: int  # the fencing token: our updates only apply while it is unchanged
    look_first: bool  # an earlier attempt may have posted it


class Deliverer:
    """The delivery loop: claims due deliveries and posts them through their channels."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        channels: Mapping[str, ReplyChannel],
        policy: DeliveryPolicy = DeliveryPolicy(),
    ) -> None:
        self._sessions = sessions
        self._channels = dict(channels)
        self._policy = policy
        self._paused: dict[str, datetime] = {}
        self._stop = asyncio.Event()
        # Read once: plaza restore refuses to run under a running Plaza.
        self._restored: datetime | None = None
        self._restored_read = False

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                done = await self.deliver_due()
            except Exception:
                # The database is unreachable: nothing was lost (the rows wait), try again.
                log.exception("reply delivery loop failed; retrying")
                done = 0
            if not done:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._policy.poll_interval)

    async def deliver_due(self) -> int:
        """Posts what is due now; the number of deliveries it tried."""
        claims = await self._claim(datetime.now(UTC))
        for claim in claims:
            await self._deliver(claim)
        return len(claims)

    async def _claim(self, now: datetime) -> list[_Claim]:
        platforms = [p for p in self._channels if self._paused.get(p, now) <= now]
        if not platforms:
            return []
        async with self._sessions.begin() as session:
            rows = (
                await session.execute(
                    select(ReplyDelivery)
                    .where(
                        ReplyDelivery.platform.in_(platforms),
                        or_(
                            and_(
                                ReplyDelivery.state == State.PENDING.value,
                                ReplyDelivery.next_attempt_at <= now,
                            ),
                            and_(
                                ReplyDelivery.state == State.SENDING.value,
                                ReplyDelivery.lease_until < now,
                            ),
                        ),
                    )
                    .order_by(ReplyDelivery.next_attempt_at, ReplyDelivery.created_at)
                    .limit(self._policy.batch)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
            due = rows.all()
            made_before = await self._made_before_restore(session, due, now)
            claims = []
            for row in due:
                restored = made_before.get((row.platform, row.in_reply_to_post_id))
                if row.state == State.SENDING.value:
                    log.warning(
                        "reply %s was being sent by a process that stopped; looking for it in "
                        "the thread before sending again",
                        row.reply_id,
                    )
                claims.append(
                    _Claim(
                        ChannelReply(
                            reply_id=row.reply_id,
                            in_reply_to_post_id=row.in_reply_to_post_id,
                            author_handle=row.author_handle,
                            text=row.body,
                            language=row.language,
                            photo_url=row.photo_url,
                            restored_at=restored,
                        ),
                        Delivery(
                            reply_id=row.reply_id,
                            service_request_id=row.service_request_id,
                            kind=row.kind,
                            language=row.language,
                            platform=row.platform,
                            in_reply_to_post_id=row.in_reply_to_post_id,
                            author_handle=row.author_handle,
                            text=row.body,
                            photo_url=row.photo_url,
                            correlation_id=row.correlation_id,
                            reporter=row.reporter,
                        ),
                        attempts=row.attempts + 1,
                        look_first=row.maybe_sent or restored is not None,
                    )
                )
                row.state = State.SENDING.value
                row.attempts += 1
                row.maybe_sent = True
                row.lease_until = now + timedelta(seconds=self._policy.lease)
                row.updated_at = now
        return claims

    async def _made_before_restore(
        self, session: AsyncSession, rows: Sequence[ReplyDelivery], now: datetime
    ) -> dict[tuple[str, str], datetime]:
        """The posts of `rows` made before the database was restored from a backup, if it was
        less than LOOK_FOR ago: their replies are looked for in their threads before posting.
        A post with no report (a thanks for a post that is no request) may be one of them."""
        if not self._restored_read:
            self._restored = await restored_at(session)
            self._restored_read = True
            if self._restored is not None:
                log.info(
                    "the database was restored from a backup at %s: a reply to a post made "
                    "before then is looked for in its thread before it is sent (until %s)",
                    self._restored.isoformat(),
                    (self._restored + LOOK_FOR).isoformat(),
                )
        restored = self._restored
        if restored is None or now >= restored + LOOK_FOR or not rows:
            return {}
        posts = {(row.platform, row.in_reply_to_post_id) for row in rows}
        made = {
            (platform, post_id): at
            for platform, post_id, at in await session.execute(
                select(
                    RequestReport.platform, RequestReport.post_id, RequestReport.reported_at
                ).where(tuple_(RequestReport.platform, RequestReport.post_id).in_(posts))
            )
        }
        return {post: restored for post in posts if post not in made or made[post] < restored}

    async def _deliver(self, claim: _Claim) -> None:
        d = claim.delivery
        channel = self._channels[d.platform]
        try:
            posted = await asyncio.wait_for(self._send(channel, claim), self._policy.lease / 2)
        except RateLimited as exc:
            self._paused[d.platform] = exc.until
            REPLIES_RATE_LIMITED.labels(d.platform).inc()
            log.warning("reply %s waits: %s", d.reply_id, exc)
            await self._update(
                claim,
                state=State.PENDING.value,
                attempts=claim.attempts - 1,  # waiting for a budget is no failure
                next_attempt_at=exc.until,
                last_error=str(exc),
            )
        except Gone as exc:
            log.info("reply %s not sent: %s", d.reply_id, exc)
            await self._gone(claim)
        except Refused as exc:
            REPLIES_FAILED.labels(d.platform, "rejected").inc()
            REPLIES_DEAD_LETTERED.labels(d.platform).inc()
            log.error("reply %s refused by %s, dead-lettered: %s", d.reply_id, d.platform, exc)
            await self._update(claim, state=State.FAILED.value, last_error=str(exc))
        except Exception as exc:
            REPLIES_FAILED.labels(d.platform, "error").inc()
            error = f"{type(exc).__name__}: {exc}"
            if claim.attempts >= self._policy.max_attempts:
                REPLIES_DEAD_LETTERED.labels(d.platform).inc()
                log.error(
                    "reply %s failed %d times, dead-lettered: %s", d.reply_id, claim.attempts, error
                )
                await self._update(claim, state=State.FAILED.value, last_error=error)
            else:
                wait = self._policy.backoff(claim.attempts)
                log.warning("reply %s failed (%s); retrying in %.1fs", d.reply_id, error, wait)
                await self._update(
                    claim,
                    state=State.PENDING.value,
                    next_attempt_at=datetime.now(UTC) + timedelta(seconds=wait),
                    last_error=error,
                )
        else:
            await self._posted(claim, posted)

    async def _gone(self, claim: _Claim) -> None:
        """The post it answers was deleted: the reply is never sent, and the post is withdrawn
        (post-withdrawn, through the outbox, as the platform's stream would have said it: the
        same event when it did)."""
        d = claim.delivery
        async with self._sessions.begin() as session:
            mine = await self._fenced(
                session, claim, state=WITHDRAWN_STATE, author_handle="", body=""
            )
            if not mine:
                return
            key = post_key(d.platform, d.in_reply_to_post_id)
            event_id = derive_event_id("post-withdrawn", key, "", "")
            withdrawn = PostWithdrawn(
                platform=d.platform,
                post_id=d.in_reply_to_post_id,
                withdrawn_at=timestamp(datetime.now(UTC)),
                channel="lookup",
            )
            stage(
                session,
                [envelope(withdrawn, key=key, event_id=event_id, correlation_id=d.correlation_id)],
            )

    @staticmethod
    async def _send(channel: ReplyChannel, claim: _Claim) -> PostedReply:
        if claim.look_first:
            found = await channel.find(claim.reply)
            if found is not None:
                log.info("reply %s was already in the thread: %s", claim.reply.reply_id, found)
                return found
        return await channel.post(claim.reply)

    async def _update(self, claim: _Claim, **values: object) -> None:
        async with self._sessions.begin() as session:
            await self._fenced(session, claim, **values)

    @staticmethod
    async def _fenced(session: AsyncSession, claim: _Claim, **values: object) -> bool:
        """Applies `values` unless another process has claimed the delivery since."""
        result = await session.execute(
            update(ReplyDelivery)
            .where(
                ReplyDelivery.reply_id == claim.delivery.reply_id,
                ReplyDelivery.state == State.SENDING.value,
                ReplyDelivery.attempts == claim.attempts,
            )
            .values(lease_until=None, updated_at=datetime.now(UTC), **values)
        )
        return bool(getattr(result, "rowcount", 0))

    async def _posted(self, claim: _Claim, posted: PostedReply) -> None:
        d = claim.delivery
        now = datetime.now(UTC)
        async with self._sessions.begin() as session:
            # The post's lock before the delivery's row, as a withdrawal takes them: a
            # withdrawal applied while this reply was being sent left it alone (it was
            # "sending"), so the handle leaves it here.
            answered = (d.platform, d.in_reply_to_post_id)
            await lock_posts(session, [answered])
            text = d.text
            scrub: dict[str, object] = {}
            if await was_withdrawn(session, *answered, d.reporter):
                text = unmentioned(text, d.author_handle)
                scrub = {"author_handle": "", "body": text}
            mine = await self._fenced(
                session,
                claim,
                state=State.POSTED.value,
                remote_id=posted.remote_id,
                public_url=posted.public_url or None,
                last_error=None,
                **scrub,
            )
            if not mine:
                return
            await session.execute(
                insert(Reply)
                .values(
                    reply_id=d.reply_id,
                    service_request_id=d.service_request_id,
                    kind=d.kind,
                    language=d.language,
                    platform=d.platform,
                    channel=d.platform,
                    in_reply_to_post_id=d.in_reply_to_post_id,
                    text=text,
                    remote_id=posted.remote_id,
                    posted_at=now,
                )
                .on_conflict_do_nothing(index_elements=[Reply.reply_id])
            )
            rid = str(d.service_request_id) if d.service_request_id is not None else ""
            event = ReplyPosted(
                reply_id=d.reply_id,
                service_request_id=rid,
                platform=d.platform,
                channel=d.platform,
                text=text,
                remote_id=posted.remote_id,
                public_url=posted.public_url,
                posted_at=timestamp(now),
            )
            stage(
                session,
                [
                    envelope(
                        event,
                        key=rid or post_key(d.platform, d.in_reply_to_post_id),
                        event_id=derive_event_id("reply-posted", d.reply_id),
                        correlation_id=d.correlation_id,
                    )
                ],
            )
            metrics.on_commit(session, REPLIES_POSTED.labels(d.platform, d.kind).inc)
        log.info("reply %s posted on %s as %s", d.reply_id, d.platform, posted.remote_id)
