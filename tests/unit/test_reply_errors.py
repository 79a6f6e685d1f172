"""What a platform's answer means for a reply: when to wait, when to try again, when to give up."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from plaza.social import MastodonAccount
from plaza_notifier.channels import ChannelReply, RateBudget, Refused
from plaza_notifier.mastodon import MastodonChannel
from plaza_notifier.x import _reset_at
from pydantic import SecretStr

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


@pytest.mark.parametrize(
    "post_id", ["../accounts/verify_credentials", "1?exclude_replies=1", "1/../../2", "1%2F.."]
)
async def test_a_mastodon_post_id_that_is_no_status_id_is_refused_before_any_call(
    post_id: str,
) -> None:
    """A bridge chooses the post's id, which went into a path of the city's instance as it
    was: a GET of another endpoint (httpx resolves the dots), with the city's token."""
    asked: list[str] = []

    def instance(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json={"id": "9", "visibility": "public", "descendants": []})

    account = MastodonAccount(
        base_url="https://bcn.social", streaming_url="wss://bcn.social", token=SecretStr("t")
    )
    reply = ChannelReply("r1", post_id, "@marta", "Rebut!", "ca", None)
    async with httpx.AsyncClient(transport=httpx.MockTransport(instance)) as http:
        channel = MastodonChannel(account, http)
        with pytest.raises(Refused, match="is not a Mastodon status id"):
            await channel.post(reply)
        with pytest.raises(Refused, match="is not a Mastodon status id"):
            await channel.find(reply)
    assert asked == []
