"""Posts withdrawn by their authors: what a post said, showed and where it was, taken out of
every table that keeps it, while the request it reported stays (the problem on the street is
still there; the city's replies and the request's history stay too).

What goes, for the withdrawn post:
- its report: text (a fixed sentence instead), handle, reporter, exact point;
- the request it opened, if it did: description (the same sentence), handle, its public URL,
  photos;
- the request's address and point where they are the post's (it opened the request, or a
  merge gave them), each falling back to another report's if one gives it (otherwise only the
  district and barri stay), and the same in its follow-ups placed by it;
- the request's public status note, and its audit trail's notes and snapshots, where they quote
  the post (a citizen reopening by answering), with the citizen's handle as actor;
- replies to it not yet posted (they are never sent) and the handle of the deliveries posted;
- an Open311 request's contact details (email, phone, names, device and account ids);
- the events about it still in the outbox (a reply to it, the handle of a merge).
A `withdrawn_posts` row (ids, and who asked) remembers it: a reply requested later is dropped,
and the post arriving at the router afterwards (it was deleted before it was routed) opens
nothing if its author (or its platform) asked; the router forgets anybody else's claim. A post
with no report (a thanks's, which opened no request) is known by its author only as its replies
name them (`reporter`): somebody else's claim keeps none of them from going out.

An author may take only a post's location off it (X's `scrub_geo`, `location_only`): its point
goes from its report, and from the request and its follow-ups where it is theirs, as above; what
it said and showed stays, and so do the replies to it. A post not yet routed is routed without
its point."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from sqlalchemy import Text, and_, bindparam, case, func, select, text, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from plaza import metrics
from plaza.contracts import decode, post_key
from plaza.db.models import (
    Open311Submission,
    OutboxRecord,
    ReplyDelivery,
    RequestEvent,
    RequestReport,
    ServiceRequest,
    WithdrawnPost,
)
from plaza.lifecycle import fall_back_place, follow_up_of, point_of, snapshot
from plaza.requests import reporter_of

log = logging.getLogger(__name__)

WITHDRAWN_TEXT: Final = "Withdrawn by its author."
# The reply deliveries' state for a reply that will never be sent: its post is gone.
WITHDRAWN_STATE: Final = "withdrawn"
# A request POSTed through Open311: its post id is its token, its contact details are kept.
OPEN311: Final = "open311"


class Outcome(StrEnum):
    WITHDRAWN = "withdrawn"  # the post's traces are gone
    ALREADY = "already"  # withdrawn before: nothing changes twice
    UNKNOWN = "unknown"  # no request has it: only its ids are remembered
    NOT_THE_AUTHOR = "not_the_author"  # somebody else asked: refused


@dataclass(frozen=True, slots=True)
class Withdrawal:
    platform: str
    post_id: str
    author_id: str
    author_handle: str
    withdrawn_at: datetime
    location_only: bool = False  # only the post's point (X's scrub_geo)

    @classmethod
    def by_the_city(cls, platform: str, post_id: str, *, location_only: bool = False) -> Withdrawal:
        """Asked of the city itself (its data-protection officer, `plaza withdraw`, an admin):
        no author named, as a platform's own word; the city has checked who asks."""
        return cls(platform, post_id, "", "", datetime.now(UTC), location_only)


def asked_by(w: Withdrawal) -> str:
    """Who asked, as reports name their authors (plaza.requests.reporter_of); empty when neither
    id nor handle is given: the platform's own stream says the post is gone (only its author or
    the platform can delete)."""
    if w.author_id:
        return reporter_of(w.platform, w.author_id, "")
    if w.author_handle:
        # Only where the post itself gave no id: a handle changes hands, an account id does not.
        return reporter_of(w.platform, "", w.author_handle)
    return ""


def by_its_author(w: Withdrawal, report: RequestReport) -> bool:
    """Whether the withdrawal comes from the report's author (or from its platform)."""
    who = asked_by(w)
    return not who or who == report.reporter


def withdraws_reply(w: Withdrawal, reporter: str) -> bool:
    """Whether the withdrawal takes back a reply to its post whose request named the post's
    author `reporter`: theirs or the platform's does; any does where none was named."""
    who = asked_by(w)
    return not who or not reporter or who == reporter


# A post's lock, until the transaction ends: the router takes it before it reads whether a post
# was reported or withdrawn (lock_posts), a withdrawal before it reads the post's report. Without
# it each missed the other's uncommitted rows: a withdrawal applied while its post was routed
# found no report, and the router no withdrawal, and the post stayed in the records for good.
# One of POST_LOCKS locks per post, by its key's hash: a router's batch of 1,000 posts holds at
# most that many of PostgreSQL's lock slots (64 per connection by default, shared), not 1,000; a
# withdrawal may wait for a batch without its post, a few milliseconds. In one order for every
# router, so that two never wait for each other.
POST_LOCKS: Final = 256
_LOCK_POSTS = text(
    f"""
    SELECT count(pg_advisory_xact_lock(hashtext('plaza.posts'), b))
    FROM (
        SELECT DISTINCT hashtext(k) & {POST_LOCKS - 1} AS b
        FROM unnest(CAST(:keys AS text[])) AS k ORDER BY 1
    ) AS posts
    """
)


async def lock_posts(session: AsyncSession, keys: Collection[tuple[str, str]]) -> None:
    """Locks these posts (platform, post id) against their withdrawal, or their routing, until
    the transaction ends. A statement of its own: the next one reads what the other committed."""
    if keys:
        await session.execute(_LOCK_POSTS, {"keys": [post_key(*k) for k in keys]})


async def withdraw(session: AsyncSession, w: Withdrawal) -> Outcome:
    """Applies one withdrawal in the caller's transaction. A deletion dated ahead (a bridge's
    clock) is dated now, and no request's last change moves back to an older one."""
    if w.withdrawn_at > (now := datetime.now(UTC)):
        w = replace(w, withdrawn_at=now)
    await lock_posts(session, [(w.platform, w.post_id)])
    report = (
        await session.execute(
            select(RequestReport)
            .where(RequestReport.platform == w.platform, RequestReport.post_id == w.post_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if report is None:
        if not w.location_only:
            await _scrub_outbox(session, post_key(w.platform, w.post_id), w)
            await _scrub_contact(session, w)
        await _remember(session, w)
        if not w.location_only:
            await _cancel_replies(session, w)
        return Outcome.UNKNOWN
    if report.withdrawn_at is not None:
        return Outcome.ALREADY
    if not by_its_author(w, report):
        log.warning(
            "%s %s: withdrawn by %s, who is not its author: refused",
            w.platform,
            w.post_id,
            w.author_id or w.author_handle,
        )
        return Outcome.NOT_THE_AUTHOR
    if w.location_only:
        return await _withdraw_point(session, report, w)
    words, handle = report.text, report.author_handle
    address, point = report.address, point_of(report)
    report.text = WITHDRAWN_TEXT
    report.author_handle = ""
    report.reporter = f"withdrawn:{report.id}"
    report.lat = report.long = report.address = report.address_key = None
    report.withdrawn_at = w.withdrawn_at
    await session.flush()
    request = await _request_of(session, report)
    if request is not None:
        before = snapshot(request)
        if request.source_platform == w.platform and request.source_post_id == w.post_id:
            _scrub_opening(request, w)
        await _replace_place(session, request, address, point, w)
        if words and request.status_notes == words:
            request.status_notes = WITHDRAWN_TEXT
        request.version += 1
        request.updated_datetime = max(request.updated_datetime, w.withdrawn_at)
        await _scrub_history(session, request.id, words, handle)
        _record_withdrawal(session, request, w, kind="withdrawn", before=before)
        await _scrub_outbox(session, request.service_request_id, w, words, handle)
    await _scrub_contact(session, w)
    await _remember(session, w)
    await _cancel_replies(session, w)
    metrics.on_commit(session, metrics.POSTS_WITHDRAWN.labels(w.platform).inc)
    return Outcome.WITHDRAWN


async def _scrub_contact(session: AsyncSession, w: Withdrawal) -> None:
    """An Open311 request's reporter gave their contact details with it (private, for the
    city's staff): they go with it. The token stays, so that tokens/{token} still answers."""
    if w.platform != OPEN311:
        return
    await session.execute(
        update(Open311Submission)
        .where(Open311Submission.token == w.post_id)
        .values(
            email=None,
            phone=None,
            first_name=None,
            last_name=None,
            device_id=None,
            account_id=None,
            attributes={},
        )
    )


async def _request_of(session: AsyncSession, report: RequestReport) -> ServiceRequest | None:
    # FOR NO KEY UPDATE, as the router's merges lock: a FOR UPDATE would also hold off the
    # reports and replies being inserted for it meanwhile.
    return await session.get(
        ServiceRequest, report.service_request_id, with_for_update={"key_share": True}
    )


async def _withdraw_point(session: AsyncSession, report: RequestReport, w: Withdrawal) -> Outcome:
    """The author took the post's location off it: its point leaves its report, and the
    request and follow-ups it placed (_replace_place); what it said and showed stays."""
    point = point_of(report)
    if point is None:
        return Outcome.ALREADY  # no point to take out (never had one, or taken before)
    report.lat = report.long = None
    await session.flush()
    request = await _request_of(session, report)
    if request is not None and await _replace_place(session, request, None, point, w):
        request.version += 1
        request.updated_datetime = max(request.updated_datetime, w.withdrawn_at)
        _record_withdrawal(session, request, w, kind="location_withdrawn")
    metrics.on_commit(session, metrics.POST_LOCATIONS_WITHDRAWN.labels(w.platform).inc)
    return Outcome.WITHDRAWN


def _scrub_opening(request: ServiceRequest, w: Withdrawal) -> None:
    """The request the post opened keeps no trace of what it said and showed."""
    request.description = WITHDRAWN_TEXT
    request.source_author_handle = ""
    request.source_public_url = None
    request.media_url = None
    request.media_urls = []
    request.withdrawn_at = w.withdrawn_at


async def _replace_place(
    session: AsyncSession,
    request: ServiceRequest,
    address: str | None,
    point: tuple[float, float] | None,
    w: Withdrawal,
) -> bool:
    """The request's address and point, where they are the withdrawn post's, fall back to its
    other reports' (plaza.lifecycle.fall_back_place); its follow-ups placed by the post follow.
    Whether it changed."""
    moved_address, moved_point = await fall_back_place(
        session, request, address=address, point=point
    )
    if not (moved_address or moved_point):
        return False
    await _replace_in_follow_ups(
        session,
        request,
        address if moved_address else None,
        point if moved_point else None,
        w,
    )
    return True


def _record_withdrawal(
    session: AsyncSession,
    request: ServiceRequest,
    w: Withdrawal,
    *,
    kind: str,
    before: dict[str, object] | None = None,
) -> None:
    """The audit trail's entry (internal) for a change a withdrawal made to `request`: the
    fields of its snapshot that changed since `before` (none is a point or an address)."""
    after = snapshot(request) if before is not None else {}
    before = before or {}
    session.add(
        RequestEvent(
            service_request_id=request.id,
            version=request.version,
            kind=kind,
            actor="citizen",
            at=w.withdrawn_at,
            before={k: v for k, v in before.items() if after.get(k) != v},
            after={k: v for k, v in after.items() if before.get(k) != v},
            note=f"{w.platform}:{w.post_id}",
            public=False,
        )
    )


async def _replace_in_follow_ups(
    session: AsyncSession,
    request: ServiceRequest,
    address: str | None,
    point: tuple[float, float] | None,
    w: Withdrawal,
) -> None:
    """A follow-up whose answer named no place was placed where the request was, by the post
    now withdrawn: its address and point follow the request's (those its other reports give,
    or none). Those it got from its own answer stay."""
    if address is None and point is None:
        return
    follow_ups = (
        await session.execute(
            select(ServiceRequest)
            .join(RequestEvent, RequestEvent.service_request_id == ServiceRequest.id)
            .where(
                RequestEvent.actor == "router",
                RequestEvent.note.startswith(follow_up_of(request.id), autoescape=True),
            )
            .order_by(ServiceRequest.id)
            .with_for_update(of=ServiceRequest, key_share=True)
        )
    ).scalars()
    for follow_up in follow_ups:
        moved = False
        if address is not None and follow_up.address == address:
            follow_up.address, moved = request.address, True
            follow_up.address_key = request.address_key
        if point is not None and (follow_up.lat, follow_up.long) == point:
            follow_up.lat, follow_up.long, moved = request.lat, request.long, True
        if not moved:
            continue
        follow_up.version += 1
        follow_up.updated_datetime = max(follow_up.updated_datetime, w.withdrawn_at)
        kind = "location_withdrawn" if w.location_only else "withdrawn"
        _record_withdrawal(session, follow_up, w, kind=kind)


# The audit trail quotes a post where a citizen's answer reopened the request: the note, the
# status note in its snapshots, and the citizen's handle as its actor.
_SCRUB_HISTORY = text(
    """
    UPDATE request_events SET
        note = CASE WHEN note = :words THEN :marker ELSE note END,
        actor = CASE WHEN actor = :actor THEN 'citizen' ELSE actor END,
        before = CASE WHEN before->>'status_notes' = :words
            THEN jsonb_set(before, '{status_notes}', to_jsonb(CAST(:marker AS text)))
            ELSE before END,
        after = CASE WHEN after->>'status_notes' = :words
            THEN jsonb_set(after, '{status_notes}', to_jsonb(CAST(:marker AS text)))
            ELSE after END
    WHERE service_request_id = :request_id
      AND (note = :words OR actor = :actor
           OR before->>'status_notes' = :words OR after->>'status_notes' = :words)
    """
).bindparams(bindparam("words", type_=Text), bindparam("actor", type_=Text))


async def _scrub_history(session: AsyncSession, request_id: int, words: str, handle: str) -> None:
    await session.execute(
        _SCRUB_HISTORY,
        {
            "request_id": request_id,
            "words": words or None,  # NULL matches nothing
            "actor": f"citizen:{handle}" if handle else None,
            "marker": WITHDRAWN_TEXT,
        },
    )


async def _scrub_outbox(
    session: AsyncSession, key: str, w: Withdrawal, words: str = "", handle: str = ""
) -> None:
    """Events about the post not yet relayed (the relay deletes each once it is on the bus):
    a reply to it is dropped, a merge announces no handle, a reopening by its answer neither
    its words nor its author."""
    rows = (
        await session.execute(
            select(OutboxRecord).where(OutboxRecord.key == key).with_for_update(skip_locked=True)
        )
    ).scalars()
    citizen = f"citizen:{handle}" if handle else None
    for row in rows:
        event = decode(row.topic, row.payload)
        body = event.WhichOneof("body")
        if body == "reply_requested":
            req = event.reply_requested
            answers = (req.platform, req.in_reply_to_post_id) == (w.platform, w.post_id)
            if answers and withdraws_reply(w, req.reporter):
                await session.delete(row)
            continue
        if body == "request_merged":
            merged = event.request_merged
            if (merged.platform, merged.post_id) != (w.platform, w.post_id):
                continue
            merged.author_handle = ""
        elif body == "request_status_changed":
            changed = event.request_status_changed
            if not ((words and changed.note == words) or changed.actor == citizen):
                continue
            if words and changed.note == words:
                changed.note = WITHDRAWN_TEXT
            if changed.actor == citizen:
                changed.actor = "citizen"
        else:
            continue
        row.payload = event.SerializeToString(deterministic=True)


async def _remember(session: AsyncSession, w: Withdrawal) -> None:
    """One row per post and claimant: the whole post's withdrawal supersedes its location's."""
    row = insert(WithdrawnPost).values(
        platform=w.platform,
        post_id=w.post_id,
        reporter=asked_by(w),
        withdrawn_at=w.withdrawn_at,
        location_only=w.location_only,
    )
    await session.execute(
        row.on_conflict_do_update(
            index_elements=[WithdrawnPost.platform, WithdrawnPost.post_id, WithdrawnPost.reporter],
            set_={"location_only": False, "withdrawn_at": row.excluded.withdrawn_at},
            where=WithdrawnPost.location_only & ~row.excluded.location_only,
        )
    )


async def _cancel_replies(session: AsyncSession, w: Withdrawal) -> None:
    """Replies to the post not yet posted are never sent (the platform would refuse an answer
    to a deleted post anyway); the handle leaves every delivery, and the text of those posted.
    One being sent right now is left to finish: the notifier takes the mention out as it
    records it posted (plaza_notifier.delivery). A reply naming its post's author (a thanks's,
    whose post has no report to tell them by) is left alone by anybody else's withdrawal."""
    who = asked_by(w)
    answering = (
        ReplyDelivery.platform == w.platform,
        ReplyDelivery.in_reply_to_post_id == w.post_id,
        ReplyDelivery.reporter.in_(("", who)) if who else true(),
    )
    await session.execute(
        update(ReplyDelivery)
        .where(*answering, ReplyDelivery.state.in_(("pending", "failed")))
        # its words name the author: never posted, they are nobody's record
        .values(state=WITHDRAWN_STATE, author_handle="", body="", updated_at=w.withdrawn_at)
    )
    # A reply posted begins with the handle where its platform mentions its author (Mastodon):
    # the recorded reply and its delivery keep what the city said, without the mention.
    await session.execute(
        _UNMENTION_REPLIES, {"platform": w.platform, "post_id": w.post_id, "who": who}
    )
    await session.execute(
        update(ReplyDelivery)
        .where(*answering, ReplyDelivery.state != "sending")
        .values(
            body=case(
                (
                    and_(
                        ReplyDelivery.author_handle != "",
                        func.starts_with(ReplyDelivery.body, ReplyDelivery.author_handle + " "),
                    ),
                    func.substr(ReplyDelivery.body, func.length(ReplyDelivery.author_handle) + 2),
                ),
                else_=ReplyDelivery.body,
            ),
            author_handle="",
        )
    )


_UNMENTION_REPLIES = text(
    """
    UPDATE replies r SET text = substr(r.text, length(d.author_handle) + 2)
    FROM reply_deliveries d
    WHERE d.reply_id = r.reply_id AND d.platform = :platform AND d.in_reply_to_post_id = :post_id
      AND d.state <> 'sending' AND d.author_handle <> ''
      AND starts_with(r.text, d.author_handle || ' ')
      AND (CAST(:who AS text) = '' OR d.reporter IN ('', :who))
    """
)


# Which of these (platform, post id, its author) were withdrawn by that author or their
# platform (by anybody where no author is named): one statement whatever their number. A
# withdrawal of a post's location only does not count: the post, and replies to it, stay.
_WITHDRAWN_OF = text(
    """
    SELECT DISTINCT k.platform, k.post_id, k.reporter
    FROM unnest(
        CAST(:platforms AS text[]), CAST(:posts AS text[]), CAST(:reporters AS text[])
    ) AS k(platform, post_id, reporter)
    JOIN withdrawn_posts w ON w.platform = k.platform AND w.post_id = k.post_id
    WHERE (k.reporter = '' OR w.reporter IN ('', k.reporter)) AND NOT w.location_only
    """
)


async def withdrawn_of(
    session: AsyncSession, keys: Collection[tuple[str, str, str]]
) -> set[tuple[str, str, str]]:
    """Which of these posts (platform, post id, its author as a reply request names them, or
    empty) have been withdrawn by their authors."""
    if not keys:
        return set()
    found = await session.execute(
        _WITHDRAWN_OF,
        {
            "platforms": [k[0] for k in keys],
            "posts": [k[1] for k in keys],
            "reporters": [k[2] for k in keys],
        },
    )
    return {(platform, post_id, reporter) for platform, post_id, reporter in found}


# Which of these posts of a platform Plaza keeps something of: one statement whose text does
# not change with their number (three IN lists of 1,000 ids took 35 ms, most of it planning).
_KNOWN_AMONG = text(
    """
    SELECT r.post_id FROM request_reports r
    WHERE r.platform = :platform AND r.post_id = ANY(CAST(:ids AS text[]))
      AND r.withdrawn_at IS NULL
    UNION
    SELECT d.in_reply_to_post_id FROM reply_deliveries d
    WHERE d.platform = :platform AND d.in_reply_to_post_id = ANY(CAST(:ids AS text[]))
      AND d.state <> :withdrawn
    UNION
    SELECT p.post_id FROM published_posts p
    WHERE p.platform = :platform AND p.post_id = ANY(CAST(:ids AS text[]))
    """
)


async def known_among(session: AsyncSession, platform: str, post_ids: Collection[str]) -> set[str]:
    """Which of these posts of `platform` Plaza keeps something of (a report, a reply to it) or
    published lately (not routed yet, perhaps): ingest hands on the deletions of those only,
    not every post deleted on the platform."""
    if not post_ids:
        return set()
    found = await session.execute(
        _KNOWN_AMONG, {"platform": platform, "ids": list(post_ids), "withdrawn": WITHDRAWN_STATE}
    )
    return set(found.scalars())


# Which of these posts of a platform have a report without a point (none given, taken out, or
# withdrawn): a withdrawal of their location has nothing left to take.
_POINTLESS_AMONG = text(
    """
    SELECT r.post_id FROM request_reports r
    WHERE r.platform = :platform AND r.post_id = ANY(CAST(:ids AS text[]))
      AND (r.lat IS NULL OR r.long IS NULL)
    """
)


async def pointless_among(
    session: AsyncSession, platform: str, post_ids: Collection[str]
) -> set[str]:
    """Which of these posts of `platform` are reports with no point left: X reports a post's
    `scrub_geo` at every compliance round, and ingest hands on only the first (those not
    routed yet are handed on each time, and change nothing twice)."""
    if not post_ids:
        return set()
    found = await session.execute(_POINTLESS_AMONG, {"platform": platform, "ids": list(post_ids)})
    return set(found.scalars())


# The posts of a platform Plaza still holds something of: their report, a reply to them, or
# their publication lately; less those withdrawn already (their report says so, or their
# platform withdrew them before they were routed; not those whose location only went). What
# X's compliance check asks X about.
_HELD = text(
    """
    SELECT r.post_id FROM request_reports r
    WHERE r.platform = :platform AND r.withdrawn_at IS NULL
    UNION
    SELECT d.in_reply_to_post_id FROM reply_deliveries d
    WHERE d.platform = :platform AND d.state <> :withdrawn
    UNION
    SELECT p.post_id FROM published_posts p WHERE p.platform = :platform
    EXCEPT
    SELECT r.post_id FROM request_reports r
    WHERE r.platform = :platform AND r.withdrawn_at IS NOT NULL
    EXCEPT
    SELECT w.post_id FROM withdrawn_posts w
    WHERE w.platform = :platform AND w.reporter = '' AND NOT w.location_only
    ORDER BY 1
    """
)


async def held_posts(session: AsyncSession, platform: str) -> list[str]:
    """The ids of the posts of `platform` that Plaza still holds and has not withdrawn."""
    found = await session.execute(_HELD, {"platform": platform, "withdrawn": WITHDRAWN_STATE})
    return list(found.scalars())


async def was_withdrawn(
    session: AsyncSession, platform: str, post_id: str, reporter: str = ""
) -> bool:
    """Whether this post was withdrawn: its report says so, or, a post with no report (a
    thanks's, or one withdrawn before it was routed), a withdrawal of it is remembered, by its
    author `reporter` (or its platform) where they are known."""
    report = (
        await session.execute(
            select(RequestReport.withdrawn_at).where(
                RequestReport.platform == platform, RequestReport.post_id == post_id
            )
        )
    ).first()
    if report is not None:
        return report.withdrawn_at is not None
    return bool(await withdrawn_of(session, [(platform, post_id, reporter)]))


def unmentioned(text: str, handle: str) -> str:
    """A reply's words without the mention of its author that begins it (Mastodon's), as
    _UNMENTION_REPLIES leaves a posted reply to a withdrawn post."""
    mention = handle + " "
    return text[len(mention) :] if handle and text.startswith(mention) else text
