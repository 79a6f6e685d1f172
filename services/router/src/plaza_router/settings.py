"""The router's settings (PLAZA_* environment variables)."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from plaza.settings import PlazaSettings
from pydantic import Field

from plaza_router.sla import SlaPolicy


class NotActionableReply(StrEnum):
    """What a citizen hears back when their post is not a service request."""

    NONE = "none"  # silence: the post is read, nothing opens, nothing is said
    ACKNOWLEDGE = "acknowledge"  # a polite public thank-you that explains how to report


class RouterSettings(PlazaSettings):
    sla_resolve_hours: float = Field(default=72, gt=0, description="Due time of a normal request")
    sla_resolve_urgent_hours: float = Field(default=24, gt=0, description="Due time if urgent")
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

    def sla(self) -> SlaPolicy:
        return SlaPolicy(
            resolve_normal=timedelta(hours=self.sla_resolve_hours),
            resolve_urgent=timedelta(hours=self.sla_resolve_urgent_hours),
        )
