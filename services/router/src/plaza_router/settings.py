"""The router's settings (PLAZA_* environment variables)."""

from __future__ import annotations

from datetime import timedelta

from plaza.settings import PlazaSettings
from pydantic import Field

from plaza_router.sla import SlaPolicy


class RouterSettings(PlazaSettings):
    sla_resolve_hours: float = Field(default=72, gt=0, description="Due time of a normal request")
    sla_resolve_urgent_hours: float = Field(default=24, gt=0, description="Due time if urgent")

    def sla(self) -> SlaPolicy:
        return SlaPolicy(
            resolve_normal=timedelta(hours=self.sla_resolve_hours),
            resolve_urgent=timedelta(hours=self.sla_resolve_urgent_hours),
        )
