"""The request state machine: every action from every status, allowed or refused."""

from __future__ import annotations

import itertools

import pytest
from plaza.requests import (
    CLOSED_STATUSES,
    ID_MAX,
    OPEN_STATUSES,
    Action,
    InvalidTransition,
    Status,
    allowed_actions,
    extended_status,
    next_status,
    open311_status,
    parse_id,
    worker_handle,
)

S, A = Status, Action

# The whole table, written out by hand from the issue: (from, action) -> to. Anything missing
# must be refused.
EXPECTED: dict[tuple[Status, Action], Status] = {
    (S.NEW, A.ACKNOWLEDGE): S.ACKNOWLEDGED,
    (S.TRANSFERRED, A.ACKNOWLEDGE): S.ACKNOWLEDGED,
    (S.REOPENED, A.ACKNOWLEDGE): S.ACKNOWLEDGED,
    (S.NEW, A.ASSIGN): S.ASSIGNED,
    (S.TRANSFERRED, A.ASSIGN): S.ASSIGNED,
    (S.REOPENED, A.ASSIGN): S.ASSIGNED,
    (S.ACKNOWLEDGED, A.ASSIGN): S.ASSIGNED,
    (S.ASSIGNED, A.ASSIGN): S.ASSIGNED,
    (S.IN_PROGRESS, A.ASSIGN): S.ASSIGNED,
    (S.ASSIGNED, A.START): S.IN_PROGRESS,
    (S.ACKNOWLEDGED, A.RESOLVE): S.RESOLVED,
    (S.ASSIGNED, A.RESOLVE): S.RESOLVED,
    (S.IN_PROGRESS, A.RESOLVE): S.RESOLVED,
    (S.RESOLVED, A.CLOSE): S.CLOSED,
    (S.DUPLICATE, A.CLOSE): S.CLOSED,
    (S.NOT_RESPONSIBLE, A.CLOSE): S.CLOSED,
    (S.RESOLVED, A.REOPEN): S.REOPENED,
    (S.CLOSED, A.REOPEN): S.REOPENED,
    (S.NEW, A.TRANSFER): S.TRANSFERRED,
    (S.TRANSFERRED, A.TRANSFER): S.TRANSFERRED,
    (S.REOPENED, A.TRANSFER): S.TRANSFERRED,
    (S.ACKNOWLEDGED, A.TRANSFER): S.TRANSFERRED,
    (S.ASSIGNED, A.TRANSFER): S.TRANSFERRED,
    (S.NEW, A.MARK_DUPLICATE): S.DUPLICATE,
    (S.TRANSFERRED, A.MARK_DUPLICATE): S.DUPLICATE,
    (S.REOPENED, A.MARK_DUPLICATE): S.DUPLICATE,
    (S.ACKNOWLEDGED, A.MARK_DUPLICATE): S.DUPLICATE,
    (S.NEW, A.NOT_RESPONSIBLE): S.NOT_RESPONSIBLE,
    (S.TRANSFERRED, A.NOT_RESPONSIBLE): S.NOT_RESPONSIBLE,
    (S.REOPENED, A.NOT_RESPONSIBLE): S.NOT_RESPONSIBLE,
    (S.ACKNOWLEDGED, A.NOT_RESPONSIBLE): S.NOT_RESPONSIBLE,
}

ALL = list(itertools.product(Status, Action))


@pytest.mark.parametrize(("status", "action"), [k for k in ALL if k in EXPECTED])
def test_allowed_transition(status: Status, action: Action) -> None:
    assert next_status(status, action) is EXPECTED[(status, action)]
    assert action in allowed_actions(status)


@pytest.mark.parametrize(("status", "action"), [k for k in ALL if k not in EXPECTED])
def test_refused_transition_says_what_is_allowed(status: Status, action: Action) -> None:
    with pytest.raises(InvalidTransition) as refused:
        next_status(status, action)
    allowed = sorted(a for (s, a) in EXPECTED if s is status)
    assert sorted(refused.value.allowed) == allowed
    assert f"cannot {action} a request that is {status}" in str(refused.value)


def test_every_status_is_open_or_closed_for_open311_and_has_an_extended_name() -> None:
    assert set(Status) == OPEN_STATUSES | CLOSED_STATUSES
    assert not OPEN_STATUSES & CLOSED_STATUSES
    assert {open311_status(s) for s in OPEN_STATUSES} == {"open"}
    assert {open311_status(s) for s in CLOSED_STATUSES} == {"closed"}
    assert extended_status("resolved") == "FIXED"
    assert extended_status("transferred") == "INTERNAL_REFERRAL"
    assert extended_status("not_responsible") == "NOT_COUNCILS_RESPONSIBILITY"
    assert all(extended_status(s) for s in Status)


def test_closed_requests_can_only_be_reopened() -> None:
    assert allowed_actions(Status.CLOSED) == [Action.REOPEN]


def test_an_id_is_ascii_digits_within_a_bigint() -> None:
    assert parse_id("0") == 0 and parse_id("77") == 77 and parse_id(str(ID_MAX)) == ID_MAX
    # "²" and "٣" are digits to str.isdigit; int() refuses the first, reads the second as 3
    for text in ("", "abc", "-1", "+1", " 7", "1.0", "²", "٣", "１", str(ID_MAX + 1)):
        assert parse_id(text) is None, text


def test_a_worker_handle_is_a_public_handle_with_its_at() -> None:
    for given, stored in (
        ("@jordi", "@jordi"),
        ("jordi", "@jordi"),
        (" jordi_99 ", "@jordi_99"),
        ("@jordi@bcn.social", "@jordi@bcn.social"),
        ("jordi@bcn.social", "@jordi@bcn.social"),
        ("@jordi.bsky.social", "@jordi.bsky.social"),
    ):
        assert worker_handle(given) == stored, given
    for bad in ("", "@", "jordi garcia", "@jordi@", "@jordi@localhost", "jo/rdi", "@@jordi"):
        with pytest.raises(ValueError, match="not a public handle"):
            worker_handle(bad)
