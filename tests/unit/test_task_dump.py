"""`kill -USR1` asks any Plaza service what each of its tasks waits on: a process that is alive
but has stopped working (a consumer that no longer consumes) says where it is stuck, and goes
on running."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal
    from plaza.service import configure_logging, run

    async def waiting_for_the_coordinator(event):
        await event.wait()

    async def main():
        event = asyncio.Event()
        stuck = asyncio.create_task(waiting_for_the_coordinator(event), name="router-worker")
        await asyncio.sleep(0.1)
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.1)
        event.set()
        await stuck
        print("still running after the dump")

    configure_logging("INFO")
    run(main())
    """
)


def test_sigusr1_logs_every_task_and_what_it_waits_on_without_stopping_the_service() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "still running after the dump" in done.stdout
    dump = done.stderr
    assert "WARNING plaza.service: 2 tasks on SIGUSR1" in dump, dump
    # The stuck task by its name, and the line it waits on, in the function it waits in.
    task = dump[dump.index("task router-worker:") :].splitlines()
    # ...down the chain of awaits: the function it is stuck in, then asyncio's Event.wait,
    # then the future that one waits on.
    assert task[1].endswith("<string>:6 in waiting_for_the_coordinator"), dump
    assert task[2].endswith(" in wait") and "asyncio/locks.py" in task[2], dump
    assert task[3].startswith("    waiting for <Future pending"), dump
    # One record: every line of the dump after the first is indented (plaza's log format).
    record = dump[dump.index("tasks on SIGUSR1") :].rstrip("\n").splitlines()
    assert all(line.startswith("  ") for line in record[1:]), dump
