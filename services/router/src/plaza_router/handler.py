"""The router's handler: post-classified in; a new request in a queue, or a report merged into an
open one, or a reopened request. All its effects go through the outbox, in one transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from plaza.city import City
from plaza.contracts import (
    REPLY_KIND_NOT_ACTIONABLE,
    URGENCY_URGENT,
    Envelope,
    Outgoing,
    Post,
    PostClassified,
    ReplyRequested,
    derive_event_id,
    envelope,
    from_timestamp,
    post_key,
)
from plaza.db.inbox import first_time
from plaza.db.models import Reply, RequestReport, ServiceRequest
from plaza.db.rows import BulkWrite, also_execute, rows_in_bulk
from plaza.lifecycle import (
    AnyRequest,
    Command,
    NewReport,
    RequestRow,
    act,
    add_report,
    merge_report,
    open_follow_up,
    open_request,
)
from plaza.outbox import stage
from plaza.policy import RoutingTable, SlaPolicy
from plaza.requests import CLOSED_STATUSES, Action, Status, reporter_of
from plaza.withdrawals import lock_posts
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from plaza_router.dedupe import (
    DuplicatePolicy,
    Found,
    Probe,
    candidates,
    find_duplicate,
    first_times_locking,
    key_of,
    lock_service,
)
from plaza_router.settings import NotActionableReply, RouterSettings

GROUP = "plaza-router"

# Which of these posts already have a report, or were withdrawn by their authors (deleted
# before they were routed: they open nothing): one index lookup per post and table, in one
# statement whose text does not change with their number (a row-value IN list was planned anew
# for each size, and took 16 ms for 250 posts). The lookup of request_reports is a LATERAL
# subquery fenced by OFFSET 0, which can only be a probe per post: as a join, a table without
# statistics (a new city's, until autovacuum's first analyze a minute or more into a burst)
# was hashed whole for every batch, 9 ms with 60,000 reports. A withdrawal counts if its author
# asked (the post names them now) or the platform's own stream; anybody else's claim is
# forgotten, so that it keeps nothing out, nor a reply to the post. A withdrawal of the post's
# location only (location_only) is returned as such: the post is routed without its point.
_REPORTED = text(
    """
    WITH k AS (
        SELECT * FROM unnest(
            CAST(:platforms AS text[]), CAST(:posts AS text[]), CAST(:reporters AS text[])
        ) AS k(platform, post_id, reporter)
    ), refused AS (
        DELETE FROM withdrawn_posts w USING k
        WHERE w.platform = k.platform AND w.post_id = k.post_id
          AND w.reporter NOT IN ('', k.reporter)
    )
    SELECT r.platform, r.post_id, false AS location_only
    FROM k CROSS JOIN LATERAL (
        SELECT r.platform, r.post_id FROM request_reports AS r
        WHERE r.platform = k.platform AND r.post_id = k.post_id
        OFFSET 0
    ) AS r
    UNION ALL
    SELECT w.platform, w.post_id, w.location_only
    FROM k JOIN withdrawn_posts w ON w.platform = k.platform AND w.post_id = k.post_id
    WHERE w.reporter IN ('', k.reporter)
    """
)


class RoutePost:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        city: City,
        *,
        sla: SlaPolicy,
        routing: RoutingTable,
        duplicates: DuplicatePolicy = DuplicatePolicy(),
        not_actionable_reply: NotActionableReply = NotActionableReply.NONE,
        min_location_confidence: float = 0.5,
    ) -> None:
        self._sessions = sessions
        self._city = city
        self._sla = sla
        self._routing = routing
        self._duplicates = duplicates
        self._not_actionable_reply = not_actionable_reply
        self._min_location_confidence = min_location_confidence

    @classmethod
    def from_settings(
        cls, sessions: async_sessionmaker[AsyncSession], city: City, settings: RouterSettings
    ) -> RoutePost:
        return cls(
            sessions,
            city,
            sla=SlaPolicy.load(settings.sla_config),
            routing=RoutingTable.load(settings.routing_config, city),
            duplicates=DuplicatePolicy(
                radius_m=settings.duplicate_radius_m,
                window=timedelta(hours=settings.duplicate_window_hours),
                text_similarity=settings.duplicate_text_similarity,
            ),
            not_actionable_reply=settings.not_actionable_reply,
            min_location_confidence=settings.min_location_confidence,
        )

    async def __call__(self, event: Envelope) -> Sequence[Outgoing]:
        classified = event.post_classified
        async with self._sessions.begin() as session:
            # Everything this event causes is committed with its inbox row: a redelivery finds
            # the row and does nothing, so each effect happens once.
            if not await first_time(session, GROUP, event.event_id):
                return []
            await self._route(session, event, classified)
        return []

    async def batch(self, events: Sequence[Envelope]) -> Sequence[Outgoing]:
        """Routes several events in one transaction (the worker's batch handler), as routing
        them one at a time in order would, with a few statements for the whole batch instead of
        several per post: one for the inbox and the dedupe locks (taken up front, in one
        order, so two routers never wait for each other's locks in opposite orders), one for
        the posts already reported, one for every post's duplicate candidates, one to lock the
        requests that get a report and take the new requests' ids; then the writes, all in one
        statement (`rows_in_bulk`). A follow-up in a request's thread (rare) is routed
        on its own, in its place."""
        async with self._sessions.begin() as session:
            fresh = await first_times_locking(
                session,
                GROUP,
                (
                    (e.event_id, c.service_code if c.actionable else None)
                    for e in events
                    for c in (e.post_classified,)
                ),
            )
            todo = []
            for event in events:
                if event.event_id in fresh:
                    fresh.discard(event.event_id)  # the same event twice in a batch: once
                    todo.append(event)
            seen, unlocated = await self._reported(session, [e.post_classified.post for e in todo])
            run: list[tuple[Envelope, NewReport]] = []
            for event in todo:
                if _key(event) in seen:
                    continue  # the same post reached us twice by different channels, or withdrawn
                seen.add(_key(event))
                if _key(event) in unlocated:
                    _unlocate(event.post_classified.post)
                if event.post_classified.post.reply_to_post_id:
                    await self._route_run(session, run)
                    run = []
                    await self._route(session, event, event.post_classified)
                else:
                    run.append((event, _report(event.post_classified, self._city)))
            await self._route_run(session, run)
        return []

    async def _route_run(
        self, session: AsyncSession, run: Sequence[tuple[Envelope, NewReport]]
    ) -> None:
        """Routes posts that answer no thread, in order: each is a new request or a report of
        an open one (found among the requests before the run, or opened earlier in it)."""
        if not run:
            return
        if session.new or session.dirty:
            await session.flush()  # what came before the run is among its candidates
        probes = [
            _probe(e.post_classified, r, self._city) if e.post_classified.actionable else None
            for e, r in run
        ]
        asked = [p for p in probes if p is not None]
        found = iter(await candidates(session, self._duplicates, asked))
        # Decide first, with no I/O: per post, the existing request it repeats (Found), one
        # opened earlier in the run (NewRequest), or a request of its own (None).
        opened: list[NewRequest] = []
        opened_for: dict[str, list[NewRequest]] = {}  # by service: no other is a candidate
        decisions: list[tuple[Envelope, NewReport, Found | NewRequest | None]] = []
        for (event, report), probe in zip(run, probes, strict=True):
            c = event.post_classified
            if probe is None:  # not actionable
                decisions.append((event, report, None))
                continue
            pool: list[tuple[tuple[int, int], Found | NewRequest]] = [
                ((0, f.id), f) for f in next(found)
            ]
            if probe.searchable(self._duplicates):
                # Those opened earlier in the run come after every older one, in their order.
                pool += [
                    ((1, o.index), o)
                    for o in opened_for.get(probe.service_code, ())
                    if o.admitted_by(probe, self._duplicates)
                ]
            best = probe.best(self._duplicates, pool)
            decisions.append((event, report, best))
            if best is None:
                new = NewRequest(len(opened), probe, c.placement.barri_code or None)
                opened.append(new)
                opened_for.setdefault(probe.service_code, []).append(new)
        # Then write: lock the existing requests that get a report, take the new ones' ids.
        merging = sorted(
            {(d.id, report.reporter) for _, report, d in decisions if isinstance(d, Found)}
        )
        locked, new_ids = await _lock_and_take_ids(
            session, sorted({id_ for id_, _ in merging}), len(opened), merging
        )
        ids = iter(new_ids)
        async with rows_in_bulk(session):
            await self._write(session, decisions, locked, ids)
            merged = locked.write_back(session)
        if merged:
            # An ORM object of these requests (a follow-up's, earlier in the batch) is stale.
            session.expire_all()

    async def _write(
        self,
        session: AsyncSession,
        decisions: Sequence[tuple[Envelope, NewReport, Found | NewRequest | None]],
        locked: Locked,
        ids: Iterator[int],
    ) -> None:
        new: list[RequestRow] = []
        new_authors: list[set[str]] = []  # who reported each new request so far
        now = datetime.now(UTC)
        for event, report, repeats in decisions:
            c = event.post_classified
            correlation = event.correlation_id or event.event_id
            if not c.actionable:
                if self._not_actionable_reply is NotActionableReply.ACKNOWLEDGE:
                    stage(session, [self._thank(event)])
            elif repeats is None:
                row = await self._open(session, c, report, correlation, next(ids))
                assert isinstance(row, RequestRow)  # a request id given: a row of the batch
                new.append(row)
                new_authors.append({report.reporter})
            else:
                if isinstance(repeats, Found):
                    target, authors = locked.rows[repeats.id], locked.authors[repeats.id]
                else:
                    target, authors = new[repeats.index], new_authors[repeats.index]
                await merge_report(
                    session,
                    target,
                    report,
                    actor="router",
                    now=now,
                    correlation_id=correlation,
                    city=self._city,
                    new_reporter=report.reporter not in authors,
                )
                authors.add(report.reporter)

    async def _route(self, session: AsyncSession, event: Envelope, c: PostClassified) -> None:
        post = c.post
        correlation = event.correlation_id or event.event_id
        seen, unlocated = await self._reported(session, [post])
        if seen:
            return  # the same post reached us twice by different channels, or was withdrawn
        if unlocated:
            _unlocate(post)
        report = _report(c, self._city)
        now = datetime.now(UTC)
        if post.reply_to_post_id and await self._follow_up(
            session,
            report,
            post.reply_to_post_id,
            now,
            correlation,
            actionable=c.actionable,
            urgent=c.urgency == URGENCY_URGENT,
        ):
            return
        if not c.actionable:
            if self._not_actionable_reply is NotActionableReply.ACKNOWLEDGE:
                stage(session, [self._thank(event)])
            return
        await lock_service(session, c.service_code)
        place = c.placement
        duplicate = await find_duplicate(
            session,
            self._duplicates,
            service_code=c.service_code,
            reported_at=report.reported_at,
            text_=report.text,
            lat=report.lat,
            lon=report.long,
            barri_code=place.barri_code or None,
            address=report.address,
            streets=self._city.streets,
        )
        if duplicate is not None:
            reported_before = await session.execute(
                select(RequestReport.id)
                .where(
                    RequestReport.service_request_id == duplicate.id,
                    RequestReport.reporter == report.reporter,
                )
                .limit(1)
            )
            await merge_report(
                session,
                duplicate,
                report,
                actor="router",
                now=now,
                correlation_id=correlation,
                city=self._city,
                new_reporter=reported_before.first() is None,
            )
            return
        await self._open(session, c, report, correlation)

    async def _open(
        self,
        session: AsyncSession,
        c: PostClassified,
        report: NewReport,
        correlation: str,
        request_id: int | None = None,
    ) -> AnyRequest:
        place = c.placement
        # A district the classifier is unsure of is only a hint: a person in triage decides.
        sure = place.district_code and place.confidence >= self._min_location_confidence
        route = self._routing.route(
            place.district_code if sure else None, place.district_name, c.service_code
        )
        return await open_request(
            session,
            report,
            service_code=c.service_code,
            urgent=c.urgency == URGENCY_URGENT,
            service_confidence=c.service_confidence,
            placement=place,
            route=route,
            sla=self._sla,
            actor="router",
            correlation_id=correlation,
            request_id=request_id,
        )

    @staticmethod
    async def _reported(
        session: AsyncSession, posts: Sequence[Post]
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """Which of these posts (platform, post id) are already a report of some request, or
        were withdrawn by their authors; and which had their location withdrawn by them. Locked
        against a withdrawal until the transaction ends (lock_posts)."""
        if not posts:
            return set(), set()
        await lock_posts(session, [(p.platform, p.post_id) for p in posts])
        found = await session.execute(
            _REPORTED,
            {
                "platforms": [p.platform for p in posts],
                "posts": [p.post_id for p in posts],
                "reporters": [reporter_of(p.platform, p.author_id, p.author_handle) for p in posts],
            },
        )
        seen: set[tuple[str, str]] = set()
        unlocated: set[tuple[str, str]] = set()
        for platform, post_id, location_only in found:
            (unlocated if location_only else seen).add((platform, post_id))
        return seen, unlocated - seen

    async def _follow_up(
        self,
        session: AsyncSession,
        report: NewReport,
        reply_to: str,
        now: datetime,
        correlation: str,
        *,
        actionable: bool,
        urgent: bool,
    ) -> bool:
        """A citizen answering in a request's thread: a resolved request they reported is
        reopened if the answer says something is wrong (actionable: "it is still broken", not
        "thank you!", which is kept on the request and changes nothing); someone else's such
        answer opens a new request of the same service and place, linked to it; an open one
        gets the post as another report. False if not a known thread, or an answer to leave to
        the usual routing."""
        request_id = (
            await session.execute(
                select(RequestReport.service_request_id).where(
                    RequestReport.platform == report.platform, RequestReport.post_id == reply_to
                )
            )
        ).scalar_one_or_none()
        if request_id is None:
            request_id = (
                await session.execute(
                    select(Reply.service_request_id).where(
                        Reply.platform == report.platform, Reply.remote_id == reply_to
                    )
                )
            ).scalar_one_or_none()
        if request_id is None:
            return False
        request = await session.get(ServiceRequest, request_id, with_for_update=True)
        if request is None:
            return False
        while request.duplicate_of is not None:  # follow a merge to the request that lives on
            target = await session.get(ServiceRequest, request.duplicate_of, with_for_update=True)
            if target is None:
                break
            request = target
        reporters = set(
            (
                await session.execute(
                    select(RequestReport.reporter).where(
                        RequestReport.service_request_id == request.id
                    )
                )
            ).scalars()
        )
        if request.status in CLOSED_STATUSES:
            if request.status not in (Status.RESOLVED, Status.CLOSED):
                return False  # not the city's to do (not_responsible): as any other post
            if report.reporter not in reporters:
                if not actionable:
                    return False  # someone else's thanks: as any other post
                await open_follow_up(
                    session,
                    request,
                    report,
                    urgent=urgent,
                    now=now,
                    sla=self._sla,
                    routing=self._routing,
                    city=self._city,
                    correlation_id=correlation,
                )
                return True
            if not actionable:
                add_report(session, request, report, merged=True)  # thanks: nothing to reopen
                return True
            await act(
                session,
                request.id,
                Command(Action.REOPEN, actor=f"citizen:{report.author_handle}", note=report.text),
                now=now,
                sla=self._sla,
                routing=self._routing,
                city=self._city,
            )
            add_report(session, request, report, merged=True)
            return True
        await merge_report(
            session,
            request,
            report,
            actor="router",
            now=now,
            correlation_id=correlation,
            city=self._city,
            new_reporter=report.reporter not in reporters,
        )
        return True

    @staticmethod
    def _thank(event: Envelope) -> Outgoing:
        classified = event.post_classified
        post = classified.post
        key = post_key(post.platform, post.post_id)
        reply = ReplyRequested(
            reply_id=derive_event_id("reply", key, "not-actionable"),
            kind=REPLY_KIND_NOT_ACTIONABLE,
            language=classified.language or post.language,
            platform=post.platform,
            in_reply_to_post_id=post.post_id,
            author_handle=post.author_handle,
            # no report will name its author: only their withdrawal keeps it from going out
            reporter=reporter_of(post.platform, post.author_id, post.author_handle),
        )
        return envelope(
            reply,
            key=key,
            event_id=derive_event_id("reply-requested", reply.reply_id),
            correlation_id=event.correlation_id or event.event_id,
        )


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A request opened earlier in the same run, as a duplicate candidate (not yet written):
    its place and text are its first report's."""

    index: int
    probe: Probe
    barri_code: str | None

    @property
    def lat(self) -> float | None:
        return self.probe.lat

    @property
    def long(self) -> float | None:
        return self.probe.lon

    @property
    def description(self) -> str:
        return self.probe.text

    @property
    def address(self) -> str | None:
        return self.probe.address

    @property
    def address_key(self) -> str | None:
        return self.probe.address_key

    def admitted_by(self, probe: Probe, policy: DuplicatePolicy) -> bool:
        return probe.admits(
            policy,
            service_code=self.probe.service_code,
            requested_at=self.probe.reported_at,
            candidate=self,
            barri_code=self.barri_code,
        )


def _key(event: Envelope) -> tuple[str, str]:
    post = event.post_classified.post
    return post.platform, post.post_id


def _unlocate(post: Post) -> None:
    """Its author took the post's location off it before it was routed: it is routed without
    its point (the district and barri the classifier found stay, as a withdrawal leaves them)."""
    post.ClearField("latitude")
    post.ClearField("longitude")


def _report(c: PostClassified, city: City) -> NewReport:
    post = c.post
    # A post cannot be made after it reached Plaza: a clock ahead (or a made-up date) would
    # start its SLA clock in the future and keep it at the top of every list for as long.
    created = from_timestamp(post.created_at)
    now = datetime.now(UTC)
    # the post's own address (an Open311 address_string) wins over the street its text names
    address = post.address or c.street_address or None
    return NewReport(
        platform=post.platform,
        post_id=post.post_id,
        author_handle=post.author_handle,
        text=post.text,
        language=c.language or post.language or "other",
        reported_at=created if created <= now else now,
        lat=post.latitude if post.HasField("latitude") else None,
        long=post.longitude if post.HasField("longitude") else None,
        address=address,
        address_key=key_of(city.streets, address),
        public_url=post.public_url or None,
        channel=post.channel,
        media_urls=tuple(post.media_urls),
        reporter=reporter_of(post.platform, post.author_id, post.author_handle),
    )


def _probe(c: PostClassified, report: NewReport, city: City) -> Probe:
    return Probe(
        service_code=c.service_code,
        reported_at=report.reported_at,
        text=report.text,
        lat=report.lat,
        lon=report.long,
        barri_code=c.placement.barri_code or None,
        address=report.address,
        streets=city.streets,
    )


# A request's columns but its queue item (the trigger's, never read here). FOR NO KEY UPDATE,
# the lock an UPDATE of non-key columns takes: a FOR UPDATE also blocks the KEY SHARE locks that
# inserting a row referring to the request takes, and the notifier, recording replies to several
# requests, then deadlocked with a batch merging into two of them (PostgreSQL's detection
# took a second, and the batch was then routed again one post at a time).
_COLUMNS = [c.name for c in ServiceRequest.__table__.columns if c.name != "queue_item"]
_LOCKED = (
    "SELECT " + ", ".join(_COLUMNS) + " FROM service_requests"
    " WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR NO KEY UPDATE"
)
# Which of the authors of the reports a batch merges into a request reported it already: a
# report counts a new reporter only if its author is not among them. A probe per (request,
# author) pair through the index on (service_request_id, reporter) (migration 0023): all of a
# request's authors were read at every merge, and the request a whole street reports has
# hundreds of reports. A LATERAL subquery (as _REPORTED's), so that the plan is the probes
# whatever the table's statistics: without them (a new city's table, until autovacuum's first
# analyze) the planner hashed the whole table instead, 25 ms a batch with 60,000 reports.
_AUTHORS = (
    "SELECT p.id, array_agg(p.reporter) AS authors"
    " FROM (SELECT DISTINCT id, reporter FROM unnest(CAST(:pair_ids AS bigint[]),"
    " CAST(:pair_reporters AS text[])) AS u(id, reporter)) AS p"
    " CROSS JOIN LATERAL (SELECT FROM request_reports r"
    " WHERE r.service_request_id = p.id AND r.reporter = p.reporter LIMIT 1) AS r"
    " GROUP BY p.id"
)
# n ids from the requests' sequence, in order (what n inserts one by one would get).
_NEW_IDS = (
    "SELECT nextval(pg_get_serial_sequence('service_requests', 'id')) AS id"
    " FROM generate_series(1, :n)"
)
# All in one round trip: the locked requests with their authors among the merged reports',
# each row also carrying the new ids (one row of NULL columns when none is locked).
_LOCKED_AND_NEW_IDS = text(
    f"WITH locked AS ({_LOCKED}), authors AS ({_AUTHORS}), new AS ({_NEW_IDS})"
    " SELECT (SELECT array_agg(id ORDER BY id) FROM new) AS new_ids, "
    + ", ".join(f"locked.{c}" for c in _COLUMNS)
    + ", authors.authors FROM (SELECT) AS one LEFT JOIN locked ON true"
    " LEFT JOIN authors ON authors.id = locked.id"
)
# What merging a report changes in the request it joins (merge_report).
_MERGED_FIELDS = frozenset({"reporters_count", "version", "updated_datetime"})
_WRITE_MERGED = """
    UPDATE service_requests s
    SET reporters_count = u.reporters_count, version = u.version,
        updated_datetime = u.updated_datetime
    FROM unnest(CAST(:{p}ids AS bigint[]), CAST(:{p}counts AS integer[]),
                CAST(:{p}versions AS integer[]), CAST(:{p}at AS timestamptz[]))
         AS u(id, reporters_count, version, updated_datetime)
    WHERE s.id = u.id
    """


@dataclass
class Locked:
    """Requests of a run locked for update, as plain rows (no ORM object each): merges change
    them in place, and `write_back` writes what changed with the batch's rows."""

    rows: dict[int, RequestRow]
    read: dict[int, dict[str, object]]
    # who has reported each, of the reporters the batch merges (merges add to it)
    authors: dict[int, set[str]]

    def write_back(self, session: AsyncSession) -> bool:
        """Inside `rows_in_bulk`: the changed requests are updated in its statement. Whether
        any changed."""
        changed = [row for id_, row in self.rows.items() if row.__dict__ != self.read[id_]]
        for row in changed:
            fields = {k for k, v in row.__dict__.items() if self.read[row.id][k] != v}
            if not fields <= _MERGED_FIELDS:
                raise RuntimeError(f"request {row.id}: {sorted(fields)} changed in a batch")
        if not changed:
            return False
        also_execute(
            session,
            BulkWrite(
                _WRITE_MERGED,
                {
                    "ids": [r.id for r in changed],
                    "counts": [r.reporters_count for r in changed],
                    "versions": [r.version for r in changed],
                    "at": [r.updated_datetime for r in changed],
                },
            ),
        )
        return True


async def _lock_and_take_ids(
    session: AsyncSession, lock: Sequence[int], n: int, merging: Sequence[tuple[int, str]]
) -> tuple[Locked, list[int]]:
    """The requests `lock` locked for update (in id order) and read afresh, with which authors
    of the reports merged into them (`merging`: (request id, reporter) pairs) reported each
    already, and n new ids from the requests' sequence, in order, in one statement."""
    if not lock and n == 0:
        return Locked({}, {}, {}), []
    rows = list(
        await session.execute(
            _LOCKED_AND_NEW_IDS,
            {
                "ids": list(lock),
                "n": n,
                "pair_ids": [id_ for id_, _ in merging],
                "pair_reporters": [reporter for _, reporter in merging],
            },
        )
    )
    new_ids = list(rows[0].new_ids or ())  # array_agg of no rows is NULL
    # each row: new_ids, then _COLUMNS in order, then the authors
    width = len(_COLUMNS)
    read = {
        row.id: dict(zip(_COLUMNS, row[1 : 1 + width], strict=True))
        for row in rows
        if row.id is not None
    }
    authors = {row.id: set(row.authors or ()) for row in rows if row.id is not None}
    return Locked(
        {i: RequestRow(dict(columns)) for i, columns in read.items()}, read, authors
    ), new_ids
