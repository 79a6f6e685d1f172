"""What a platform's answer means for a reply: when to wait, when to try again, when to give up."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from plaza_notifier.channels import RateBudget, Refused
from plaza_notifier.x import _reset_at

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def budget() -> RateBudget:
    return RateBudget(
        "x",
        remaining_header="x-rate-limit-remaining",
        reset_at=lambda response, now: _reset_at(response),
        detail=lambda response: response.text,
        now=lambda: NOW,
    )


def answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("POST", "https://x"))


def test_an_expired_token_is_tried_again_not_given_up_on() -> None:
    """X's user token lives two hours and is read again from its file: a reply that meets the
    gap is retried, where every reply meanwhile used to be dead-lettered."""
    with pytest.raises(httpx.HTTPStatusError):
        budget().check(answer(401), "POST /2/tweets")
    with pytest.raises(Refused):
        budget().check(answer(403), "POST /2/tweets")


def test_a_spent_daily_cap_pauses_until_its_own_reset() -> None:
    """A 429 for the day's cap carries its reset beside the 15-minute window's: the later one
    counts, or the notifier would wake to a 429 every 15 minutes all day."""
    window, day = int(NOW.timestamp()) + 900, int(NOW.timestamp()) + 20 * 3600
    limited = answer(
        429, **{"x-rate-limit-reset": str(window), "x-user-limit-24hour-reset": str(day)}
    )
    assert _reset_at(limited) == datetime.fromtimestamp(day, UTC)
    assert _reset_at(answer(429, **{"x-rate-limit-reset": str(window)})) == datetime.fromtimestamp(
        window, UTC
    )
    assert _reset_at(answer(429, **{"x-rate-limit-reset": "soon"})) is None
