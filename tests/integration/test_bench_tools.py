"""The bench's measuring tools: the CPU meter behind `make bench`'s CPU per post (bench/cpu.py),
the py-spy sampling behind `make profile` (bench/profile.py), and the consumer groups' backlog
the bench watches instead of querying PostgreSQL while a phase runs (bench.pipeline.Lag). Each
CPU test burns a known amount of CPU in a process of its own and checks the tool finds it where
it was spent."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from plaza.bus import OutRecord
from plaza.bus.kafka import KafkaBus
from plaza.contracts import TOPICS

from bench.cpu import CpuMeter, Watched, cpu_seconds
from bench.pipeline import CLASSIFIER, ROUTER, Lag
from bench.profile import NO_FRAME, read_collapsed, sampling
from tests.infra import KafkaBroker

BURN = 0.4  # CPU seconds each burner uses
# burns BURN seconds of its own CPU (not of the wall clock: a busy machine only makes it slower)
BURNER = textwrap.dedent(
    f"""
    import time
    def burn_the_cpu():
        while time.process_time() < {BURN}:
            sum(range(1000))
    """
)


@contextmanager
def python(code: str) -> Iterator[subprocess.Popen[str]]:
    """A Python process running code, talking over stdin and stdout lines."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def step(proc: subprocess.Popen[str], expected: str) -> None:
    """Tells the process to go on and waits for what it says when done."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == expected


def test_the_meter_counts_the_cpu_a_process_uses_between_start_and_stop() -> None:
    code = BURNER + "input(); burn_the_cpu(); print('burnt', flush=True); input()"
    with python(code) as busy, python("input(); print('idle', flush=True); input()") as idle:
        meter = CpuMeter({"busy": Watched(busy.pid), "idle": Watched(idle.pid)})
        meter.start()
        step(busy, "burnt")
        step(idle, "idle")
        used = meter.stop()
    assert used["busy"] >= BURN * 0.9
    assert used["idle"] < 0.1


def test_a_tree_counts_children_that_exited_and_children_still_running() -> None:
    """A PostgreSQL server's CPU is its backends': some are still connected when the phase ends,
    others closed during it (their time then moves to the postmaster's children_*)."""
    parent = textwrap.dedent(
        f"""
        import subprocess, sys
        burner = {BURNER!r}
        input()
        subprocess.run([sys.executable, "-c", burner + "burn_the_cpu()"], check=True)
        live = subprocess.Popen(
            [sys.executable, "-c", burner + "burn_the_cpu(); print('burnt', flush=True); input()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        live.stdout.readline()
        print("children burnt", flush=True)
        input()
        """
    )
    with python(parent) as proc:
        meter = CpuMeter({"tree": Watched(proc.pid, tree=True), "alone": Watched(proc.pid)})
        meter.start()
        step(proc, "children burnt")
        used = meter.stop()
    assert used["tree"] >= 2 * BURN * 0.9  # the exited child's and the live one's
    assert used["alone"] < 0.2  # the parent itself only started them


def test_a_process_that_is_gone_reads_as_no_cpu() -> None:
    with python("pass") as proc:
        proc.wait(10)
    assert cpu_seconds(proc.pid) == 0.0
    assert cpu_seconds(proc.pid, tree=True) == 0.0


def test_py_spy_finds_the_function_that_burns_the_cpu(tmp_path: Path) -> None:
    code = BURNER.replace(f"< {BURN}", "< 30") + "input(); print('go', flush=True); burn_the_cpu()"
    with python(code) as proc:
        step(proc, "go")
        with sampling({"burner": proc.pid}, tmp_path) as files:
            pass  # sampling() waits a second for py-spy to attach, and it samples meanwhile
        profile = read_collapsed(files["burner"].read_text().splitlines())
    assert profile.samples > 20
    # the function burning the CPU is where its samples are, called from the script's module
    assert "burn_the_cpu" in [f.split(" ")[0] for f, _ in profile.own.most_common(2)], profile.own
    for caller in ("<module> (<string>)", "burn_the_cpu (<string>)"):
        assert profile.within[caller] > 0.9 * profile.samples, profile.within


def test_collapsed_stacks_are_read_by_function_and_a_bad_line_is_named() -> None:
    profile = read_collapsed(
        [
            "main (app.py:3);work (app.py:10);parse (app.py:20) 6",
            "main (app.py:3);work (app.py:11) 3",  # another line of work(): the same function
            " 1",  # a thread outside Python
            "",
        ]
    )
    assert profile.samples == 10
    assert profile.own == {"parse (app.py)": 6, "work (app.py)": 3, NO_FRAME: 1}
    assert profile.within["work (app.py)"] == 9 and profile.within["main (app.py)"] == 9
    with pytest.raises(ValueError, match="line 2 is not"):
        read_collapsed(["main (app.py:3) 2", "main (app.py:3) two"])


def test_a_process_py_spy_cannot_sample_is_named(tmp_path: Path) -> None:
    with python("pass") as proc:
        proc.wait(10)
    with (
        pytest.raises(RuntimeError, match=rf"could not sample gone \(pid {proc.pid}\): no such"),
        sampling({"gone": proc.pid}, tmp_path),
    ):
        pytest.fail("sampled a process that is gone")


async def test_the_lag_counts_what_each_group_has_not_committed(
    kafka: KafkaBroker, kafka_namespace: str
) -> None:
    """The bench waits on this backlog and looks the posts up in PostgreSQL only once it is 0:
    a backlog that always read 0 (the partitions of a topic its consumer had no metadata for)
    had the bench count the router's inbox twice a second through every burst, which
    PostgreSQL's CPU per post then carried."""
    received, classified = TOPICS.POST_RECEIVED.topic, TOPICS.POST_CLASSIFIED.topic
    bus = KafkaBus(kafka.bootstrap, namespace=kafka_namespace)
    await bus.start()
    try:
        await bus.create_topics([received, classified], 3)
        await bus.publish([OutRecord(received, f"k{n}", b"x") for n in range(30)])
        await bus.publish([OutRecord(classified, f"k{n}", b"x") for n in range(12)])
        for group, topic, handled in ((CLASSIFIER, received, 20), (ROUTER, classified, 12)):
            consumer = await bus.subscribe(group, [topic])
            read: list = []
            while len(read) < (30 if topic == received else 12):
                read += await consumer.fetch(100, timeout=1.0)
            by_partition: dict = {}
            for r in sorted(read, key=lambda r: (r.topic_partition, r.offset))[:handled]:
                by_partition[r.topic_partition] = r.offset + 1
            # every partition committed at least once, as the bench's warm-up does
            for r in read:
                by_partition.setdefault(r.topic_partition, 0)
            await consumer.commit(by_partition)
            await consumer.close()
        async with Lag(kafka.bootstrap, kafka_namespace) as lag:
            assert await lag.behind(CLASSIFIER, received) == 10
            assert await lag.behind(ROUTER, classified) == 0
            assert await lag.routing() == 10
    finally:
        await bus.close()
