"""The router's settings (PLAZA_* environment variables)."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from plaza.db import inbox
from plaza.settings import PlazaSettings
from pydantic import Field


class NotActionableReply(StrEnum):
    """What a citizen hears back when their post is not a service request."""

    NONE = "none"  # silence: the post is read, nothing opens, nothing is said
    ACKNOWLEDGE = "acknowledge"  # a polite public thank-you that explains how to report


class RouterSettings(PlazaSettings):
    min_location_confidence: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Below this, a district found by the classifier goes to triage instead",
    )
    not_actionable_reply: NotActionableReply = Field(
        default=NotActionableReply.NONE,
        description="PLAZA_NOT_ACTIONABLE_REPLY: none, or acknowledge (a polite public reply)",
    )
    duplicate_radius_m: float = Field(
        default=60, ge=0, description="Same service this close: one request"
    )
    duplicate_window_hours: float = Field(
        default=72, ge=0, description="...reported within this time"
    )
    duplicate_text_similarity: float = Field(
        default=0.5, ge=0, le=1, description="Without coordinates: same barri and texts this alike"
    )
    sla_scan_interval: float = Field(default=15, gt=0, description="Seconds between SLA scans")
    inbox_retention_days: float = Field(
        default=inbox.RETENTION / timedelta(days=1),
        ge=1,
        description="PLAZA_INBOX_RETENTION_DAYS: how long the router remembers an event it "
        "handled (processed_events), to recognise a redelivery; older rows are deleted. Keep "
        "it longer than the longest retention of any topic (dead letters: 30 days) plus "
        "Kafka's segment roll (7 days): a redelivery from further back opens its request again",
    )

    def inbox_retention(self) -> timedelta:
        return timedelta(days=self.inbox_retention_days)
