"""End to end on real Kafka and PostgreSQL: five service processes, driven the way a user does.

A bridge posts through the gateway; a manager reads the district queue through the API and sees
the request with its public reply; a civic developer reads it through Open311.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from plaza.bus import OutRecord
from plaza.bus.kafka import KafkaBus
from plaza.contracts import TOPICS
from plaza.db import create_engine, session_factory
from plaza_api.auth import Role, create_api_key

from tests.conftest import TEMPLATE_DB, Postgres
from tests.infra import KafkaBroker, free_port
from tests.integration.test_bus_contract import drain
from tests.processes import ServiceProcess, base_env, wait_http


@dataclass
class Stack:
    api: str
    bus: KafkaBus
    services: dict[str, ServiceProcess]
    headers: dict[str, str]  # an admin key's: it may post (as a bridge) and read every queue

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log()[-2000:]}" for n, p in self.services.items())


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="module")
async def stack(kafka: KafkaBroker, postgres: Postgres, stack_dir: Path) -> AsyncIterator[Stack]:
    database = f"e2e_{uuid.uuid4().hex[:8]}"
    await postgres.execute(f'CREATE DATABASE "{database}" TEMPLATE "{TEMPLATE_DB}"')
    engine = create_engine(postgres.url(database))
    async with session_factory(engine).begin() as session:
        _, admin_key = await create_api_key(session, name="e2e-admin", role=Role.ADMIN)
    await engine.dispose()
    namespace = f"e2e{uuid.uuid4().hex[:8]}."
    bus = KafkaBus(kafka.bootstrap, namespace=namespace)
    await bus.start()
    await bus.create_topics(
        [t.topic for t in TOPICS.all()] + [t.dead_letter_topic for t in TOPICS.all()], 3
    )
    env = base_env(kafka.bootstrap, namespace, postgres.url(database))
    ingest_port, api_port = free_port(), free_port()
    services = {
        "ingest": ServiceProcess(
            "ingest", {**env, "PLAZA_INGEST_PORT": str(ingest_port)}, stack_dir
        ),
        "classifier": ServiceProcess("classifier", env, stack_dir),
        "router": ServiceProcess("router", env, stack_dir),
        "relay": ServiceProcess("relay", env, stack_dir, module="plaza_router.relay"),
        "notifier": ServiceProcess("notifier", env, stack_dir),
        "api": ServiceProcess(
            "api",
            {
                **env,
                "PLAZA_PORT": str(api_port),
                "PLAZA_INGEST_URL": f"http://127.0.0.1:{ingest_port}",
                "PLAZA_JWT_SECRET": secrets.token_urlsafe(48),
            },
            stack_dir,
        ),
    }
    for proc in services.values():
        proc.start()
    try:
        wait_http(f"http://127.0.0.1:{ingest_port}/healthz", proc=services["ingest"])
        wait_http(f"http://127.0.0.1:{api_port}/healthz", proc=services["api"])
        yield Stack(
            f"http://127.0.0.1:{api_port}",
            bus,
            services,
            {"Authorization": f"Bearer {admin_key}"},
        )
        codes = {name: proc.stop() for name, proc in services.items()}
        assert all(code == 0 for code in codes.values()), f"unclean shutdown {codes}"
    finally:
        for proc in services.values():
            if proc.alive():
                proc.kill()
        await bus.close()


async def wait_in_queue(
    client: httpx.AsyncClient, stack: Stack, queue: str, post_id: str
) -> dict[str, object]:
    for _ in range(300):
        response = await client.get(f"/api/v1/districts/{queue}/queue")
        assert response.status_code == 200, response.text
        for item in response.json()["items"]:
            if item["source_post_id"] == post_id:
                return dict(item)
        await asyncio.sleep(0.1)
    raise AssertionError(f"post {post_id} never reached queue {queue}\n{stack.logs()}")


async def wait_for_reply(
    client: httpx.AsyncClient, stack: Stack, request_id: str
) -> dict[str, object]:
    for _ in range(300):
        detail = (await client.get(f"/api/v1/requests/{request_id}")).json()
        if detail["replies"]:
            return dict(detail)
        await asyncio.sleep(0.1)
    raise AssertionError(f"request {request_id} got no reply\n{stack.logs()}")


def post(post_id: str, text: str, **extra: object) -> dict[str, object]:
    return {
        "platform": "mastodon",
        "post_id": post_id,
        "author_handle": "@vei@bcn.social",
        "text": text,
        **extra,
    }


@pytest.mark.parametrize(
    ("body", "queue", "district_reply"),
    [
        (
            post(
                "geo-1",
                "El fanal del carrer de Verdi no funciona des de fa tres nits",
                lat=41.4036,
                long=2.1566,
            ),
            "06",
            "Rebut! Petició #{id}, districte de Gràcia.",
        ),
        (
            post(
                "text-1",
                "Hay un bache enorme en la calzada de la Rambla del Poblenou, es peligroso",
            ),
            "10",
            "¡Recibido! Petición #{id}, distrito de Sant Martí.",
        ),
        (
            post(
                "none-1",
                "The bins on my street have not been emptied for a week, please send someone",
            ),
            "triage",
            "Received! Request #{id}. We are passing it to the right district.",
        ),
    ],
)
async def test_a_post_reaches_its_district_queue_with_its_reply_recorded(
    stack: Stack, body: dict[str, object], queue: str, district_reply: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.api, timeout=10, headers=stack.headers) as client:
        accepted = await client.post("/api/v1/posts", json=body)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["post_id"] == body["post_id"]

        item = await wait_in_queue(client, stack, queue, str(body["post_id"]))
        request_id = str(item["service_request_id"])
        assert item["status"] == "new" and item["open311_status"] == "open"
        assert item["expected_datetime"]

        detail = await wait_for_reply(client, stack, request_id)
        [reply] = detail["replies"]  # type: ignore[misc]
        assert reply["text"].startswith(district_reply.format(id=request_id))  # then the due time
        assert reply["channel"] == "log"

        [open311] = (await client.get(f"/open311/v2/requests/{request_id}.json")).json()
        assert open311["service_request_id"] == request_id
        assert open311["status"] == "open"
        assert open311["requested_datetime"].endswith("+00:00")
        agencies = {"06": "Districte de Gràcia", "10": "Districte de Sant Martí"}
        assert open311["agency_responsible"] == agencies.get(queue, "Ajuntament de Barcelona")
        listed = (
            await client.get("/open311/v2/requests.json", params={"service_request_id": request_id})
        ).json()
        assert [r["service_request_id"] for r in listed] == [request_id]


async def test_a_malformed_post_is_refused_at_the_gateway(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api, timeout=10) as anonymous:
        refused = await anonymous.post("/api/v1/posts", json=post("anon-1", "Un fanal apagat"))
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
    async with httpx.AsyncClient(base_url=stack.api, timeout=10, headers=stack.headers) as client:
        response = await client.post("/api/v1/posts", json=post("bad-1", "x", lat=41.4))
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert "lat and long" in response.json()["detail"]
        missing = await client.get("/open311/v2/requests/999999.json")
        assert missing.status_code == 404
        assert missing.json() == [{"code": 404, "description": "no service request '999999'"}]
        unknown = await client.get("/api/v1/districts/99/queue")
        assert (
            unknown.status_code == 404
            and unknown.headers["content-type"] == "application/problem+json"
        )


async def test_a_poison_message_is_dead_lettered_and_the_pipeline_carries_on(stack: Stack) -> None:
    await stack.bus.publish(
        [OutRecord(TOPICS.POST_RECEIVED.topic, "mastodon:poison", b"\x08\x96\x01garbage")]
    )
    async with httpx.AsyncClient(base_url=stack.api, timeout=10, headers=stack.headers) as client:
        accepted = await client.post(
            "/api/v1/posts",
            json=post("after-poison", "Pintades a la façana de l'escola del carrer de Sants"),
        )
        assert accepted.status_code == 202
        await wait_in_queue(client, stack, "03", "after-poison")
    reader = await stack.bus.subscribe("e2e-dlq-reader", [TOPICS.POST_RECEIVED.dead_letter_topic])
    [dead] = await drain(reader, 1)
    assert dead.key == "mastodon:poison"
    assert (dead.header("plaza-dlq-group") or b"") == b"plaza-classifier"
    assert (dead.header("plaza-dlq-reason-class") or b"") == b"contract"
    await reader.close()
