"""Every series a process counts exists at 0 from its start (plaza.metrics.start_at_zero):
Prometheus's increase() and rate() cannot see the count a series appears with, so a breach, a
deadline met or a dead letter counted in a series born with it was never seen by the SLA
compliance, the breach graphs or the alerts."""

from __future__ import annotations

from itertools import product

import pytest
from plaza import metrics
from plaza.contracts import TOPICS
from plaza.requests import OPEN_STATUSES, Action, InvalidTransition, next_status
from plaza.taxonomy import load_taxonomy
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

DISTRICTS = ("01", "06")  # a city of two districts


def exposed(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called `name` in this process's /metrics, by their labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
        for s in family.samples
        if s.name == name
    }


def test_the_request_counters_start_at_zero_for_every_district_service_and_urgency() -> None:
    created = metrics.start_at_zero(
        districts=DISTRICTS, counters=(metrics.SLA_MET, metrics.SLA_BREACHES)
    )

    services = list(load_taxonomy())
    combinations = list(
        product(metrics.DEADLINES, [*DISTRICTS, "none"], services, ("normal", "urgent"))
    )
    assert created == 2 * len(combinations) == 2 * 2 * 3 * 13 * 2
    for name in ("plaza_sla_met_total", "plaza_sla_breaches_total"):
        shown = exposed(name)
        for deadline, district, service, urgency in combinations:
            labels = {
                "deadline": deadline,
                "district": district,
                "service_code": service,
                "urgency": urgency,
            }
            assert tuple(sorted(labels.items())) in shown, (name, labels)


def test_requests_opened_and_closed_start_at_zero_by_channel_and_status() -> None:
    created = metrics.start_at_zero(
        districts=DISTRICTS, counters=(metrics.REQUESTS_CREATED, metrics.REQUESTS_CLOSED)
    )

    assert created == 3 * 13 * 2 * (len(metrics.CHANNELS) + len(metrics.CLOSED_AS))
    channels = {dict(k)["channel"] for k in exposed("plaza_requests_created_total")}
    assert {"webhook", "open311", "stream", "replay"} <= channels
    statuses = {dict(k)["status"] for k in exposed("plaza_requests_closed_total")}
    assert set(metrics.CLOSED_AS) <= statuses


def test_the_statuses_counted_as_closed_are_those_an_action_leaves_the_backlog_for() -> None:
    leaving = set()
    for status, action in product(OPEN_STATUSES, Action):
        try:
            reached = next_status(status, action)
        except InvalidTransition:
            continue
        if reached not in OPEN_STATUSES:
            leaving.add(str(reached))
    assert leaving == set(metrics.CLOSED_AS)


def test_a_worker_s_counters_start_at_zero_for_its_group_and_topics() -> None:
    created = metrics.start_at_zero(consumers={"plaza-start-at-zero": [TOPICS.POST_RECEIVED]})

    assert created == 7
    topic = TOPICS.POST_RECEIVED.topic
    mine = {"group": "plaza-start-at-zero", "topic": topic}
    for name, label, values in [
        ("plaza_bus_dead_letters_total", "reason", ("contract", "rejected", "error")),
        ("plaza_bus_handler_retries_total", "kind", ("transient", "error")),
        ("plaza_bus_messages_consumed_total", "outcome", ("processed", "dead_lettered")),
    ]:
        for value in values:
            assert REGISTRY.get_sample_value(name, {**mine, label: value}) == 0.0, (name, value)


def test_only_request_counters_are_started_by_district() -> None:
    with pytest.raises(ValueError, match="not a request counter"):
        metrics.start_at_zero(districts=DISTRICTS, counters=(metrics.DEAD_LETTERS,))
