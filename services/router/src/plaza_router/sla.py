"""Due dates: how long the city has to resolve a request, by urgency."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from plaza.contracts import Urgency


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    resolve_normal: timedelta = timedelta(hours=72)
    resolve_urgent: timedelta = timedelta(hours=24)

    def due(self, requested_at: datetime, urgency: Urgency.ValueType) -> datetime:
        window = self.resolve_urgent if urgency == Urgency.URGENCY_URGENT else self.resolve_normal
        return requested_at + window
