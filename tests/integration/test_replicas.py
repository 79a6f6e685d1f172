"""Plaza on a three-broker Kafka cluster (three JVMs, KRaft combined mode, one quorum of three):
its topics really are on three brokers with min.insync.replicas=2, an accepted post survives a
broker's SIGKILL mid-stream and is routed exactly once, and with two brokers away a post is
refused (503), never accepted silently.

The cluster is this module's own (tests.infra.start_kafka_cluster); every wait is on the
cluster's metadata (leaders, in-sync replicas), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.errors import KafkaError, RequestTimedOutError
from plaza.bus.kafka import GroupLag, KafkaBus
from plaza.contracts import TOPICS
from plaza.db.models import RequestReport, ServiceRequest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import KafkaCluster, KafkaNode, free_port, start_kafka_cluster
from tests.processes import ServiceProcess, base_env, wait_http

PLAZA_TOPICS = [t.topic for t in TOPICS.all()] + [t.dead_letter_topic for t in TOPICS.all()]
POSTS = 150
TEXT = "El fanal del carrer de Verdi número {n} no funciona des de fa tres nits"

Partitions = dict[tuple[str, int], tuple[int, list[int]]]  # (topic, partition) -> leader, ISR


@pytest.fixture(scope="module")
def kafka_cluster() -> Iterator[KafkaCluster]:
    data = Path(tempfile.mkdtemp(prefix="plaza-test-kafka-cluster-"))
    started = time.monotonic()
    try:
        for cluster in start_kafka_cluster(data):
            print(f"\n3-broker cluster up in {time.monotonic() - started:.1f} s")
            yield cluster
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def partitions(cluster: KafkaCluster, topics: list[str]) -> Partitions:
    """Each partition's leader and in-sync replicas as the cluster says now ({} while it cannot
    say: a node away may be the one asked)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        described = await admin.describe_topics(topics)
    except KafkaError:
        return {}
    finally:
        await admin.close()
    if any(d["error_code"] for d in described):
        return {}
    return {
        (d["topic"], p["partition"]): (p["leader"], sorted(p["isr"]))
        for d in described
        for p in d["partitions"]
    }


async def wait_for_isr(
    cluster: KafkaCluster, topics: list[str], alive: set[int], timeout: float = 60
) -> float:
    """Waits until every partition is led by a live node and its in-sync replicas are exactly
    the live nodes; returns how long that took."""
    started = time.monotonic()
    state: Partitions = {}
    while time.monotonic() - started < timeout:
        state = await partitions(cluster, topics)
        if state and all(leader in alive and set(isr) == alive for leader, isr in state.values()):
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"in-sync replicas never became {sorted(alive)}: {state}")


async def coordinator_of(cluster: KafkaCluster, group: str) -> KafkaNode:
    """The node that coordinates a consumer group now (the leader of its partition of
    __consumer_offsets)."""
    client = AIOKafkaClient(bootstrap_servers=cluster.bootstrap)
    try:
        await client.bootstrap()
        node_id = await client.coordinator_lookup(CoordinationType.GROUP, group)
    finally:
        await client.close()
    return next(n for n in cluster.nodes if n.node_id == node_id)


async def lag_of(cluster: KafkaCluster, namespace: str) -> dict[tuple[str, str, int], int] | str:
    lag = GroupLag(cluster.bootstrap, namespace=namespace)
    try:
        return {k: v for k, v in sorted((await lag.read()).items()) if v}
    except Exception as exc:  # a failure's message: what could be read
        return f"unknown ({type(exc).__name__}: {exc})"
    finally:
        await lag.close()


async def test_plazas_topics_are_on_three_brokers_with_two_in_sync_required(
    kafka_cluster: KafkaCluster,
) -> None:
    namespace = f"r{uuid.uuid4().hex[:8]}."
    bus = KafkaBus(kafka_cluster.bootstrap, namespace=namespace)
    await bus.create_topics(PLAZA_TOPICS, 3)
    topics = [namespace + t for t in PLAZA_TOPICS]
    await wait_for_isr(kafka_cluster, topics, {1, 2, 3})
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
        # The groups' committed offsets too: on one broker, a group whose coordinator was on the
        # lost broker stopped with it.
        [broker] = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
    finally:
        await admin.close()
    assert {len(p["replicas"]) for d in described for p in d["partitions"]} == {3}
    min_isr = {
        resource[3]: {e[0]: e[1] for e in resource[4]}["min.insync.replicas"]
        for response in configs
        for resource in response.resources
    }
    assert min_isr == dict.fromkeys(topics, "2")
    broker_config = {e[0]: e[1] for e in broker.resources[0][4]}
    assert broker_config["offsets.topic.replication.factor"] == "3"
    assert broker_config["transaction.state.log.min.isr"] == "2"


async def send_until_accepted(
    client: httpx.AsyncClient, n: int, refusals: list[int], waits: list[float]
) -> None:
    """Posts one post the way a bridge does: a 503 (not accepted) is sent again."""
    body = {
        "platform": "mastodon",
        "post_id": f"replica-{n}",
        "author_handle": f"@neighbour{n}@bcn.social",
        "text": TEXT.format(n=n),
        # ~220 m apart, inside Gràcia's and its neighbours' streets: no two are one problem
        "lat": 41.395 + (n // 15) * 0.002,
        "long": 2.140 + (n % 15) * 0.0027,
    }
    started = time.monotonic()
    while True:
        try:
            response = await client.post("/api/v1/posts", json=body)
        except httpx.TimeoutException:
            refusals.append(n)
            continue
        if response.status_code == 202:
            waits.append(time.monotonic() - started)
            return
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        refusals.append(n)
        await asyncio.sleep(0.2)


async def test_a_post_accepted_while_a_broker_is_killed_is_routed_exactly_once(
    kafka_cluster: KafkaCluster,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    namespace = f"r{uuid.uuid4().hex[:8]}."
    bus = KafkaBus(kafka_cluster.bootstrap, namespace=namespace)
    await bus.create_topics(PLAZA_TOPICS, 3)
    topics = [namespace + t for t in PLAZA_TOPICS]
    await wait_for_isr(kafka_cluster, topics, {1, 2, 3})
    port = free_port()
    env = {
        **base_env(kafka_cluster.bootstrap, namespace, database_url),
        "PLAZA_INGEST_PORT": str(port),
        "PLAZA_LOG_LEVEL": "INFO",
    }
    procs = [
        ServiceProcess("ingest", env, tmp_path),
        ServiceProcess("classifier", env, tmp_path),
        ServiceProcess("router", env, tmp_path),
    ]
    for p in procs:
        p.start()
    victim: KafkaNode | None = None
    refusals: list[int] = []
    waits: list[float] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=procs[0])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
            sem = asyncio.Semaphore(6)

            midstream = asyncio.Event()  # a few of the second third accepted

            async def one(n: int) -> None:
                async with sem:
                    await send_until_accepted(client, n, refusals, waits)
                if len(waits) >= POSTS // 3 + 5:
                    midstream.set()

            first = [asyncio.create_task(one(n)) for n in range(POSTS // 3)]
            await asyncio.gather(*first)
            # The kill comes mid-stream: posts are being sent while the broker dies.
            during = [asyncio.create_task(one(n)) for n in range(POSTS // 3, 2 * POSTS // 3)]
            await midstream.wait()
            killed_at, accepted_before_kill = time.monotonic(), len(waits)
            # The node that coordinates the router's group (the last hop, where CI once saw the
            # group stop for good): its members must find the new coordinator and go on.
            victim = await coordinator_of(kafka_cluster, namespace + "plaza-router")
            alive = {n.node_id for n in kafka_cluster.nodes} - {victim.node_id}
            victim.kill()
            recovered = await wait_for_isr(kafka_cluster, topics, alive)
            await asyncio.gather(*during)
            # Posts were accepted with the broker dead, not only before and after.
            assert len(waits) > accepted_before_kill
            print(
                f"\nleaders and ISR without node {victim.node_id}, the router group's coordinator,"
                f" {recovered:.1f} s after its SIGKILL"
            )
            print(f"posts refused (503) and sent again meanwhile: {len(refusals)}")
            print(f"longest wait for a 202: {max(waits):.1f} s")
            restarted_at = time.monotonic()
            kafka_cluster.start([victim])
            back = await wait_for_isr(kafka_cluster, topics, {1, 2, 3})
            print(
                f"node {victim.node_id} back in every ISR {time.monotonic() - restarted_at:.1f} s after its "
                f"restart ({back:.1f} s of catching up); outage {restarted_at - killed_at:.1f} s"
            )
            rest = [asyncio.create_task(one(n)) for n in range(2 * POSTS // 3, POSTS)]
            await asyncio.gather(*rest)
        assert len(waits) == POSTS

        accepted = {f"replica-{n}" for n in range(POSTS)}
        deadline = time.monotonic() + 60
        while True:
            async with sessions() as s:
                reports = (
                    await s.execute(select(RequestReport.post_id, RequestReport.service_request_id))
                ).all()
            if len(reports) >= POSTS or time.monotonic() > deadline:
                break
            for p in procs:
                assert p.alive(), f"{p.name} exited:\n{p.log()[-3000:]}"
            await asyncio.sleep(0.2)
        routed = [post_id for post_id, _ in reports]
        if sorted(routed) != sorted(accepted):
            raise AssertionError(
                f"{len(set(routed))} of {POSTS} accepted posts routed\n"
                f"records each group has not committed: {await lag_of(kafka_cluster, namespace)}\n"
                + "\n".join(f"--- {p.name}\n{p.log()[-2500:]}\n{p.tasks()}" for p in procs)
            )
        # ...and once: a post refused and sent again, whose first event the producer still wrote
        # after the 503, is recognised by its event id; no post opened a second request.
        async with sessions() as s:
            opened = (await s.execute(select(ServiceRequest))).scalars().all()
        assert sum(r.reporters_count for r in opened) == POSTS
        assert len({r.service_request_id for r in opened}) == len(opened)
    finally:
        for p in procs:
            if p.alive():
                p.kill()
        if victim is not None and not victim.alive():
            kafka_cluster.start([victim])


async def test_with_two_brokers_away_a_post_is_refused_not_silently_accepted(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    namespace = f"r{uuid.uuid4().hex[:8]}."
    bus = KafkaBus(kafka_cluster.bootstrap, namespace=namespace)
    await bus.create_topics(PLAZA_TOPICS, 3)
    topics = [namespace + t for t in PLAZA_TOPICS]
    await wait_for_isr(kafka_cluster, topics, {1, 2, 3})
    port = free_port()
    # Ingest is started before the brokers go: its idempotent producer asks a broker for a
    # producer id at start, which two brokers away never gives.
    env = {
        **base_env(kafka_cluster.bootstrap, namespace, "postgresql+asyncpg://unused/none"),
        "PLAZA_INGEST_PORT": str(port),
        "PLAZA_LOG_LEVEL": "INFO",
    }
    ingest = ServiceProcess("ingest", env, tmp_path).start()
    plain = AIOKafkaProducer(
        bootstrap_servers=kafka_cluster.bootstrap, acks="all", request_timeout_ms=3000
    )
    await plain.start()
    away = kafka_cluster.nodes[1:]
    received = namespace + TOPICS.POST_RECEIVED.topic
    survivors_partition = next(
        p
        for (topic, p), (leader, _) in (await partitions(kafka_cluster, [received])).items()
        if leader == 1
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=ingest)
        for node in away:
            node.kill()
        # A plain acks=all producer, to a partition the surviving node leads: an error, not an
        # acknowledgement. Not NotEnoughReplicas: with two of the quorum's three voters gone no
        # controller can take the dead nodes out of the in-sync replicas, so the leader waits
        # for them until the request times out.
        with pytest.raises(RequestTimedOutError):
            await plain.send_and_wait(received, b"post", partition=survivors_partition)
        # Ingest: a 503 problem+json under the gateway's 10 s, not a 202 and not a wait.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
            started = time.monotonic()
            response = await client.post(
                "/api/v1/posts",
                json={
                    "platform": "mastodon",
                    "post_id": "away-1",
                    "author_handle": "@vei@bcn.social",
                    "text": TEXT.format(n=1),
                },
            )
            answered = time.monotonic() - started
            health = await client.get("/healthz")
        print(
            f"\ningest answered {response.status_code} in {answered:.1f} s; /healthz {health.status_code}"
        )
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "5"
        assert response.json()["detail"].startswith(
            "the bus did not acknowledge the post within 5 s"
        )
        assert answered < 9
    finally:
        ingest.kill()
        kafka_cluster.start(away)
        await asyncio.wait_for(plain.stop(), 30)
    # The cluster heals: the same topics have all three nodes in sync again.
    await wait_for_isr(kafka_cluster, topics, {1, 2, 3})
