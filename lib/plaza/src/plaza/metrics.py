"""Prometheus metrics that every Plaza process shares: bus, worker runtime and process info."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES_CONSUMED = Counter(
    "plaza_bus_messages_consumed_total",
    "Records a worker finished with, by outcome (processed or dead_lettered)",
    ["group", "topic", "outcome"],
)
HANDLER_RETRIES = Counter(
    "plaza_bus_handler_retries_total",
    "Handler attempts that failed and were retried, by kind (transient or error)",
    ["group", "topic", "kind"],
)
HANDLER_DURATION = Histogram(
    "plaza_bus_handler_duration_seconds",
    "Time a handler took for one record, retries included",
    ["group", "topic"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MESSAGES_PUBLISHED = Counter(
    "plaza_bus_messages_published_total",
    "Records published and acknowledged, by topic",
    ["topic"],
)
DEAD_LETTERS = Counter(
    "plaza_bus_dead_letters_total",
    "Records sent to a dead-letter topic, by source topic and reason class",
    ["group", "topic", "reason"],
)
