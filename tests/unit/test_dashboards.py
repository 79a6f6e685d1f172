"""The committed Grafana dashboards are what deploy/grafana/generate.py makes, and hold together."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from types import ModuleType

import yaml

from tests.infra import ROOT
from tests.prometheus import DASHBOARDS, level_labels, panel_queries, recording_rules


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "plaza_dashboards", ROOT / "deploy" / "grafana" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where its dataclasses look their annotations up
    spec.loader.exec_module(module)
    return module


def test_regenerating_gives_the_committed_json() -> None:
    rendered: dict[str, str] = generator().render()
    committed = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS.glob("*.json")}
    assert sorted(rendered) == sorted(committed), "run `make dashboards`"
    for name, text in rendered.items():
        assert text == committed[name], f"{name} differs from generate.py: run `make dashboards`"


def test_the_four_dashboards_and_their_panels() -> None:
    models = [json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))]
    assert sorted(m["title"] for m in models) == [
        "City SLA overview",
        "District",
        "Open API",
        "Pipeline health",
    ]
    assert len({m["uid"] for m in models}) == 4
    for model in models:
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids)), model["title"]
        for panel in model["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}
            assert panel["targets"], f"{model['title']} / {panel['title']} has no query"
    [district] = [m for m in models if m["title"] == "District"]
    assert [v["name"] for v in district["templating"]["list"]] == ["district"]
    district_queries = [q for q in panel_queries() if q.dashboard == "District"]
    assert all("$district" in q.expr for q in district_queries)


def test_recording_rule_names_say_which_labels_they_keep() -> None:
    assert level_labels("district:plaza_sla_compliance:ratio24h") == {"district"}
    assert level_labels("group_topic:plaza_bus_consumer_lag_records:sum") == {"group", "topic"}
    assert level_labels("city:plaza_sla_compliance:ratio7d") == set()
    compliance = [r for r in recording_rules() if ":plaza_sla_compliance:" in r]
    assert sorted(compliance) == sorted(
        [
            *(
                f"{level}:plaza_sla_compliance:ratio{w}"
                for level in ("district", "city")
                for w in ("1h", "24h", "7d")
            ),
            "service_code:plaza_sla_compliance:ratio24h",
            "deadline:plaza_sla_compliance:ratio24h",
        ]
    )
    assert level_labels("service_code:plaza_sla_compliance:ratio24h") == {"service_code"}


def _panels(kinds: tuple[str, ...]) -> list[tuple[str, dict[str, object]]]:
    return [
        (f"{model['title']} / {panel['title']}", panel)
        for model in (json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json")))
        for panel in model["panels"]
        if panel["type"] in kinds
    ]


def _defaults(panel: dict[str, object]) -> dict[str, object]:
    return panel["fieldConfig"]["defaults"]  # type: ignore[index,no-any-return]


def test_every_stat_and_bar_gauge_says_what_is_good_and_bad() -> None:
    """Grafana's defaults coloured a 9% compliance green, stretched the 7-day bar gauge to its
    data (the worst district an empty bar) and showed a green 0 for PostgreSQL down."""
    target = generator().compliance_target()
    for where, panel in _panels(("stat", "bargauge")):
        defaults = _defaults(panel)
        steps = defaults.get("thresholds", {}).get("steps")  # type: ignore[attr-defined]
        assert steps and steps[0]["value"] is None, f"{where}: no thresholds"
        assert defaults.get("min") == 0, f"{where}: no min"
        assert defaults.get("unit"), f"{where}: no unit"
        if defaults["unit"] == "percentunit":
            assert defaults.get("max") == 1, f"{where}: a share without max 1"
        if "compliance" in str(panel["targets"]):
            colours = [(s["value"], s["color"]) for s in steps]
            assert colours == [(None, "red"), (target, "green")], where
    compliance_graphs = [  # the SLA's (X's compliance rounds are a count)
        (where, panel)
        for where, panel in _panels(("timeseries",))
        if "sla_compliance" in str(panel["targets"])
    ]
    assert compliance_graphs
    for where, panel in compliance_graphs:
        assert (_defaults(panel)["min"], _defaults(panel)["max"]) == (0, 1), where
    [(_, database)] = [(w, p) for w, p in _panels(("stat",)) if p["title"] == "PostgreSQL readable"]
    [mapping] = _defaults(database)["mappings"]  # type: ignore[misc]
    assert {v: (m["text"], m["color"]) for v, m in mapping["options"].items()} == {
        "0": ("down", "red"),
        "1": ("up", "green"),
    }


def test_the_compliance_target_is_the_sla_alert_s() -> None:
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/rules/alerts.yml").read_text())
    # the SLA's compliance (X's compliance rounds are another: PlazaXComplianceFailing)
    exprs = [
        r["expr"] for g in alerts["groups"] for r in g["rules"] if "sla_compliance" in r["expr"]
    ]
    target = generator().compliance_target()
    assert target == 0.9
    assert exprs and all(f"< {target}" in e for e in exprs), exprs


def test_the_overdue_figures_count_each_request_once() -> None:
    """District 03's Overdue stat showed 22 where 19 requests were overdue: it added the
    acknowledge and the resolve deadline's counts."""
    overdue = [q for q in panel_queries() if "overdue" in q.panel.lower()]
    assert overdue
    for query in overdue:
        once = "plaza_requests_past_due" in query.expr or ":plaza_requests_overdue:" in query.expr
        assert once or "by (deadline)" in query.expr, f"{query.panel}: {query.expr}"
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/recording.yml").read_text())
    [expr] = [
        r["expr"]
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("record") == "district:plaza_requests_overdue:sum"
    ]
    assert "plaza_requests_past_due" in expr


def test_the_api_s_traffic_leaves_out_prometheus_s_scrapes() -> None:
    api = [q for q in panel_queries() if q.dashboard == "Open API" and 'app="api"' in q.expr]
    assert api
    assert all('route!~"/metrics|/healthz"' in q.expr for q in api), api


def test_services_are_named_in_the_city_s_language() -> None:
    """The council read "streetlight" and "street_furniture" where Barcelona says "Enllumenat
    públic" and "Mobiliari urbà": every panel by service joins the gateway's plaza_service_info."""
    by_service = [q for q in panel_queries() if re.search(r"by \([^)]*service_code", q.expr)]
    assert len(by_service) >= 7
    for query in by_service:
        where = f"{query.dashboard} / {query.panel}"
        assert "group_left (name) max by (service_code, name) (plaza_service_info)" in query.expr, (
            where
        )
        assert "{{name}}" in query.legend and "{{service_code}}" not in query.legend, where


# A metric is defined as a string literal holding its name followed by its help text: a
# prometheus_client Counter/Gauge/Histogram, or a custom collector's metric family.
_METRIC_DEFINITION = re.compile(r'"(plaza_[a-z0-9_]+)",\s*(?:\n\s*)?(?:f?"|\()')

# Metrics city hall reads elsewhere than on a panel, and why.
NOT_ON_A_PANEL = {
    # labels only (the city's, each district's, each service's names), joined into other
    # queries and alert texts
    "plaza_city_info",
    "plaza_district_info",
    "plaza_service_info",
}


def defined_metrics() -> set[str]:
    names: set[str] = set()
    for tree in ("lib", "services", "cli"):
        for source in (ROOT / tree).rglob("*.py"):
            names.update(_METRIC_DEFINITION.findall(source.read_text(encoding="utf-8")))
    return names


def test_every_metric_plaza_exports_is_on_a_dashboard() -> None:
    """City hall and its operators see every figure the services count, on a panel or through
    a recording rule a panel shows; a metric added without a panel fails here."""
    defined = defined_metrics()
    # the definitions are found (a change of style would find none and pass vacuously)
    assert {"plaza_requests_open", "plaza_sla_met_total", "plaza_city_info"} <= defined
    shown = " ".join(p.read_text(encoding="utf-8") for p in DASHBOARDS.glob("*.json"))
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/recording.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["record"] in shown:
                shown += " " + rule["expr"]
    missing = sorted(
        name
        for name in defined - NOT_ON_A_PANEL
        if not re.search(rf"\b{name}(_bucket|_count|_sum)?\b", shown)
    )
    assert not missing, f"on no dashboard (add a panel in deploy/grafana/generate.py): {missing}"
