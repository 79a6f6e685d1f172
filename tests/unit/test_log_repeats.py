"""A broker away makes aiokafka log the same few failures thousands of times in every process;
the log keeps one of each per interval, saying how many were not shown, and all of Plaza's own."""

from __future__ import annotations

import logging

from plaza.service import RepeatsSuppressed


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_library_repeating_itself_is_shown_once_per_interval() -> None:
    clock = _Clock()
    repeats = RepeatsSuppressed(interval=30.0, clock=clock)
    refused = "Unable connect to node with id %s: %s"
    shown = []
    for second in range(90):  # a 90-second outage, 20 failures a second
        clock.now = float(second)
        for _ in range(20):
            record = _record("aiokafka", refused, 1, "[Errno 111] Connection refused")
            if repeats.filter(record):
                shown.append(record.getMessage())
        plaza = _record("plaza.worker", "worker %s: transient error", "plaza-router")
        assert repeats.filter(plaza)  # Plaza's own lines all pass
    assert len(shown) == 3
    assert shown[0] == "Unable connect to node with id 1: [Errno 111] Connection refused"
    assert shown[1].endswith("[599 more like it in 30 s not shown]")
    # Another message of the library (another child logger) has its own count.
    assert repeats.filter(_record("aiokafka.consumer.fetcher", "Failed fetch messages from %s", 1))
