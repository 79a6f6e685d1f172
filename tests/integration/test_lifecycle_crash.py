"""Exactly-once effects under crashes, on real Kafka and PostgreSQL.

5,000 classified posts (3,500 problems, 1,500 more reports of the same problems) flow into the
router while the router and the outbox relay are killed with SIGKILL at random moments and
restarted. A notifier answers every reporter. At the end every post is in exactly one request
(as its opener or merged into it), every lifecycle event reached Kafka and was applied once,
every request has its due times, and every missed deadline was detected.

The posts enter as post-classified events, so that the problems and their duplicates are known
exactly; the classifier in front of the router is covered by the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path

from plaza.bus import OutRecord
from plaza.bus.kafka import KafkaBus
from plaza.contracts import TOPICS, Envelope, decode
from plaza.db.models import OutboxRecord, Reply, RequestReport, ServiceRequest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import KafkaBroker
from tests.integration.lifecycle_helpers import as_event, classified
from tests.processes import ServiceProcess, base_env

PROBLEMS = 3500
REPEATS = 1500
SERVICES = ["streetlight", "pavement", "cleaning", "traffic", "graffiti"]


def posts(rng: random.Random) -> tuple[list[Envelope], dict[str, int]]:
    """The posts, shuffled so that repeats arrive in any order, and which problem each is about."""
    now = datetime.now(UTC)
    problem_of: dict[str, int] = {}
    out = []
    sites = [
        (41.30 + (n // 60) * 0.002, 2.05 + (n % 60) * 0.0027) for n in range(PROBLEMS)
    ]  # ~220 m apart
    for n in range(PROBLEMS + REPEATS):
        problem = n if n < PROBLEMS else rng.randrange(PROBLEMS)
        lat, lon = sites[problem]
        if n >= PROBLEMS:  # another neighbour, a few metres away
            lat, lon = lat + rng.uniform(-0.0001, 0.0001), lon + rng.uniform(-0.0001, 0.0001)
        post_id = f"post-{n}"
        problem_of[post_id] = problem
        out.append(
            as_event(
                classified(
                    post_id,
                    service_code=SERVICES[problem % len(SERVICES)],
                    latlon=(lat, lon),
                    at=now,
                    author=f"@neighbour{n}",
                    district="06",
                )
            )
        )
    rng.shuffle(out)
    return out, problem_of


async def scalar(sessions: async_sessionmaker[AsyncSession], stmt: object) -> int:
    async with sessions() as s:
        return int((await s.execute(stmt)).scalar_one())  # type: ignore[call-overload]


async def wait_until(
    what: str, check: object, procs: list[ServiceProcess], timeout: float = 180
) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value, done = await check()  # type: ignore[operator]
        if done:
            return int(value)
        for p in procs:
            assert p.alive(), f"{p.name} exited:\n{p.log()[-3000:]}"
        assert loop.time() < deadline, f"{what}: stuck at {value}\n" + "\n".join(
            p.log()[-2000:] for p in procs
        )
        await asyncio.sleep(0.05)


async def read_all(bus: KafkaBus, topic: str, group: str, expected: int) -> list[Envelope]:
    consumer = await bus.subscribe(group, [topic])
    got: list[Envelope] = []
    idle = 0
    while idle < 6 or len({e.event_id for e in got}) < expected:
        batch = await consumer.fetch(5000, 0.5)
        idle = 0 if batch else idle + 1
        got += [decode(r.topic, r.value) for r in batch]
        assert idle < 60, f"{topic}: {len({e.event_id for e in got})} of {expected} events"
    await consumer.close()
    return got


async def test_killing_router_and_relay_loses_nothing_and_applies_nothing_twice(
    kafka: KafkaBroker,
    kafka_namespace: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    rng = random.Random(2026)
    sla = tmp_path / "sla.toml"
    # traffic must be acknowledged within about a second: every traffic request will breach
    sla.write_text("[services.traffic]\nacknowledge_hours = 0.0003\nresolve_hours = 1000\n")
    env = {
        **base_env(kafka.bootstrap, kafka_namespace, database_url),
        "PLAZA_SLA_CONFIG": str(sla),
        "PLAZA_SLA_SCAN_INTERVAL": "1",
        "PLAZA_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "PLAZA_LOG_LEVEL": "WARNING",
    }
    bus = KafkaBus(kafka.bootstrap, namespace=kafka_namespace)
    await bus.start()
    await bus.create_topics([t.topic for t in TOPICS.all()], 3)
    events, problem_of = posts(rng)
    await bus.publish(
        [
            OutRecord(
                TOPICS.POST_CLASSIFIED.topic,
                f"mastodon:{e.post_classified.post.post_id}",
                e.SerializeToString(),
            )
            for e in events
        ]
    )

    router = ServiceProcess("router", env, tmp_path).start()
    relay = ServiceProcess("relay", env, tmp_path, module="plaza_router.relay").start()
    notifier = ServiceProcess("notifier", env, tmp_path).start()
    procs = [router, relay, notifier]
    total = PROBLEMS + REPEATS
    reported = select(func.count()).select_from(RequestReport)

    async def reports_reach(n: int) -> tuple[int, bool]:
        got = await scalar(sessions, reported)
        return got, got >= n

    kills: list[tuple[str, int]] = []
    try:
        for fraction, victim in ((0.15, router), (0.3, relay), (0.5, router), (0.7, relay)):
            await wait_until(
                f"{fraction:.0%} of posts", lambda f=fraction: reports_reach(int(total * f)), procs
            )
            await asyncio.sleep(rng.uniform(0, 0.2))
            victim.kill()
            kills.append((victim.name, await scalar(sessions, reported)))
            victim.start()
        await wait_until("every post routed", lambda: reports_reach(total), procs)

        async def outbox_drained() -> tuple[int, bool]:
            left = await scalar(sessions, select(func.count()).select_from(OutboxRecord))
            return left, left == 0

        async def all_replied() -> tuple[int, bool]:
            got = await scalar(sessions, select(func.count()).select_from(Reply))
            return got, got >= total

        await wait_until("outbox published", outbox_drained, procs)
        await wait_until("every reporter answered", all_replied, procs)
        assert all(n < total for _, n in kills), f"the work was done before the kills: {kills}"

        # Every post is in exactly one request, as its opener or merged into it.
        async with sessions() as s:
            reports = dict(
                (
                    await s.execute(select(RequestReport.post_id, RequestReport.service_request_id))
                ).all()
            )
            opened = (await s.execute(select(ServiceRequest))).scalars().all()
        assert len(reports) == total and set(reports) == set(problem_of)
        assert len(opened) == PROBLEMS  # one request per problem: every repeat was merged
        request_of_problem: dict[int, int] = {}
        for post_id, request_id in reports.items():
            assert request_of_problem.setdefault(problem_of[post_id], request_id) == request_id
        assert sum(r.reporters_count for r in opened) == total
        assert all(r.expected_datetime and r.ack_due_at for r in opened)

        # Every lifecycle event reached Kafka (redeliveries carry the same ids).
        created = await read_all(bus, TOPICS.REQUEST_CREATED.topic, "check-created", PROBLEMS)
        merged = await read_all(bus, TOPICS.REQUEST_MERGED.topic, "check-merged", REPEATS)
        assert {e.request_created.service_request_id for e in created} == {
            r.service_request_id for r in opened
        }
        assert len({e.event_id for e in created}) == PROBLEMS
        assert len({e.event_id for e in merged}) == REPEATS

        # ...and was applied once: one reply per reporter, never two.
        async with sessions() as s:
            replied = (await s.execute(select(Reply.in_reply_to_post_id))).scalars().all()
        assert sorted(replied) == sorted(problem_of)

        # Every missed deadline was detected and announced once.
        traffic = {r.service_request_id for r in opened if r.service_code == "traffic"}

        async def breaches_found() -> tuple[int, bool]:
            n = await scalar(
                sessions, select(func.count()).where(ServiceRequest.ack_breached_at.is_not(None))
            )
            return n, n == len(traffic)

        await wait_until("breaches detected", breaches_found, procs, timeout=60)
        await wait_until("outbox published", outbox_drained, procs)
        breached = await read_all(
            bus, TOPICS.REQUEST_SLA_BREACHED.topic, "check-breached", len(traffic)
        )
        assert {e.request_sla_breached.service_request_id for e in breached} == traffic
        assert len({e.event_id for e in breached}) == len(traffic)
        assert {e.request_sla_breached.deadline for e in breached} == {"acknowledge"}

        for p in procs:
            assert p.stop() == 0, p.log()[-3000:]
    finally:
        for p in procs:
            if p.alive():
                p.kill()
        await bus.close()
