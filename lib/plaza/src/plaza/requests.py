"""The lifecycle statuses of a service request and how they map onto Open311's open/closed."""

from __future__ import annotations

from typing import Final, Literal

NEW: Final = "new"
ACKNOWLEDGED: Final = "acknowledged"
ASSIGNED: Final = "assigned"
IN_PROGRESS: Final = "in_progress"
RESOLVED: Final = "resolved"
CLOSED: Final = "closed"

TRIAGE_QUEUE: Final = "triage"

OPEN_STATUSES: Final = frozenset({NEW, ACKNOWLEDGED, ASSIGNED, IN_PROGRESS})
CLOSED_STATUSES: Final = frozenset({RESOLVED, CLOSED})


def open311_status(status: str) -> Literal["open", "closed"]:
    """Open311 GeoReport v2 knows only open and closed."""
    return "closed" if status in CLOSED_STATUSES else "open"
