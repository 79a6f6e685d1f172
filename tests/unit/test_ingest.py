"""Ingest: the webhook validates posts (422 problem+json naming the field) and replay reports bad lines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka.errors import NotEnoughReplicasError
from plaza.bus.memory import MemoryBus
from plaza.contracts import TOPICS, decode
from plaza_ingest.app import create_app
from plaza_ingest.replay import replay

GOOD = {
    "platform": "mastodon",
    "post_id": "109",
    "author_handle": "@marta@bcn.social",
    "text": "El fanal del carrer de Verdi no s'encén",
    "lat": 41.4036,
    "long": 2.1566,
    "created_at": "2026-05-04T10:00:00+02:00",
    "media_urls": ["https://files.bcn.social/1.jpg"],
}


async def published(bus: MemoryBus) -> list[str]:
    consumer = await bus.subscribe("probe", [TOPICS.POST_RECEIVED.topic])
    records = await consumer.fetch(100, 0.1)
    await consumer.close()
    return [decode(r.topic, r.value).post_received.post.post_id for r in records]


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus()


@pytest.fixture
async def client(bus: MemoryBus) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(bus)), base_url="http://t"
    )


async def test_a_valid_post_is_accepted_and_published(
    client: httpx.AsyncClient, bus: MemoryBus
) -> None:
    response = await client.post("/api/v1/posts", json=GOOD)
    assert response.status_code == 202
    body = response.json()
    assert body["post_id"] == "109" and body["status"] == "accepted" and body["event_id"]
    consumer = await bus.subscribe("probe", [TOPICS.POST_RECEIVED.topic])
    [record] = await consumer.fetch(10, 0.1)
    assert record.key == "mastodon:109"
    post = decode(record.topic, record.value).post_received.post
    assert (post.latitude, post.longitude, post.channel) == (41.4036, 2.1566, "webhook")
    assert list(post.media_urls) == ["https://files.bcn.social/1.jpg"]
    assert post.created_at.seconds == 1777881600  # 08:00 UTC


async def test_nul_characters_are_dropped_from_a_post(
    client: httpx.AsyncClient, bus: MemoryBus
) -> None:
    """PostgreSQL's text cannot hold \\u0000: a post with one would fail at the router and be
    dead-lettered, so ingest drops them (and a text of NULs alone is no text)."""
    odd = {**GOOD, "text": "El fanal\x00 no s'encén\x00", "address": "Verdi\x00 12"}
    assert (await client.post("/api/v1/posts", json=odd)).status_code == 202
    consumer = await bus.subscribe("probe", [TOPICS.POST_RECEIVED.topic])
    [record] = await consumer.fetch(10, 0.1)
    post = decode(record.topic, record.value).post_received.post
    assert (post.text, post.address) == ("El fanal no s'encén", "Verdi 12")
    empty = await client.post("/api/v1/posts", json={**GOOD, "text": "\x00\x00"})
    assert empty.status_code == 422 and "text" in empty.json()["detail"]


async def test_posting_the_same_post_twice_gives_the_same_event_id(
    client: httpx.AsyncClient,
) -> None:
    a = (await client.post("/api/v1/posts", json=GOOD)).json()
    b = (await client.post("/api/v1/posts", json=GOOD)).json()
    assert a["event_id"] == b["event_id"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"text": ""}, "text"),
        ({"lat": 123.0}, "lat"),
        ({"long": None}, "long: missing: lat and long must be given together"),
        ({"lat": None}, "long: given without lat"),
        ({"platform": "Mastodon!"}, "platform"),
        ({"created_at": "2026-05-04T10:00:00"}, "timezone"),
        ({"colour": "red"}, "colour"),
        ({"post_id": None}, "post_id"),
        ({"media_urls": ["not a url"]}, "media_urls.0"),
    ],
)
async def test_a_malformed_post_gets_a_problem_naming_the_field(
    client: httpx.AsyncClient, bus: MemoryBus, change: dict[str, object], field: str
) -> None:
    post = {**GOOD, **change}
    if change.get("long", 0) is None or change.get("post_id", 0) is None:
        post = {k: v for k, v in post.items() if v is not None}
    response = await client.post("/api/v1/posts", json=post)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["title"] == "Invalid request"
    assert field in problem["detail"]
    assert await published(bus) == []


@pytest.mark.parametrize(
    ("path", "change", "field", "detail"),
    [
        (
            "/api/v1/posts",
            {"created_at": "2026-05-04T10:00:00"},
            "created_at",
            "created_at: must include a timezone, e.g. 2026-05-01T10:00:00Z",
        ),
        ("/api/v1/posts", {"service_code": "lamps"}, "service_code", "service_code: 'lamps'"),
        (
            "/api/v1/posts/withdrawals",
            {"deleted_at": "2026-05-04T10:00:00"},
            "deleted_at",
            "deleted_at: must include a timezone",
        ),
    ],
)
async def test_a_check_of_one_field_names_that_field_not_the_body(
    client: httpx.AsyncClient,
    bus: MemoryBus,
    path: str,
    change: dict[str, object],
    field: str,
    detail: str,
) -> None:
    """A bridge's developer reads `errors[].field` to find the bad field: a created_at without
    a timezone was reported as the body's ("body: created_at must ..."), as was an unknown
    service_code and a withdrawal's deleted_at."""
    base = GOOD if path == "/api/v1/posts" else {"platform": "mastodon", "post_id": "109"}
    base = {**base, "author_handle": "@marta@bcn.social"}
    response = await client.post(path, json={**base, **change})
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == field
    assert response.json()["detail"].startswith(detail)
    assert await published(bus) == []


async def test_a_body_that_is_not_json_is_a_problem_too(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/posts", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"] == "body"  # not "1", where parsing stopped
    assert response.json()["detail"].startswith("body: not valid JSON at character 1")


async def test_the_problems_say_what_is_wrong_in_plain_words(client: httpx.AsyncClient) -> None:
    """A model's own check names its message without pydantic's prefix; NaN is no number."""
    alone = await client.post("/api/v1/posts", json={k: v for k, v in GOOD.items() if k != "long"})
    # named by the field at fault, as every other refusal is (it was "body: ...")
    assert alone.json()["detail"] == "long: missing: lat and long must be given together"
    assert alone.json()["errors"][0]["field"] == "long"
    nan = await client.post(
        "/api/v1/posts",
        content=orjson.dumps({**GOOD, "lat": 0, "long": 0}).replace(b'"lat":0', b'"lat":NaN'),
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422 and nan.json()["detail"] == "lat: Input should be a finite number"


async def test_replay_publishes_good_lines_and_names_the_bad_ones(
    tmp_path: Path, bus: MemoryBus
) -> None:
    lines = [
        json.dumps({**GOOD, "post_id": "1"}),
        "{broken",
        json.dumps({**GOOD, "post_id": "2", "lat": 500}),
        "",
        json.dumps({**GOOD, "post_id": "3"}),
    ]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        report = await replay(bus, path, batch_size=1, progress=False, stderr=stderr)
    assert report.published == 2
    assert [e.split(": ", 1)[0] for e in report.errors] == [f"{path}:2", f"{path}:3"]
    assert "not valid JSON" in report.errors[0] and "lat" in report.errors[1]
    assert f"{path}:2" in errors.read_text()
    assert sorted(await published(bus)) == ["1", "3"]


class _BrokerAway(MemoryBus):
    async def unreachable(self) -> str | None:
        return "the Kafka broker at 127.0.0.1:9092 is not reachable: Connection refused"


async def test_healthz_says_when_the_broker_is_away() -> None:
    """Ingest's /healthz said ok with the broker down, while every post waited and timed out."""
    transport = httpx.ASGITransport(app=create_app(_BrokerAway()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as away:
        response = await away.get("/healthz")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the Kafka broker at 127.0.0.1:9092 is not")
    transport = httpx.ASGITransport(app=create_app(MemoryBus()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as there:
        assert (await there.get("/healthz")).json() == {"status": "ok"}


class _NeverAcknowledged(MemoryBus):
    """A bus whose writes wait forever, as the idempotent acks=all producer's with two of
    three brokers away: it retries too few in-sync replicas, or no leader, for ever."""

    async def publish(self, records: object) -> None:
        await asyncio.Event().wait()


class _Refusing(MemoryBus):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self._error = error

    async def publish(self, records: object) -> None:
        raise self._error


async def test_a_post_the_bus_never_acknowledges_is_a_503_not_a_wait_without_end() -> None:
    """It waited as long as the producer retried (for ever), until the gateway gave up."""
    app = create_app(_NeverAcknowledged(), publish_timeout=0.2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for path, body in (
            ("/api/v1/posts", GOOD),
            (
                "/api/v1/posts/withdrawals",
                {"platform": "mastodon", "post_id": "109", "author_handle": "@marta@bcn.social"},
            ),
        ):
            response = await asyncio.wait_for(c.post(path, json=body), 5)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["retry-after"] == "5"
            assert response.json()["detail"].startswith(
                "the bus did not acknowledge the post within 0.2 s"
            )


async def test_a_post_the_broker_refuses_for_now_is_a_503_and_a_bad_one_a_500() -> None:
    """A retriable broker error (a leader away) answered 500, an unexpected error."""
    refused = create_app(_Refusing(NotEnoughReplicasError()))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=refused), base_url="http://t"
    ) as c:
        response = await c.post("/api/v1/posts", json=GOOD)
    assert response.status_code == 503
    assert response.json()["detail"] == (
        "the bus refused the post (NotEnoughReplicasError); it is not accepted: send it again"
    )
    broken = httpx.ASGITransport(
        app=create_app(_Refusing(ValueError("a bug"))), raise_app_exceptions=False
    )
    async with httpx.AsyncClient(transport=broken, base_url="http://t") as c:
        assert (await c.post("/api/v1/posts", json=GOOD)).status_code == 500
