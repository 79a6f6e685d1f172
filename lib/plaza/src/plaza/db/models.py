"""Tables of Plaza's database: service requests, public replies, the consumers' inbox, and who
may use the API (staff users, API keys) with the private contact details of Open311 reporters."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# An open request, and one waiting to be acknowledged, as the partial indexes say them
# (plaza.requests.OPEN_STATUSES and WAITING).
_OPEN = "status IN ('new','acknowledged','assigned','in_progress','transferred','reopened')"
_WAITING = "status IN ('new','reopened','transferred')"


class ServiceRequest(Base):
    """A citizen's request, with the Open311 GeoReport v2 fields and where Plaza routed it."""

    __tablename__ = "service_requests"

    id: Mapped[int] = mapped_column(BigInteger, Identity(start=1), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    service_code: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    requested_datetime: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_datetime: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    expected_datetime: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    address: Mapped[str | None] = mapped_column(Text)
    # The address's canonical key by the city's street register ("018505 250": the street's
    # code and number, plaza.city.streets.address_key), which the duplicate search compares:
    # None when the register cannot read it, or the city has none (migration 0019).
    address_key: Mapped[str | None] = mapped_column(Text)
    lat: Mapped[float | None] = mapped_column(Float)
    long: Mapped[float | None] = mapped_column(Float)
    media_url: Mapped[str | None] = mapped_column(Text)
    agency_responsible: Mapped[str] = mapped_column(String(128))
    district_code: Mapped[str | None] = mapped_column(String(8))
    barri_code: Mapped[str | None] = mapped_column(String(8))
    location_source: Mapped[str] = mapped_column(String(8))
    queue: Mapped[str] = mapped_column(String(32))
    urgency: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(8))
    service_confidence: Mapped[float] = mapped_column(Float)
    channel: Mapped[str] = mapped_column(String(32))
    source_platform: Mapped[str] = mapped_column(String(32))
    source_post_id: Mapped[str] = mapped_column(String(256))
    source_author_handle: Mapped[str] = mapped_column(String(256))
    source_public_url: Mapped[str | None] = mapped_column(Text)
    media_urls: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The lifecycle (issue 4): clocks, who works on it, what became of it.
    ack_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ack_breached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolve_breached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    escalated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    assigned_worker: Mapped[str | None] = mapped_column(String(256))
    status_notes: Mapped[str | None] = mapped_column(Text)
    resolution_photo_url: Mapped[str | None] = mapped_column(Text)
    duplicate_of: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("service_requests.id"))
    reporters_count: Mapped[int] = mapped_column(Integer, server_default="1", default=1)
    version: Mapped[int] = mapped_column(Integer, server_default="1", default=1)
    # When its opening post was withdrawn by its author (plaza.withdrawals): its words, photos,
    # handle and exact point are gone, the request stays.
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The request as a queue item's JSON, without `overdue` and its closing brace (the page's
    # read adds both), written by a trigger on every insert and update (migration 0006); read
    # only by the queue's page, never loaded here.
    queue_item: Mapped[str | None] = mapped_column(Text, deferred=True)

    __table_args__ = (
        UniqueConstraint("source_platform", "source_post_id", name="uq_service_requests_source"),
        # The router's duplicate search among open requests: near a point (a band of latitude,
        # then longitude and time are checked on few rows), in a barri within the window, or
        # at an address. Each holds only the requests its part of the search can find (with a
        # point, a barri, an address key), so that no part can be planned on another's index
        # by service_code alone (migration 0024); the barri's leads with barri_code (0009).
        Index(
            "ix_service_requests_dedupe_near",
            "service_code",
            "lat",
            "long",
            postgresql_where=text(f"{_OPEN} AND lat IS NOT NULL"),
        ),
        Index(
            "ix_service_requests_dedupe_barri",
            "barri_code",
            "service_code",
            "requested_datetime",
            postgresql_where=text(f"{_OPEN} AND barri_code IS NOT NULL"),
        ),
        # A report without a point whose address the street register reads: the requests at
        # that address, by its key however it was written (migrations 0016, 0019).
        Index(
            "ix_service_requests_dedupe_address_key",
            "address_key",
            "service_code",
            "requested_datetime",
            postgresql_where=text(f"{_OPEN} AND address_key IS NOT NULL"),
        ),
        # The SLA scanner's: the requests still waiting for each deadline, by that deadline, so
        # that a scan reads what is due, not every request (migration 0025).
        Index(
            "ix_service_requests_ack_due",
            "ack_due_at",
            postgresql_where=text(f"{_WAITING} AND ack_breached_at IS NULL"),
        ),
        Index(
            "ix_service_requests_resolve_due",
            "expected_datetime",
            postgresql_where=text(f"{_OPEN} AND resolve_breached_at IS NULL"),
        ),
        Index(
            "ix_service_requests_escalated",
            "escalated_at",
            postgresql_where=text("escalated_at IS NOT NULL"),
        ),
        Index("ix_service_requests_queue_due", "queue", "status", "expected_datetime"),
        # A queue's page: its open requests by due time, then id (the keyset of its cursor).
        Index(
            "ix_service_requests_open_queue",
            "queue",
            "expected_datetime",
            "id",
            postgresql_where=text(_OPEN),
        ),
        Index(
            "ix_service_requests_assigned",
            "assigned_worker",
            postgresql_where=text("assigned_worker IS NOT NULL"),
        ),
        Index("ix_service_requests_requested", "requested_datetime"),
        # A BRIN, so that a merge (reporters_count, version, updated_datetime) stays a HOT
        # update, in place in its page, which fillfactor keeps room in (migration 0026).
        Index(
            "ix_service_requests_updated",
            "updated_datetime",
            postgresql_using="brin",
            postgresql_with={"autosummarize": "on"},
        ),
        {"postgresql_with": {"fillfactor": 80}},
    )

    @property
    def service_request_id(self) -> str:
        return str(self.id)


class Reply(Base):
    """A public reply to a citizen, as posted (or recorded by the log channel)."""

    __tablename__ = "replies"

    reply_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # None for a reply to a post that opened no request (a thank-you, a joke).
    service_request_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("service_requests.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(8))
    platform: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    in_reply_to_post_id: Mapped[str] = mapped_column(String(256))
    text: Mapped[str] = mapped_column(Text)
    remote_id: Mapped[str | None] = mapped_column(String(256))
    posted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ProcessedEvent(Base):
    """The inbox: which consumer has handled which event, written in the handler's transaction."""

    __tablename__ = "processed_events"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Indexed for pruning (plaza.db.inbox.prune): rows older than any redelivery are deleted.
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class RequestReport(Base):
    """One citizen's report of a request: the post that opened it, or one merged into it.

    Every actionable post ends as exactly one row here."""

    __tablename__ = "request_reports"

    id: Mapped[int] = mapped_column(BigInteger, Identity(start=1), primary_key=True)
    service_request_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("service_requests.id", ondelete="CASCADE")
    )
    platform: Mapped[str] = mapped_column(String(32))
    post_id: Mapped[str] = mapped_column(String(256))
    author_handle: Mapped[str] = mapped_column(String(256))
    # Who it was, as reports are counted and matched: "<platform>:<account id>" (a handle can
    # change or pass to someone else), "<platform>:<handle in lower case>" where the channel
    # gives no id (plaza.requests.reporter_of).
    reporter: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    lat: Mapped[float | None] = mapped_column(Float)
    long: Mapped[float | None] = mapped_column(Float)
    # The address it gave, as written, and that address's key by the street register (a request
    # whose opening post is withdrawn keeps another report's; a split report takes its own).
    address: Mapped[str | None] = mapped_column(Text)
    address_key: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(8))
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    merged: Mapped[bool] = mapped_column(Boolean)  # False for the post that opened the request
    # When its author withdrew the post: text, handle, reporter, point and address are gone.
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("platform", "post_id", name="uq_request_reports_post"),
        # A request's reports, and whether someone reported it already (the router's merges:
        # migration 0023), without reading its other reports.
        Index("ix_request_reports_request_reporter", "service_request_id", "reporter"),
    )


class RequestEvent(Base):
    """The audit trail: every change to a request, with who made it, when, and before and after."""

    __tablename__ = "request_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(start=1), primary_key=True)
    service_request_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("service_requests.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)  # the request's version after the change
    kind: Mapped[str] = mapped_column(String(32))  # created, merged, acknowledge, ..., sla_breached
    actor: Mapped[str] = mapped_column(String(256))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    before: Mapped[dict[str, object]] = mapped_column(JSONB)
    after: Mapped[dict[str, object]] = mapped_column(JSONB)
    note: Mapped[str | None] = mapped_column(Text)
    public: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (
        Index("ix_request_events_history", "service_request_id", "id"),
        # Open311's servicerequestupdates feed: the public changes in a time window.
        Index("ix_request_events_public_at", "at", postgresql_where=text("public")),
    )


class OutboxRecord(Base):
    """The transactional outbox: events written with the change they announce, relayed to Kafka
    (and deleted once published: every row is an event still to publish)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(start=1), primary_key=True)
    topic: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(256))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BusPartition(Base):
    """A partition of the embedded bus's journal (JournalBus): its topic's partition count is
    the number of rows, and `log_start` the offset of its oldest record kept (those below were
    read by every group, or outlived the retention of a topic nobody reads)."""

    __tablename__ = "bus_partitions"

    topic: Mapped[str] = mapped_column(Text, primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    log_start: Mapped[int] = mapped_column(BigInteger, server_default="0")


class BusRecord(Base):
    """A record on the embedded bus, written before `publish` returns (ingest's 202 means it is
    here) and deleted once every group that reads its topic has committed it."""

    __tablename__ = "bus_records"

    topic: Mapped[str] = mapped_column(Text, primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str | None] = mapped_column(Text)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[bytes | None] = mapped_column(LargeBinary)  # JSON [[name, latin-1 value]]
    timestamp_ms: Mapped[int] = mapped_column(BigInteger)


class BusOffset(Base):
    """A consumer group's committed offset on the embedded bus: the next record it reads after
    a restart."""

    __tablename__ = "bus_offsets"

    consumer_group: Mapped[str] = mapped_column(Text, primary_key=True)
    topic: Mapped[str] = mapped_column(Text, primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)


class StaffUser(Base):
    """A member of staff who logs in for bearer tokens: a manager, a worker, city hall, an admin."""

    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(start=1), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32))
    # The queues a manager manages: district codes ("06"), "triage" or a city queue.
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    # A worker's public handle, as managers assign it (service_requests.assigned_worker).
    worker_handle: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Each token carries the generation it was issued in; a password reset or a disable moves
    # it on, so the tokens issued before stop working (and a re-enabled user's stay dead).
    token_generation: Mapped[int] = mapped_column(Integer, server_default="0", default=0)


class ApiKey(Base):
    """An API key, stored as its SHA-256 only: the key itself is shown once, when it is made."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigInteger, Identity(start=1), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # so an admin can tell keys apart
    role: Mapped[str] = mapped_column(String(32))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    worker_handle: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Open311Submission(Base):
    """A request POSTed through Open311: its token and its reporter's contact details, which are
    private (never in a public response). The request itself is the router's, keyed
    ("open311", token) like any post."""

    __tablename__ = "open311_submissions"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    api_key_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("api_keys.id"), index=True)
    service_code: Mapped[str] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(256))
    phone: Mapped[str | None] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(String(128))
    last_name: Mapped[str | None] = mapped_column(String(128))
    device_id: Mapped[str | None] = mapped_column(String(256))
    account_id: Mapped[str | None] = mapped_column(String(256))
    attributes: Mapped[dict[str, object]] = mapped_column(JSONB, default=dict)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConnectorCursor(Base):
    """Where an ingest connector stopped reading a platform: written only once the posts up to
    it are durably on the bus, so a restart neither misses nor repeats a post."""

    __tablename__ = "connector_cursors"

    connector: Mapped[str] = mapped_column(String(128), primary_key=True)
    cursor: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PublishedPost(Base):
    """A post an ingest connector put on the bus (its ids only), kept for the bus's retention:
    its deletion is handed on after ingest restarted even if the post has not been routed yet
    (no report or reply of it to tell). The firehose's deletions of other posts are not."""

    __tablename__ = "published_posts"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    post_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    published_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    __table_args__ = (Index("ix_published_posts_published_at", "published_at"),)


class ReplyDelivery(Base):
    """A public reply on its way to a social platform: pending, sending (the HTTP call may have
    been made), posted, or failed (dead-lettered, waiting for a manager to retry it).

    `sending` is committed before the HTTP call: a delivery found in `sending` whose lease ran
    out belongs to a process that died mid-call, so the thread is searched for the reply before
    it is sent again (`maybe_sent`)."""

    __tablename__ = "reply_deliveries"

    reply_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    service_request_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("service_requests.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(8))
    platform: Mapped[str] = mapped_column(String(32))
    in_reply_to_post_id: Mapped[str] = mapped_column(String(256))
    author_handle: Mapped[str] = mapped_column(String(256))
    # Who wrote the post it answers (plaza.requests.reporter_of) where no report says (a thanks
    # for a post that opened no request): only their withdrawal withdraws it. Empty: any does.
    reporter: Mapped[str] = mapped_column(Text, server_default="", default="")
    # `body` in Python (`text` would hide sqlalchemy's text() below), `text` in the table.
    body: Mapped[str] = mapped_column("text", Text)
    photo_url: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    maybe_sent: Mapped[bool] = mapped_column(Boolean, server_default="false", default=False)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    remote_id: Mapped[str | None] = mapped_column(String(256))
    public_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        # The delivery loop's work: due pending deliveries and sending ones whose lease ran out.
        Index(
            "ix_reply_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("state IN ('pending','sending')"),
        ),
        Index("ix_reply_deliveries_state", "state", "updated_at"),
        # The deliveries answering one post: withdrawn with it (plaza.withdrawals).
        Index("ix_reply_deliveries_post", "platform", "in_reply_to_post_id"),
    )


class WithdrawnPost(Base):
    """A post its author withdrew (deleted on its platform): only its ids, so that a reply on its
    way to it, or the post arriving late, is recognised and dropped. `reporter`: who asked, as
    reports name their authors (plaza.requests.reporter_of), empty where the platform's own
    stream said so; a post not yet routed when it was asked is dropped only if it is theirs, so
    one post may have several claims (migration 0018). `location_only`: only its point was
    withdrawn (X's scrub_geo), and a post not yet routed is routed without it (migration 0022)."""

    __tablename__ = "withdrawn_posts"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    post_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    reporter: Mapped[str] = mapped_column(Text, primary_key=True, server_default="", default="")
    withdrawn_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    location_only: Mapped[bool] = mapped_column(Boolean, server_default="false", default=False)
