"""The lifecycle of a service request: its statuses, the actions that move it, and their Open311 names.

    new ──acknowledge──▶ acknowledged ──assign──▶ assigned ──start──▶ in_progress ──resolve──▶ resolved ──close──▶ closed
     │                        │                                                                   │                │
     └── transfer / mark_duplicate / not_responsible (from any status that is still waiting) ────┘◀─── reopen ────┘

`transferred` and `reopened` wait for a manager as `new` does; `duplicate` and `not_responsible`
end the request (and can only be closed). Everything here is pure: no I/O, no framework.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Final, Literal


class Status(StrEnum):
    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"
    DUPLICATE = "duplicate"
    TRANSFERRED = "transferred"
    NOT_RESPONSIBLE = "not_responsible"
    REOPENED = "reopened"


class Action(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    ASSIGN = "assign"
    START = "start"
    RESOLVE = "resolve"
    CLOSE = "close"
    REOPEN = "reopen"
    TRANSFER = "transfer"
    MARK_DUPLICATE = "mark_duplicate"
    NOT_RESPONSIBLE = "not_responsible"


NEW: Final = Status.NEW
TRIAGE_QUEUE: Final = "triage"
CITY_HALL_QUEUE: Final = "city-hall"

# Statuses in which nobody has taken the request on yet: the acknowledgement clock runs.
WAITING: Final = frozenset({Status.NEW, Status.TRANSFERRED, Status.REOPENED})
OPEN_STATUSES: Final = frozenset(
    {*WAITING, Status.ACKNOWLEDGED, Status.ASSIGNED, Status.IN_PROGRESS}
)
CLOSED_STATUSES: Final = frozenset(Status) - OPEN_STATUSES


def sql_list(statuses: Iterable[str]) -> str:
    """Statuses as SQL literals for `status IN (...)` (only ever Status values: anything else
    raises ValueError), in one order: literal, so that the planner proves a partial index's
    predicate (open requests, those waiting) whatever a reused plan's parameters."""
    return ", ".join(f"'{Status(v).value}'" for v in sorted(statuses))


_TRANSITIONS: Final[Mapping[Action, tuple[frozenset[Status], Status]]] = {
    Action.ACKNOWLEDGE: (WAITING, Status.ACKNOWLEDGED),
    Action.ASSIGN: (
        WAITING | {Status.ACKNOWLEDGED, Status.ASSIGNED, Status.IN_PROGRESS},
        Status.ASSIGNED,
    ),
    Action.START: (frozenset({Status.ASSIGNED}), Status.IN_PROGRESS),
    Action.RESOLVE: (
        frozenset({Status.ACKNOWLEDGED, Status.ASSIGNED, Status.IN_PROGRESS}),
        Status.RESOLVED,
    ),
    Action.CLOSE: (
        frozenset({Status.RESOLVED, Status.DUPLICATE, Status.NOT_RESPONSIBLE}),
        Status.CLOSED,
    ),
    Action.REOPEN: (frozenset({Status.RESOLVED, Status.CLOSED}), Status.REOPENED),
    Action.TRANSFER: (WAITING | {Status.ACKNOWLEDGED, Status.ASSIGNED}, Status.TRANSFERRED),
    Action.MARK_DUPLICATE: (WAITING | {Status.ACKNOWLEDGED}, Status.DUPLICATE),
    Action.NOT_RESPONSIBLE: (WAITING | {Status.ACKNOWLEDGED}, Status.NOT_RESPONSIBLE),
}


class InvalidTransition(Exception):
    """An action that the request's status does not allow; says which actions it does allow."""

    def __init__(self, status: Status, action: Action) -> None:
        self.status = status
        self.action = action
        self.allowed = allowed_actions(status)
        allowed = ", ".join(self.allowed) or "none"
        super().__init__(f"cannot {action} a request that is {status}; allowed: {allowed}")


def allowed_actions(status: Status) -> list[Action]:
    return [action for action, (sources, _) in _TRANSITIONS.items() if status in sources]


def next_status(status: Status, action: Action) -> Status:
    """The status after `action`, or InvalidTransition."""
    sources, target = _TRANSITIONS[action]
    if status not in sources:
        raise InvalidTransition(status, action)
    return target


def open311_status(status: str) -> Literal["open", "closed"]:
    """Open311 GeoReport v2 knows only open and closed."""
    return "open" if status in OPEN_STATUSES else "closed"


# FixMyStreet's extended Open311 statuses, which third-party Open311 clients understand.
_EXTENDED: Final[Mapping[Status, str]] = {
    Status.NEW: "OPEN",
    Status.ACKNOWLEDGED: "INVESTIGATING",
    Status.ASSIGNED: "ACTION_SCHEDULED",
    Status.IN_PROGRESS: "IN_PROGRESS",
    Status.RESOLVED: "FIXED",
    Status.CLOSED: "CLOSED",
    Status.DUPLICATE: "DUPLICATE",
    Status.TRANSFERRED: "INTERNAL_REFERRAL",
    Status.NOT_RESPONSIBLE: "NOT_COUNCILS_RESPONSIBILITY",
    Status.REOPENED: "OPEN",
}


def extended_status(status: str) -> str:
    return _EXTENDED[Status(status)]


ID_MAX: Final = 2**63 - 1  # ids are PostgreSQL bigints


def parse_id(text: str) -> int | None:
    """A request's (or an event's) id as a client wrote it, or None when it cannot name one:
    not ASCII digits (str.isdigit takes "²", which int refuses) or past a bigint."""
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= ID_MAX else None


# A worker's public handle as the platforms write them: @jordi (X), @jordi@bcn.social (Mastodon),
# @jordi.bsky.social (Bluesky).
_HANDLE: Final = re.compile(r"@[A-Za-z0-9_][A-Za-z0-9_.-]*(@[A-Za-z0-9.-]+\.[A-Za-z]{2,})?")


def worker_handle(text: str) -> str:
    """A worker's handle as it is stored and matched: the @ added when it was left out ("jordi"
    is "@jordi"), so that the worker's own key finds what was assigned to them. ValueError
    for what is no handle (spaces, other characters)."""
    handle = text.strip()
    if handle and not handle.startswith("@"):
        handle = "@" + handle
    if not _HANDLE.fullmatch(handle):
        raise ValueError(
            f"{text!r} is not a public handle such as @jordi, @jordi@bcn.social or "
            "@jordi.bsky.social"
        )
    return handle


def reporter_of(platform: str, author_id: str, author_handle: str) -> str:
    """Who reported, as reports are counted and matched (one person's ten posts are one
    reporter; only a request's reporter reopens it by answering): the platform's stable id of
    the account (a Bluesky DID, a Mastodon or X account id) where the channel gives one, for a
    handle changes hands and names; else the handle, in lower case as platforms compare them."""
    who = author_id.strip() or author_handle.strip().lower()
    return f"{platform}:{who}"
