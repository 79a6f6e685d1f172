"""`plaza run`'s stop: the drain lets the workers finish what is on the bus until a second
Ctrl-C; a SIGINT passed on twice at once (`uv run`, which `make run` uses, forwards the one
the terminal sent to the whole group) is one Ctrl-C, not two."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from plaza_cli import embedded


async def _drain_for(
    monkeypatch: pytest.MonkeyPatch, seconds: float, signals_at: list[float]
) -> float:
    """How long a drain of `seconds` (records always left) lasts when SIGINT comes at these
    times."""

    async def always_left(*_: object) -> int:
        return 3

    monkeypatch.setattr(embedded, "_unhandled", always_left)
    loop = asyncio.get_running_loop()
    for at in signals_at:
        loop.call_later(at, os.kill, os.getpid(), signal.SIGINT)
    started = loop.time()
    await embedded.drain(None, None, seconds)  # type: ignore[arg-type]
    return loop.time() - started


async def test_an_echoed_ctrl_c_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _drain_for(monkeypatch, 1.0, [0.05]) >= 0.95  # drained its whole second


async def test_a_second_ctrl_c_stops_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _drain_for(monkeypatch, 5.0, [0.7]) < 4.0  # not the 5 s it had


async def test_an_echo_after_an_empty_drain_is_still_one_ctrl_c(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With nothing to drain, the drain ended before uv's echo came: it met Python's own
    handler, a KeyboardInterrupt mid-stop (no "Plaza stopped", make run's exit status 130)."""

    async def nothing_left(*_: object) -> int:
        return 0

    monkeypatch.setattr(embedded, "_unhandled", nothing_left)
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, os.kill, os.getpid(), signal.SIGINT)
    await embedded.drain(None, None, 10.0)  # type: ignore[arg-type]
    await asyncio.sleep(0.4)  # where the stop goes on: no KeyboardInterrupt
