"""City hall's Grafana dashboards, as code: `make dashboards` writes them to dashboards/*.json.

The JSON is committed (Grafana provisions it from deploy/grafana/provisioning) and
tests/unit/test_dashboards.py checks that regenerating gives the same files, so edit this file,
never the JSON. Every query reads Plaza's metrics or the recording rules of
deploy/prometheus/rules; tests/e2e/test_prometheus.py runs each one against a real Prometheus
that scraped a running Plaza, and expects every `{{label}}` of a legend in its result.

The backlog gauges (plaza_requests_open, _overdue, _past_due, _escalated, _open_age_seconds,
plaza_workers_busy) come from every gateway alike: queries take them once with
`max without (instance, job)`.

Every stat and bar gauge says what is good and bad (a Scale: its range, the colour from each
step up, the text for a value): Grafana's defaults coloured a 9% compliance green and stretched
a bar gauge to its data. The compliance target is read from the SLA alert, so that the panels
turn red where the alert fires.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    dashboard,
    prometheus,
    stat,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueGraphMode,
    GraphTresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
    VariableSort,
)

OUT = Path(__file__).resolve().parent / "dashboards"
ALERTS = Path(__file__).resolve().parents[1] / "prometheus" / "rules" / "alerts.yml"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")
TAGS = ["plaza"]

Query = tuple[str, str]  # (PromQL, legend format)
Panel = timeseries.Panel | stat.Panel | bargauge.Panel


def compliance_target() -> float:
    """The share of deadlines city hall wants met: PlazaSlaComplianceBelowTarget's threshold."""
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    [expr] = [
        rule["expr"]
        for group in groups
        for rule in group["rules"]
        if rule.get("alert") == "PlazaSlaComplianceBelowTarget"
    ]
    found = re.search(r"ratio24h < ([0-9.]+)", expr)
    if found is None:
        raise ValueError(f"no `ratio24h < target` in PlazaSlaComplianceBelowTarget: {expr}")
    return float(found[1])


@dataclass(frozen=True)
class Scale:
    """A stat's or bar gauge's range and colours: `steps` gives the colour from each value up
    (the first from minus infinity), `texts` what to show for a value instead of it."""

    steps: tuple[tuple[float | None, str], ...]
    min: float = 0
    max: float | None = None
    texts: tuple[tuple[str, str, str], ...] = ()  # value, text, colour

    def apply(self, panel: stat.Panel | bargauge.Panel | timeseries.Panel) -> None:
        panel.min(self.min).thresholds(
            dashboard.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=v, color=c) for v, c in self.steps])
        )
        if self.max is not None:
            panel.max(self.max)
        if self.texts:
            options = {
                value: ValueMappingResult(text=text, color=color, index=i)
                for i, (value, text, color) in enumerate(self.texts)
            }
            panel.mappings([ValueMap(options=options)])


TARGET = compliance_target()
# A share of deadlines met: red under the target, green at it.
COMPLIANCE = Scale(((None, "red"), (TARGET, "green")), max=1)
# A count or a time with no good or bad value of its own (open requests, busy workers).
NEUTRAL = Scale(((None, "blue"),))
# Requests past a deadline: each one is a deadline missed.
OVERDUE = Scale(((None, "green"), (1, "orange"), (10, "red")))
# Something that should be 0: a process down, a server error.
ZERO = Scale(((None, "green"), (1e-9, "red")))
UP = Scale(((None, "red"), (1, "green")), max=1, texts=(("0", "down", "red"), ("1", "up", "green")))


def backlog(metric: str, selector: str = "") -> str:
    """A backlog gauge taken once whatever the number of gateways reporting it."""
    return f"max without (instance, job) ({metric}{selector})"


def named(expr: str) -> str:
    """`expr`, by district, with each district's name beside its code (plaza_district_info, from
    the gateway's city; max: several gateways report the same)."""
    return (
        f"({expr}) * on (district) group_left (name) max by (district, name) (plaza_district_info)"
    )


def service_named(expr: str) -> str:
    """`expr`, by service code, with each service's name in the city's language
    (plaza_service_info, from the gateway's city): a legend shows "Enllumenat públic", not
    "streetlight"."""
    return (
        f"({expr}) * on (service_code) group_left (name) "
        "max by (service_code, name) (plaza_service_info)"
    )


def _targets(panel: Panel, queries: list[Query], *, instant: bool = False) -> Panel:
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)
        query = query.datasource(PROMETHEUS)
        panel.with_target(query.instant() if instant else query.range())
    return panel.datasource(PROMETHEUS)


def graph(
    title: str,
    description: str,
    unit: str,
    *queries: Query,
    scale: Scale | None = None,
    span: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    """A time series; with a `scale`, its range and its thresholds drawn as lines."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .span(span)
        .height(height)
        .fill_opacity(10)
        .legend(
            common.VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    if scale is not None:
        scale.apply(panel)
        panel.thresholds_style(
            common.GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.LINE)
        )
    _targets(panel, list(queries))
    return panel


def single(
    title: str,
    description: str,
    unit: str,
    query: Query,
    *,
    scale: Scale,
    span: int = 6,
    height: int = 4,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .span(span)
        .height(height)
        .graph_mode(BigValueGraphMode.AREA)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    scale.apply(panel)
    _targets(panel, [query])
    return panel


def bars(
    title: str,
    description: str,
    unit: str,
    query: Query,
    *,
    scale: Scale,
    span: int = 12,
    height: int = 8,
) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .span(span)
        .height(height)
        .display_mode(BarGaugeDisplayMode.GRADIENT)
        .orientation(VizOrientation.HORIZONTAL)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    scale.apply(panel)
    _targets(panel, [query], instant=True)
    return panel


def board(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh("1m")
        .time("now-24h", "now")
        .timezone("browser")
        .readonly()
    )


# Plaza's own processes (each service's job in deploy/prometheus), not Prometheus or others.
SERVICES = '{job=~"plaza-.*"}'


def known(expr: str) -> str:
    """`expr` without its NaN series: a quantile of a histogram with nothing in the window (its
    series exist from 0 at start) or a ratio of 0 to 0, which would show as an empty legend
    entry or, in topk, crowd out the services with figures."""
    return f"({expr}) >= 0"


# The p90 of a lifecycle histogram per service over the dashboard's range.
def slowest(metric: str, selector: str = "") -> str:
    return (
        "topk(10, "
        + known(
            f"histogram_quantile(0.9, sum by (service_code, le) "
            f"(increase({metric}_bucket{selector}[$__range])))"
        )
        + ")"
    )


def city_sla() -> dashboard.Dashboard:
    return (
        board(
            "plaza-city-sla",
            "City SLA overview",
            "How well each district keeps its SLAs, what is open and overdue, and which services "
            "are slowest.",
        )
        .with_row(dashboard.Row("SLA compliance"))
        .with_panel(
            single(
                "Compliance, last hour",
                "Share of deadlines (acknowledge and resolve) met among those due in the hour",
                "percentunit",
                ("city:plaza_sla_compliance:ratio1h", ""),
                scale=COMPLIANCE,
                span=8,
            )
        )
        .with_panel(
            single(
                "Compliance, last 24 h",
                f"Share of deadlines met among those due in the last day (target {TARGET:.0%})",
                "percentunit",
                ("city:plaza_sla_compliance:ratio24h", ""),
                scale=COMPLIANCE,
                span=8,
            )
        )
        .with_panel(
            single(
                "Compliance, last 7 days",
                "Share of deadlines met among those due in the last week",
                "percentunit",
                ("city:plaza_sla_compliance:ratio7d", ""),
                scale=COMPLIANCE,
                span=8,
            )
        )
        .with_panel(
            graph(
                "Compliance by district (24 h)",
                "Deadlines met among those due over the previous 24 h, district by district",
                "percentunit",
                (named("district:plaza_sla_compliance:ratio24h"), "{{district}} {{name}}"),
                scale=COMPLIANCE,
                span=16,
            )
        )
        .with_panel(
            bars(
                "Compliance by district (7 days)",
                "Deadlines met among those due over the last week",
                "percentunit",
                (named("district:plaza_sla_compliance:ratio7d"), "{{district}} {{name}}"),
                scale=COMPLIANCE,
                span=8,
            )
        )
        .with_row(dashboard.Row("Backlog"))
        .with_panel(
            graph(
                "Open requests by district",
                "Requests not yet resolved or closed (read from the database)",
                "short",
                (named("district:plaza_requests_open:sum"), "{{district}} {{name}}"),
            )
        )
        .with_panel(
            graph(
                "Overdue requests by district",
                "Open requests not acknowledged in time or not resolved in time, each once (the "
                "manager API's overdue); the District dashboard splits them by deadline",
                "short",
                (named("district:plaza_requests_overdue:sum"), "{{district}} {{name}}"),
            )
        )
        .with_panel(
            graph(
                "Open requests by queue",
                "Where the backlog waits: each district's queue, city-mobility, triage",
                "short",
                (f"sum by (queue) ({backlog('plaza_requests_open')})", "{{queue}}"),
            )
        )
        .with_panel(
            bars(
                "City-hall queue by district",
                "Open requests escalated to city hall after a missed deadline",
                "short",
                (
                    named("district:plaza_requests_escalated:sum"),
                    "{{district}} {{name}}",
                ),
                scale=OVERDUE,
            )
        )
        .with_panel(
            graph(
                "Requests opened and closed per hour",
                "Opened by the router; closed when resolved, marked duplicate or not the "
                "city's responsibility",
                "short",
                ("sum(increase(plaza_requests_created_total[1h]))", "opened"),
                ("sum(increase(plaza_requests_closed_total[1h]))", "closed"),
            )
        )
        .with_panel(
            graph(
                "Requests opened per hour by channel",
                "Where citizens' requests come from",
                "short",
                ("sum by (channel) (increase(plaza_requests_created_total[1h]))", "{{channel}}"),
            )
        )
        .with_row(dashboard.Row("Breaches and the slowest services"))
        .with_panel(
            graph(
                "SLA breaches per hour by district",
                "Deadlines missed, found by the SLA scanner or by a late action; each breached "
                "request is escalated to the city-hall queue",
                "short",
                (
                    named("sum by (district, deadline) (increase(plaza_sla_breaches_total[1h]))"),
                    "{{district}} {{name}} {{deadline}}",
                ),
            )
        )
        .with_panel(
            bars(
                "Compliance by service (24 h)",
                "Deadlines met among those due over the previous 24 h, service by service, "
                "city-wide (a service with no deadline due shows no bar)",
                "percentunit",
                (service_named("service_code:plaza_sla_compliance:ratio24h"), "{{name}}"),
                scale=COMPLIANCE,
            )
        )
        .with_panel(
            graph(
                "Compliance by deadline (24 h)",
                "Acknowledging in time and resolving in time, city-wide: which of the two the "
                "city misses",
                "percentunit",
                ("deadline:plaza_sla_compliance:ratio24h", "{{deadline}}"),
                scale=COMPLIANCE,
            )
        )
        .with_panel(
            bars(
                "Most breached services",
                "Deadlines missed over the dashboard's range, by service",
                "short",
                (
                    service_named(
                        "topk(10, sum by (service_code) "
                        "(increase(plaza_sla_breaches_total[$__range])))"
                    ),
                    "{{name}}",
                ),
                scale=OVERDUE,
            )
        )
        .with_panel(
            bars(
                "Slowest services to acknowledge (p90)",
                "90% of the requests of each service were acknowledged within this time",
                "s",
                (service_named(slowest("plaza_request_time_to_acknowledge_seconds")), "{{name}}"),
                scale=NEUTRAL,
            )
        )
        .with_panel(
            bars(
                "Slowest services to resolve (p90)",
                "90% of the requests of each service were resolved within this time",
                "s",
                (service_named(slowest("plaza_request_time_to_resolve_seconds")), "{{name}}"),
                scale=NEUTRAL,
            )
        )
    )


def district() -> dashboard.Dashboard:
    d = '{district="$district"}'
    return (
        board(
            "plaza-district",
            "District",
            "One district's queue: what is open and overdue, how old it is, who works on it, "
            "and how fast it is answered.",
        )
        .with_variable(
            dashboard.QueryVariable("district")
            .label("District")
            .datasource(PROMETHEUS)
            # Every district, with open requests or not: the gateway counts deadlines met for
            # each from 0.
            .query("label_values(plaza_sla_met_total, district)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )
        .with_row(dashboard.Row("Queue of $district"))
        .with_panel(
            single(
                "Open requests",
                "Requests of the district not yet resolved or closed",
                "short",
                (f"sum({backlog('plaza_requests_open', d)}) or vector(0)", ""),
                scale=NEUTRAL,
            )
        )
        .with_panel(
            single(
                "Overdue",
                "Open requests not acknowledged in time or not resolved in time, each once (the "
                "manager API's overdue)",
                "short",
                (f"sum({backlog('plaza_requests_past_due', d)}) or vector(0)", ""),
                scale=OVERDUE,
            )
        )
        .with_panel(
            single(
                "Compliance, last 24 h",
                f"Deadlines met among those due in the last day (target {TARGET:.0%})",
                "percentunit",
                (f"district:plaza_sla_compliance:ratio24h{d}", ""),
                scale=COMPLIANCE,
            )
        )
        .with_panel(
            single(
                "Workers busy",
                "Workers with at least one open request assigned",
                "short",
                (f"sum({backlog('plaza_workers_busy', d)}) or vector(0)", ""),
                scale=NEUTRAL,
            )
        )
        .with_panel(
            graph(
                "Open requests by status",
                "new and transferred wait for a manager; acknowledged, assigned and "
                "in_progress are being worked on",
                "short",
                (f"sum by (status) ({backlog('plaza_requests_open', d)})", "{{status}}"),
            )
        )
        .with_panel(
            bars(
                "Open requests by service",
                "The district's queue, by service",
                "short",
                (
                    service_named(f"sum by (service_code) ({backlog('plaza_requests_open', d)})"),
                    "{{name}}",
                ),
                scale=NEUTRAL,
            )
        )
        .with_row(dashboard.Row("Request ages and workers"))
        .with_panel(
            graph(
                "Age of the open requests",
                "How long open requests have waited: half of them less than the median, 90% "
                "less than the p90",
                "s",
                (
                    "histogram_quantile(0.5, sum by (le) "
                    f"({backlog('plaza_requests_open_age_seconds_bucket', d)}))",
                    "median",
                ),
                (
                    "histogram_quantile(0.9, sum by (le) "
                    f"({backlog('plaza_requests_open_age_seconds_bucket', d)}))",
                    "p90",
                ),
            )
        )
        .with_panel(
            graph(
                "Overdue by deadline",
                "Not acknowledged past ack_due_at, or unresolved past expected_datetime (a "
                "request late on both is in each line)",
                "short",
                (f"sum by (deadline) ({backlog('plaza_requests_overdue', d)})", "{{deadline}}"),
            )
        )
        .with_panel(
            graph(
                "Workers busy",
                "Workers with at least one open request assigned",
                "short",
                (f"sum({backlog('plaza_workers_busy', d)})", "workers"),
            )
        )
        .with_panel(
            graph(
                "Time to acknowledge, assign and resolve (median, last hour)",
                "From the citizen's report to each step, for the requests that reached it",
                "s",
                *(
                    (
                        known(
                            "histogram_quantile(0.5, sum by (le) "
                            f"(increase(plaza_request_time_to_{step}_seconds_bucket{d}[1h])))"
                        ),
                        step,
                    )
                    for step in ("acknowledge", "assign", "resolve")
                ),
            )
        )
        .with_row(dashboard.Row("Services and breaches"))
        .with_panel(
            bars(
                "Slowest services to resolve (p90)",
                "90% of the district's requests of each service were resolved within this time",
                "s",
                (service_named(slowest("plaza_request_time_to_resolve_seconds", d)), "{{name}}"),
                scale=NEUTRAL,
            )
        )
        .with_panel(
            graph(
                "SLA breaches per hour by service",
                "Deadlines the district missed, by service and deadline",
                "short",
                (
                    service_named(
                        "sum by (service_code, deadline) "
                        f"(increase(plaza_sla_breaches_total{d}[1h]))"
                    ),
                    "{{name}} {{deadline}}",
                ),
            )
        )
    )


def pipeline() -> dashboard.Dashboard:
    return (
        board(
            "plaza-pipeline",
            "Pipeline health",
            "Posts through ingest, classifier, router and notifier: throughput and latency per "
            "stage, consumer lag, dead letters, replies and the outbox.",
        )
        .with_row(dashboard.Row("Stages"))
        .with_panel(
            single(
                "Services down",
                "Plaza processes not answering Prometheus's scrapes (PlazaServiceDown fires "
                "after 2 min)",
                "short",
                ('count(up{job=~"plaza-.*"} == 0) or vector(0)', ""),
                scale=ZERO,
                span=4,
            )
        )
        .with_panel(
            single(
                "PostgreSQL readable",
                "1 when every gateway read the backlog from the database at its last scrape; the "
                "PlazaDatabaseDown alert fires after a minute at 0",
                "short",
                ("min(plaza_database_up)", ""),
                scale=UP,
                span=4,
            )
        )
        .with_panel(
            graph(
                "Targets up by service",
                "1 when the process answers its /metrics",
                "short",
                ('up{job=~"plaza-.*"}', "{{job}} {{instance}}"),
                span=16,
                height=4,
            )
        )
        .with_panel(
            graph(
                "Throughput by stage",
                "Posts received by ingest's webhook and Open311 (replays and streams skip it), "
                "classified, routed, and replies posted, per second",
                "ops",
                (
                    "sum by (stage) "
                    "(rate(plaza_pipeline_stage_latency_seconds_count[$__rate_interval]))",
                    "{{stage}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Latency by stage (p95)",
                "received: from the post on its platform to ingest's webhook or Open311 (a post "
                "dated hours back reads as over 1 h); classified, routed, replied: from the "
                "previous stage's event to the end of this stage",
                "s",
                ("stage:plaza_pipeline_stage_latency_seconds:p95_rate5m", "{{stage}}"),
            )
        )
        .with_panel(
            graph(
                "Handler time by consumer group (p95)",
                "Time a handler takes for one record, retries included",
                "s",
                (
                    known(
                        "histogram_quantile(0.95, sum by (group, le) "
                        "(rate(plaza_bus_handler_duration_seconds_bucket[$__rate_interval])))"
                    ),
                    "{{group}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Records handled by consumer group",
                "processed, or dead_lettered, per second",
                "ops",
                (
                    "sum by (group, outcome) "
                    "(rate(plaza_bus_messages_consumed_total[$__rate_interval]))",
                    "{{group}} {{outcome}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Records published by topic",
                "Events the workers and ingest published and Kafka acknowledged, per second: a "
                "topic that stops while posts come in is where the pipeline stopped",
                "ops",
                (
                    "sum by (topic) (rate(plaza_bus_messages_published_total[$__rate_interval]))",
                    "{{topic}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Inbox rows pruned",
                "Rows of processed_events (the consumers' record of what they applied) deleted "
                "by the SLA scanner in the hour, as older than any redelivery; flat at 0 while "
                "posts come in means the table only grows: look at the router's log",
                "short",
                ("sum(increase(plaza_inbox_pruned_total[1h]))", "pruned"),
            )
        )
        .with_row(dashboard.Row("Lag, retries and dead letters"))
        .with_panel(
            graph(
                "Consumer lag by group and topic",
                "Records a group has not committed, read from the broker by the gateway (there "
                "when every member is down); the PlazaConsumerLagHigh alert fires over 1000",
                "short",
                ("group_topic:plaza_bus_consumer_lag_records:sum", "{{group}} {{topic}}"),
            )
        )
        .with_panel(
            graph(
                "Consumer lag by partition",
                "A partition that keeps growing while the others drain is stuck behind one record",
                "short",
                (
                    "sum by (group, topic, partition) "
                    f"({backlog('plaza_bus_group_lag_records')})"
                    " or sum by (group, topic, partition) (plaza_bus_consumer_lag_records)",
                    "{{group}} {{topic}}/{{partition}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Dead letters (last 15 min)",
                "Records sent to <topic>.dlq; their reason is in the plaza-dlq-reason header",
                "short",
                ("group_topic:plaza_bus_dead_letters:increase15m", "{{group}} {{topic}}"),
            )
        )
        .with_panel(
            graph(
                "Handler retries",
                "Failed attempts retried: transient (database or broker away; the "
                "PlazaHandlersRetrying alert fires when they go on for 5 min) or error",
                "ops",
                (
                    "sum by (group, kind) "
                    "(rate(plaza_bus_handler_retries_total[$__rate_interval]))",
                    "{{group}} {{kind}}",
                ),
            )
        )
        .with_row(dashboard.Row("Replies and the outbox"))
        .with_panel(
            graph(
                "Replies by platform",
                "Public replies posted, and attempts that failed, per second",
                "ops",
                (
                    "sum by (platform) (rate(plaza_replies_posted_total[$__rate_interval]))",
                    "{{platform}} posted",
                ),
                (
                    "sum by (platform, reason) "
                    "(rate(plaza_replies_failed_total[$__rate_interval]))",
                    "{{platform}} failed ({{reason}})",
                ),
            )
        )
        .with_panel(
            graph(
                "Reply failure ratio",
                "Failed attempts among all; the PlazaNotifierFailing alert fires over 10%",
                "percentunit",
                ("platform:plaza_replies_failed:ratio_rate10m", "{{platform}}"),
            )
        )
        .with_panel(
            graph(
                "Replies given up on (last 15 min)",
                "Replies refused, or failed too many times: the citizen has no answer until a "
                "manager retries them (GET /api/v1/replies?state=failed, or the console's "
                "Replies page); PlazaRepliesDeadLettered fires above 0",
                "short",
                (
                    "sum by (platform) (increase(plaza_replies_dead_lettered_total[15m]))",
                    "{{platform}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Replies held back by platforms",
                "Times a platform asked the notifier to wait (a 429, or its rate-limit budget "
                "spent), per second: replies go out later, none is lost; steady waits mean the "
                "account's tier is too small for the city's volume",
                "ops",
                (
                    "sum by (platform) (rate(plaza_replies_rate_limited_total[$__rate_interval]))",
                    "{{platform}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Resolution photos left out (last hour)",
                "Replies posted without the worker's photo, by reason: address (not public, or no "
                "such host), redirects, status (4xx), type (not an image), size, url; fix the "
                "photo's link where the workers post them",
                "short",
                (
                    "sum by (platform, reason) (increase(plaza_reply_photos_refused_total[1h]))",
                    "{{platform}} {{reason}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Outbox published by topic",
                "Events the relay moved from the outbox to Kafka, per second",
                "ops",
                (
                    "sum by (topic) (rate(plaza_outbox_published_total[$__rate_interval]))",
                    "{{topic}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Oldest unpublished outbox event",
                "Read from the database by the gateway: zero when the relay keeps up, growing when "
                "it is down or stuck (the PlazaOutboxStuck alert fires over 2 min for 5 min)",
                "s",
                ("max(plaza_outbox_oldest_pending_seconds)", "oldest pending"),
            )
        )
        .with_row(dashboard.Row("Social channels"))
        .with_panel(
            graph(
                "Posts from connectors by platform",
                "Posts the streaming connectors (Mastodon, Bluesky, X) published to the bus, per "
                "second; flat at 0 on a platform where citizens post means its connector is down "
                "or its token was refused (ingest's log says which)",
                "ops",
                (
                    "sum by (platform) (rate(plaza_connector_posts_total[$__rate_interval]))",
                    "{{platform}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Connector reconnects (last hour)",
                "Times a connector lost its stream, or could not open it, and connected again; a "
                "steady climb is a platform or a network that keeps dropping Plaza",
                "short",
                (
                    "sum by (platform) (increase(plaza_connector_reconnects_total[1h]))",
                    "{{platform}}",
                ),
            )
        )
        .with_row(dashboard.Row("Withdrawn posts"))
        .with_panel(
            graph(
                "Deletions seen by connectors",
                "Posts Plaza holds whose deletion a connector saw on its stream and handed on "
                "(post-withdrawn), per second",
                "ops",
                (
                    "sum by (platform) (rate(plaza_connector_deletions_total[$__rate_interval]))",
                    "{{platform}}",
                ),
            )
        )
        .with_panel(
            graph(
                "X compliance events by action (last 4 h)",
                "What X's compliance jobs reported on posts Plaza holds: delete, deactivate, "
                "protect, suspend and drop withdraw the post; scrub_geo (the author took the "
                "location off) withdraws its point only",
                "short",
                (
                    "sum by (action) (increase(plaza_x_compliance_actions_total[4h]))",
                    "{{action}}",
                ),
            )
        )
        .with_panel(
            graph(
                "X compliance rounds by outcome",
                "Ingest's checks of the X posts Plaza holds, in the hour; PlazaXComplianceFailing "
                "fires when rounds fail and none completes for 8 h (deleted posts stay published)",
                "short",
                (
                    "sum by (outcome) (increase(plaza_x_compliance_rounds_total[1h]))",
                    "{{outcome}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Posts withdrawn by platform",
                "Posts their authors deleted (or X's compliance check reported), taken out of "
                "Open311 and the manager API, per second; and posts whose location only went "
                "(X's scrub_geo), their point taken out",
                "ops",
                (
                    "sum by (platform) (rate(plaza_posts_withdrawn_total[$__rate_interval]))",
                    "{{platform}}",
                ),
                (
                    "sum by (platform) "
                    "(rate(plaza_post_locations_withdrawn_total[$__rate_interval]))",
                    "{{platform}}: location only",
                ),
            )
        )
        .with_row(dashboard.Row("Resources"))
        .with_panel(
            graph(
                "CPU by service",
                "CPU seconds a second each service's processes use (1 is a whole core); "
                "PostgreSQL and Kafka are not in it. A service near its cores' worth is the "
                "pipeline's bottleneck: give it another process (classifiers, routers) or a core",
                "short",
                (
                    f"sum by (job) (rate(process_cpu_seconds_total{SERVICES}[$__rate_interval]))",
                    "{{job}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Resident memory by service",
                "The largest process of each service; `make bench` holds each to 150 MB in steady "
                "state, so one that keeps growing is leaking",
                "bytes",
                (f"max by (job) (process_resident_memory_bytes{SERVICES})", "{{job}}"),
            )
        )
        .with_panel(
            graph(
                "Services' CPU per post routed",
                "The services' CPU seconds over the last 5 minutes divided by the posts routed in "
                "them (PostgreSQL and Kafka not included): the cores needed for a rate of posts "
                "are that rate times this. Higher at a trickle, when every batch holds few posts",
                "s",
                (
                    known(
                        f"sum(rate(process_cpu_seconds_total{SERVICES}[5m])) / sum("
                        'rate(plaza_pipeline_stage_latency_seconds_count{stage="routed"}[5m]))'
                    ),
                    "per post",
                ),
                span=24,
            )
        )
    )


def open_api() -> dashboard.Dashboard:
    # Prometheus's own scrapes and the health checks are not anyone's use of the API.
    api = 'app="api",route!~"/metrics|/healthz"'
    return (
        board(
            "plaza-open-api",
            "Open API",
            "The gateway as civic developers and managers use it: Open311, the manager API "
            "and posts; rate, errors and duration by endpoint.",
        )
        .with_row(dashboard.Row("Traffic"))
        .with_panel(
            single(
                "Requests per second",
                "All of the gateway's endpoints but /metrics and /healthz",
                "reqps",
                (
                    f"sum(rate(plaza_http_requests_total{{{api}}}[$__rate_interval])) or vector(0)",
                    "",
                ),
                scale=NEUTRAL,
                span=8,
            )
        )
        .with_panel(
            single(
                "Errors (5xx) per second",
                "Answers that are the gateway's fault",
                "reqps",
                (
                    f'sum(rate(plaza_http_requests_total{{{api},status=~"5.."}}[$__rate_interval]))'
                    " or vector(0)",
                    "",
                ),
                scale=ZERO,
                span=8,
            )
        )
        .with_panel(
            single(
                "Posts accepted per second",
                "Posts that ingest put on the bus (202)",
                "reqps",
                (
                    'sum(rate(plaza_http_requests_total{app="ingest",route="/api/v1/posts",'
                    'status="202"}[$__rate_interval])) or vector(0)',
                    "",
                ),
                scale=NEUTRAL,
                span=8,
            )
        )
        .with_panel(
            graph(
                "Requests per second by endpoint",
                "By route template, never by raw path",
                "reqps",
                (
                    "sum by (route, method) "
                    f"(rate(plaza_http_requests_total{{{api}}}[$__rate_interval]))",
                    "{{method}} {{route}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Open311 requests per second by endpoint",
                "GeoReport v2 clients",
                "reqps",
                (
                    "sum by (route) (rate(plaza_http_requests_total"
                    f'{{{api},route=~"/open311/.*"}}[$__rate_interval]))',
                    "{{route}}",
                ),
            )
        )
        .with_row(dashboard.Row("Errors and duration"))
        .with_panel(
            graph(
                "Client and server errors by endpoint",
                "4xx (a bad request, a missing request) and 5xx answers per second",
                "reqps",
                (
                    "sum by (route, status) (rate(plaza_http_requests_total"
                    f'{{{api},status=~"4..|5.."}}[$__rate_interval]))',
                    "{{route}} {{status}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Server error ratio by endpoint",
                "5xx among all answers of the endpoint",
                "percentunit",
                (
                    "(sum by (route) (rate(plaza_http_requests_total"
                    f'{{{api},status=~"5.."}}[$__rate_interval]))'
                    " or sum by (route) (rate(plaza_http_requests_total"
                    f"{{{api}}}[$__rate_interval])) * 0)"
                    " / (sum by (route) (rate(plaza_http_requests_total"
                    f"{{{api}}}[$__rate_interval])) > 0)",
                    "{{route}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Duration by endpoint (p95)",
                "95% of the requests to each endpoint were answered within this time",
                "s",
                (
                    known(
                        "histogram_quantile(0.95, sum by (route, le) (rate("
                        f"plaza_http_request_duration_seconds_bucket{{{api}}}[$__rate_interval])))"
                    ),
                    "{{route}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Duration by endpoint (median)",
                "Half of the requests to each endpoint were answered within this time",
                "s",
                (
                    known(
                        "histogram_quantile(0.5, sum by (route, le) (rate("
                        f"plaza_http_request_duration_seconds_bucket{{{api}}}[$__rate_interval])))"
                    ),
                    "{{route}}",
                ),
            )
        )
    )


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "city-sla.json": city_sla,
    "district.json": district,
    "pipeline.json": pipeline,
    "open-api.json": open_api,
}


def _number_panels(panels: list[dict[str, object]]) -> Iterator[dict[str, object]]:
    for number, panel in enumerate(panels, start=1):
        yield {**panel, "id": number}


def render() -> dict[str, str]:
    """Each dashboard's file name and JSON text, as committed."""
    out = {}
    for name, build in DASHBOARDS.items():
        model = json.loads(json.dumps(build().build(), cls=JSONEncoder))
        model["panels"] = list(_number_panels(model["panels"]))
        out[name] = json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


def main() -> None:
    OUT.mkdir(exist_ok=True)
    rendered = render()
    for stale in {p.name for p in OUT.glob("*.json")} - rendered.keys():
        (OUT / stale).unlink()
    for name, text in rendered.items():
        (OUT / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(rendered)} dashboards to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
