"""The bound: the pipeline's hops as raw aiokafka pass-throughs, with no logic at all.

    python -m bench.raw_chain HOP_NAME BOOTSTRAP SOURCE_TOPIC SINK_TOPIC

Each hop is its own process with Plaza's client settings (idempotent acks=all producer without
linger; manually committed read_committed consumer, batches of up to 500): it reads a
batch, produces every record unchanged to the same partition of the next topic, a producer batch
per partition as Plaza's bus does (`send_batch`, not `send()` a record at a time), waits for the
acks, then commits. The driver publishes the same way.
Plaza's hops are classifier, router, relay and notifier; the router's hand-over to the relay
goes through PostgreSQL's outbox, here it is one more Kafka topic. The records are the same
post-received envelopes the pipeline phase publishes, so the sizes are those of the first hop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import RecordMetadata
from plaza.bus import partition_of

from bench.cpu import CpuMeter, Watched

HOPS = ("classifier", "router", "relay", "notifier")
BATCH = 500
PARTITIONS = 3  # as Plaza's topics in the bench (bench.stack.PARTITIONS)


def producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=0,
        max_batch_size=256 * 1024,
    )


def consumer(bootstrap: str, group: str, topic: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        fetch_max_wait_ms=100,
    )


async def assigned(c: AIOKafkaConsumer) -> None:
    """Until the group gave this consumer its partitions (nothing is published yet)."""
    while not c.assignment():
        await c.getmany(timeout_ms=100)


async def hop(bootstrap: str, source: str, sink: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    out = producer(bootstrap)
    into = consumer(bootstrap, f"{source}-to-{sink}", source)
    await out.start()
    await into.start()
    await assigned(into)
    print("ready", flush=True)
    try:
        while not stop.is_set():
            batches = await into.getmany(timeout_ms=200, max_records=BATCH)
            futures = []
            for tp, msgs in batches.items():
                futures += await forward(out, sink, tp.partition, [(m.key, m.value) for m in msgs])
            if futures:
                await asyncio.gather(*futures)
                await into.commit()
    finally:
        await into.stop()
        await out.stop()


async def forward(
    out: AIOKafkaProducer,
    sink: str,
    partition: int,
    records: Sequence[tuple[bytes | None, bytes | None]],
) -> list[asyncio.Future[RecordMetadata]]:
    """Records (key, value) onto one partition of sink as whole producer batches: the fastest
    way aiokafka takes records (Plaza's bus does the same; send() takes them one at a time). A
    hop keeps a record's partition, where the same key would go anyway."""
    futures = []
    batch = out.create_batch()
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:
            futures.append(await out.send_batch(batch, sink, partition=partition))
            batch = out.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    if batch.record_count():
        futures.append(await out.send_batch(batch, sink, partition=partition))
    return futures


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in topics]
        )
    finally:
        await admin.close()


async def drive(
    bootstrap: str, first: str, last: str, records: Sequence[tuple[bytes, bytes]]
) -> float:
    """Publishes the records onto the first topic and counts them off the last; the seconds from
    the first send to the last arrival."""
    sink = consumer(bootstrap, f"{last}-sink", last)
    await sink.start()
    await assigned(sink)
    out = producer(bootstrap)
    await out.start()
    try:
        start = time.monotonic()
        for i in range(0, len(records), BATCH):
            by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
            for key, value in records[i : i + BATCH]:
                by_partition.setdefault(partition_of(key, PARTITIONS), []).append((key, value))
            futures = []
            for partition, chunk in by_partition.items():
                futures += await forward(out, first, partition, chunk)
            await asyncio.gather(*futures)
        seen = 0
        deadline = time.monotonic() + 300
        while seen < len(records):
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw chain delivered {seen} of {len(records)}")
            batches = await sink.getmany(timeout_ms=200, max_records=5000)
            seen += sum(len(msgs) for msgs in batches.values())
        return time.monotonic() - start
    finally:
        await out.stop()
        await sink.stop()


@dataclass(frozen=True)
class ChainRun:
    seconds: float  # from the first send to the last record's arrival
    cpu: dict[str, float]  # CPU seconds over the run: each hop, the driver ("bench"), `also`


def run_chain(
    bootstrap: str,
    prefix: str,
    records: Sequence[tuple[bytes, bytes]],
    log_dir: Path,
    also: Mapping[str, Watched] | None = None,
) -> ChainRun:
    """Starts one process per hop, drives the records through them, stops them. `also`: more
    processes whose CPU to measure over the run (the broker)."""
    topics = [f"{prefix}raw{i}" for i in range(len(HOPS) + 1)]
    asyncio.run(create_topics(bootstrap, topics, PARTITIONS))
    procs = []
    for name, source, sink in zip(HOPS, topics, topics[1:], strict=False):
        log = (log_dir / f"raw-{name}.log").open("ab")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.raw_chain", name, bootstrap, source, sink],
                stdout=log,
                stderr=log,
            )
        )
    try:
        deadline = time.monotonic() + 60
        while not all("ready" in (log_dir / f"raw-{name}.log").read_text() for name in HOPS):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"raw chain hops did not start; see {log_dir}/raw-*.log")
            time.sleep(0.1)
        meter = CpuMeter(
            {
                **{name: Watched(p.pid) for name, p in zip(HOPS, procs, strict=True)},
                "bench": Watched(os.getpid()),
                **(also or {}),
            }
        )
        meter.start()
        seconds = asyncio.run(drive(bootstrap, topics[0], topics[-1], records))
        return ChainRun(seconds, meter.stop())
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


if __name__ == "__main__":
    _, _name, _bootstrap, _source, _sink = sys.argv
    asyncio.run(hop(_bootstrap, _source, _sink))
