"""Tables of Plaza's database: service requests, public replies and the consumers' inbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY
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

    __table_args__ = (
        UniqueConstraint("source_platform", "source_post_id", name="uq_service_requests_source"),
        Index("ix_service_requests_queue_due", "queue", "status", "expected_datetime"),
        Index("ix_service_requests_requested", "requested_datetime"),
        Index("ix_service_requests_updated", "updated_datetime"),
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
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
