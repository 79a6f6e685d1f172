"""Deleted posts, as each platform says it, become post-withdrawn events: Bluesky's delete
commits, Mastodon's streamed `delete` (whose payload is a bare id), a bridge's webhook call; the
runner hands on the deletions of Plaza's posts only, and only a post's author withdraws it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import plaza_ingest.connectors.mastodon as mastodon
import plaza_ingest.connectors.runner as runner_module
import pytest
from plaza import metrics
from plaza.bus.memory import MemoryBus
from plaza.contracts import TOPICS, ContractError, Envelope, PostWithdrawn, decode, envelope
from plaza.db.models import RequestReport
from plaza.posts import PostIn
from plaza.social import MastodonAccount
from plaza.withdrawals import Withdrawal, by_its_author
from plaza_ingest.app import create_app
from plaza_ingest.connectors.base import Batch, Deletion
from plaza_ingest.connectors.bluesky import event_to_deletion
from plaza_ingest.connectors.runner import ConnectorRunner
from prometheus_client import REGISTRY
from pydantic import SecretStr

from tests.unit.test_mastodon_stream_order import Socket, mention

MARTA = "did:plc:marta2222222222222222222"
POST = "app.bsky.feed.post"


async def withdrawn_events(bus: MemoryBus) -> list[Envelope]:
    consumer = await bus.subscribe("probe", [TOPICS.POST_WITHDRAWN.topic])
    records = await consumer.fetch(100, 0.1)
    await consumer.close()
    return [decode(r.topic, r.value) for r in records]


# --- Bluesky ---------------------------------------------------------------------------------


def test_a_bluesky_delete_commit_is_its_authors_deletion_of_the_post() -> None:
    event = {
        "did": MARTA,
        "time_us": 1_780_000_000_000_000,
        "kind": "commit",
        "commit": {"rev": "r", "operation": "delete", "collection": POST, "rkey": "3kabc"},
    }
    deletion = event_to_deletion(event)
    assert deletion is not None
    assert deletion.platform == "bluesky"
    assert deletion.post_id == f"at://{MARTA}/{POST}/3kabc"  # the post's id in Plaza
    assert deletion.author_id == MARTA  # a repo's records are deleted by its account only
    assert deletion.deleted_at == datetime.fromtimestamp(1_780_000_000, UTC)


@pytest.mark.parametrize(
    "change",
    [
        {"commit": {"operation": "create", "collection": POST, "rkey": "3kabc"}},
        {"commit": {"operation": "delete", "collection": "app.bsky.feed.like", "rkey": "3k"}},
        {"kind": "identity"},
        {"did": "not a did"},
    ],
)
def test_other_jetstream_events_are_no_deletion(change: dict[str, Any]) -> None:
    event = {
        "did": MARTA,
        "time_us": 1,
        "kind": "commit",
        "commit": {"operation": "delete", "collection": POST, "rkey": "3kabc"},
        **change,
    }
    assert event_to_deletion(event) is None


# --- Mastodon --------------------------------------------------------------------------------


async def test_a_streamed_mastodon_delete_is_a_deletion_and_the_stream_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GoToSocial's ids are ULIDs: the bare id in `payload` is no JSON value, and decoding it as
    # the other events' payloads ended the connection (a reconnect, the same delete again...).
    frames = [
        json.dumps({"event": "delete", "payload": "01HZX3K4Q9ZP4V2N8T6R5M1C0B"}),
        json.dumps({"event": "delete", "payload": "109347502933145278"}),
        json.dumps(
            {"event": "notification", "payload": json.dumps(mention("102", "202", "Fanal"))}
        ),
    ]
    monkeypatch.setattr(mastodon, "connect", lambda *args, **kwargs: Socket(frames))

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("verify_credentials"):
            return httpx.Response(200, json={"id": "1"})
        return httpx.Response(200, json=[])

    account = MastodonAccount(base_url="http://x", streaming_url="ws://x", token=SecretStr("t"))
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        stream = mastodon.MastodonStream(account, mastodon.Source.MENTIONS, http)
        batches = [b async for b in stream.batches("100")]
    deletions = [d for b in batches for d in b.deletions]
    assert [(d.platform, d.post_id) for d in deletions] == [
        ("mastodon", "01HZX3K4Q9ZP4V2N8T6R5M1C0B"),
        ("mastodon", "109347502933145278"),
    ]
    assert all(d.author_id == "" for d in deletions)  # Mastodon says only the status id
    assert [p.post_id for b in batches for p in b.posts] == ["202"]  # and then the mention


# --- the runner ------------------------------------------------------------------------------


class _Session:
    """Takes the runner's record of the posts it publishes (published_posts), and does nothing."""

    async def execute(self, *args: object, **kwargs: object) -> None:
        return None


class _Sessions:
    """Stands in for the session factory: the runner hands a session to known_among, and
    records the posts it publishes in another."""

    def __call__(self) -> contextlib.AbstractAsyncContextManager[_Session]:
        @contextlib.asynccontextmanager
        async def session() -> AsyncIterator[_Session]:
            yield _Session()

        return session()

    begin = __call__


class _Connector:
    name = "bluesky:test"
    platform = "bluesky"

    def __init__(self, batches: Sequence[Batch]) -> None:
        self._batches = batches

    async def batches(self, cursor: str | None) -> AsyncIterator[Batch]:
        for batch in self._batches:
            yield batch


def _post(post_id: str) -> PostIn:
    return PostIn(platform="bluesky", post_id=post_id, author_handle="@marta.test", text="Fanal")


async def test_the_runner_hands_on_the_deletions_of_plazas_posts_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[set[str]] = []

    async def known_among(session: object, platform: str, ids: Collection[str]) -> set[str]:
        asked.append(set(ids))
        return {i for i in ids if i == "at://routed-last-week"}  # in Plaza's records

    monkeypatch.setattr(runner_module, "known_among", known_among)
    bus = MemoryBus()
    at = datetime(2026, 11, 27, 10, tzinfo=UTC)
    batches = [
        Batch([_post("at://published-now")], "1"),
        Batch(
            [],
            "2",
            [
                Deletion("bluesky", "at://published-now", MARTA, at),
                Deletion("bluesky", "at://routed-last-week", MARTA, at),
                Deletion("bluesky", "at://somebody-elses", "did:plc:other", at),
            ],
        ),
    ]
    runner = ConnectorRunner(_Connector(batches), bus, _Sessions())  # type: ignore[arg-type]
    for batch in batches:
        await runner._publish(batch)

    events = await withdrawn_events(bus)
    assert sorted(e.post_withdrawn.post_id for e in events) == [
        "at://published-now",
        "at://routed-last-week",
    ]
    # The post published in this run is known without asking the database.
    assert asked == [{"at://routed-last-week", "at://somebody-elses"}]
    first = next(e for e in events if e.post_withdrawn.post_id == "at://published-now")
    assert first.post_withdrawn.author_id == MARTA
    assert first.post_withdrawn.channel == "stream"
    assert first.post_withdrawn.withdrawn_at.seconds == int(at.timestamp())


# --- the webhook -----------------------------------------------------------------------------


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus()


@pytest.fixture
async def client(bus: MemoryBus) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(bus)), base_url="http://t"
    )


async def test_a_bridge_withdraws_a_post_by_its_id_and_author(
    client: httpx.AsyncClient, bus: MemoryBus
) -> None:
    body = {"platform": "mastodon", "post_id": "109", "author_id": "42"}
    first = await client.post("/api/v1/posts/withdrawals", json=body)
    again = await client.post("/api/v1/posts/withdrawals", json=body)
    assert first.status_code == again.status_code == 202
    # The same deletion twice is one event: the router's inbox recognises the second.
    assert first.json()["event_id"] == again.json()["event_id"]
    # Somebody else's attempt (which the router refuses) is no redelivery of the author's.
    other = await client.post("/api/v1/posts/withdrawals", json={**body, "author_id": "43"})
    assert other.json()["event_id"] != first.json()["event_id"]
    [event, _, _] = await withdrawn_events(bus)
    w = event.post_withdrawn
    assert (w.platform, w.post_id, w.author_id, w.channel) == ("mastodon", "109", "42", "webhook")


async def test_a_bridge_withdraws_a_posts_location_only_as_an_event_of_its_own(
    client: httpx.AsyncClient, bus: MemoryBus
) -> None:
    body = {"platform": "mastodon", "post_id": "110", "author_id": "42"}
    located = await client.post("/api/v1/posts/withdrawals", json={**body, "location_only": True})
    whole = await client.post("/api/v1/posts/withdrawals", json=body)
    assert located.status_code == whole.status_code == 202
    # The post's deletion after its location's is no redelivery of it.
    assert located.json()["event_id"] != whole.json()["event_id"]
    first, second = await withdrawn_events(bus)
    assert (first.post_withdrawn.location_only, second.post_withdrawn.location_only) == (
        True,
        False,
    )
    refused = await client.post(
        "/api/v1/posts/withdrawals", json={**body, "location_only": "maybe"}
    )
    assert refused.status_code == 422 and "location_only" in refused.text


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"platform": "mastodon", "post_id": "109"}, "author_id or author_handle is required"),
        ({"platform": "mastodon", "author_id": "42"}, "post_id"),
        ({"platform": "open311", "post_id": "t", "author_id": "42"}, "open311"),
        (
            {"platform": "mastodon", "post_id": "1", "author_id": "4", "deleted_at": "2026-05-01"},
            "timezone",
        ),
    ],
)
async def test_a_withdrawal_without_what_it_needs_is_a_problem_naming_it(
    client: httpx.AsyncClient, bus: MemoryBus, body: dict[str, str], says: str
) -> None:
    response = await client.post("/api/v1/posts/withdrawals", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert says in response.text
    assert await withdrawn_events(bus) == []


# --- the contract and the author -------------------------------------------------------------


def test_post_withdrawn_has_its_own_topic_keyed_by_the_post() -> None:
    out = envelope(
        PostWithdrawn(platform="bluesky", post_id="at://x"),
        key="bluesky:at://x",
        event_id="e1",
        correlation_id="e1",
    )
    assert out.topic == "plaza.post-withdrawn.v1"
    assert decode(out.topic, out.encode()).post_withdrawn.post_id == "at://x"
    with pytest.raises(ContractError):
        decode(TOPICS.POST_RECEIVED.topic, out.encode())


def _report(reporter: str, handle: str) -> RequestReport:
    return RequestReport(platform="mastodon", post_id="1", reporter=reporter, author_handle=handle)


def _withdrawal(author_id: str = "", author_handle: str = "") -> Withdrawal:
    return Withdrawal("mastodon", "1", author_id, author_handle, datetime.now(UTC))


def test_only_the_posts_author_withdraws_it() -> None:
    by_id = _report("mastodon:42", "@marta@bcn.social")
    assert by_its_author(_withdrawal("42"), by_id)
    assert not by_its_author(_withdrawal("43"), by_id)
    # A handle does not stand for an account known by its id: handles change hands.
    assert not by_its_author(_withdrawal(author_handle="@marta@bcn.social"), by_id)
    by_handle = _report("mastodon:@marta@bcn.social", "@Marta@bcn.social")
    assert by_its_author(_withdrawal(author_handle="@MARTA@bcn.social"), by_handle)
    assert not by_its_author(_withdrawal(author_handle="@jordi@bcn.social"), by_handle)
    # Neither: the platform's own stream says the post is gone (Mastodon's delete).
    assert by_its_author(_withdrawal(), by_id)


def test_whoever_applies_withdrawals_counts_them_from_zero() -> None:
    metrics.start_at_zero(consumers={"plaza-router-withdrawals": [TOPICS.POST_WITHDRAWN]})
    for platform in ("bluesky", "mastodon"):
        labels = {"platform": platform}
        assert REGISTRY.get_sample_value("plaza_posts_withdrawn_total", labels) is not None
