"""The router's settings (PLAZA_* environment variables)."""

from __future__ import annotations

from enum import StrEnum

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
