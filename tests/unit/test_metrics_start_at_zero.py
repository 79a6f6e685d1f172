"""Every series a process counts exists at 0 from its start (plaza.metrics.start_at_zero):
Prometheus's increase() and rate() cannot see the count a series appears with, so a breach, a
deadline met or a dead letter counted in a series born with it was never seen by the SLA
compliance, the breach graphs or the alerts. The same holds for a histogram's _count and
_bucket: the time to resolve of the first request of a service, the first posts a restarted
classifier handled, were never in the panels."""

from __future__ import annotations

from itertools import product

import pytest
from plaza import metrics
from plaza.bus.memory import MemoryBus
from plaza.contracts import TOPICS
from plaza.policy import SlaPolicy
from plaza.requests import OPEN_STATUSES, Action, InvalidTransition, next_status
from plaza.taxonomy import load_taxonomy
from plaza_ingest.app import create_app
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

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
    assert created == 2 * len(combinations) + 3 * 3 * 13 * 2  # and the time to each step
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

    assert created == 9  # and its handler time, and the stage its topic completes
    topic = TOPICS.POST_RECEIVED.topic
    mine = {"group": "plaza-start-at-zero", "topic": topic}
    for name, label, values in [
        ("plaza_bus_dead_letters_total", "reason", ("contract", "rejected", "error")),
        ("plaza_bus_handler_retries_total", "kind", ("transient", "error")),
        ("plaza_bus_messages_consumed_total", "outcome", ("processed", "dead_lettered")),
    ]:
        for value in values:
            assert REGISTRY.get_sample_value(name, {**mine, label: value}) == 0.0, (name, value)
    assert REGISTRY.get_sample_value("plaza_bus_handler_duration_seconds_count", mine) == 0.0
    # the stage is shared by every classifier of the process (other tests' too): it exists
    stage = {"stage": "classified"}
    assert (
        REGISTRY.get_sample_value("plaza_pipeline_stage_latency_seconds_count", stage) is not None
    )
    assert (
        REGISTRY.get_sample_value(
            "plaza_pipeline_stage_latency_seconds_bucket", {**stage, "le": "+Inf"}
        )
        is not None
    )


def test_ingest_starts_the_received_stage_at_zero() -> None:
    """Ingest's app times the posts its webhook receives: the stage is there once it is made
    (at 0, unless another test of this process observed it already)."""
    create_app(MemoryBus())
    assert (
        REGISTRY.get_sample_value(
            "plaza_pipeline_stage_latency_seconds_count", {"stage": metrics.RECEIVED}
        )
        is not None
    )
    assert metrics.start_at_zero(stages=[metrics.RECEIVED]) == 1


def test_counting_deadlines_met_starts_the_time_to_each_step_at_zero() -> None:
    """The gateway and `make run` count deadlines met: the managers' actions that do also time
    acknowledging, assigning and resolving, for every district, service and urgency."""
    # districts of their own: other tests of the process act on Barcelona's (and on "none")
    districts = ("97", "98")
    created = metrics.start_at_zero(districts=districts, counters=(metrics.SLA_MET,))

    requests = list(product([*districts, "none"], load_taxonomy(), metrics.URGENCIES))
    assert created == (len(metrics.DEADLINES) + 3) * len(requests)
    for step in ("acknowledge", "assign", "resolve"):
        name = f"plaza_request_time_to_{step}_seconds"
        counts, buckets = exposed(f"{name}_count"), exposed(f"{name}_bucket")
        assert all(
            tuple(sorted({"district": "none", "service_code": c, "urgency": u}.items())) in counts
            for c, u in product(load_taxonomy(), metrics.URGENCIES)
        )
        for district, service, urgency in requests:
            if district == "none":
                continue
            labels = {"district": district, "service_code": service, "urgency": urgency}
            assert counts[tuple(sorted(labels.items()))] == 0.0, (step, labels)
            for edge in (*metrics.LIFECYCLE_BUCKETS, float("inf")):
                le = {**labels, "le": floatToGoString(edge)}
                assert buckets[tuple(sorted(le.items()))] == 0.0, (step, le)


def test_the_lifecycle_buckets_have_an_edge_at_every_sla_window() -> None:
    """A p90 near a deadline is read at the deadline, not interpolated between edges hours or
    days either side of it (72 h lay between 48 h and 120 h)."""
    policy = SlaPolicy.load()
    windows = {
        int(duration.total_seconds())
        for code, urgent in product(load_taxonomy(), (False, True))
        for duration in (
            policy.window(code, urgent).acknowledge,
            policy.window(code, urgent).resolve,
        )
    }
    assert windows - set(metrics.LIFECYCLE_BUCKETS) == set()


def test_only_request_counters_are_started_by_district() -> None:
    with pytest.raises(ValueError, match="not a request counter"):
        metrics.start_at_zero(districts=DISTRICTS, counters=(metrics.DEAD_LETTERS,))
