"""Every alert reads well when it fires: its value formatted (PlazaBacklogGrowing said "grew by
48.17147170868348 requests"), and the dashboard to open named."""

from __future__ import annotations

import json
import re

import yaml

from tests.prometheus import DASHBOARDS, DEPLOY, RULE_FILES


def alerts() -> list[dict[str, object]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_every_value_in_an_annotation_is_formatted() -> None:
    for rule in alerts():
        for name, text in rule["annotations"].items():  # type: ignore[attr-defined]
            for use in re.findall(r"\{\{[^}]*\$value[^}]*\}\}", text):
                assert "|" in use, f"{rule['alert']} {name}: {use} prints a raw float"


def test_every_alert_names_a_dashboard_that_exists() -> None:
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS.glob("*.json")}
    for rule in alerts():
        dashboard = rule["annotations"].get("dashboard", "")  # type: ignore[attr-defined]
        found = re.fullmatch(r"/d/([\w-]+)(\?.*)?", dashboard)
        assert found and found[1] in uids, f"{rule['alert']}: dashboard {dashboard!r}"


def test_a_metric_an_alert_tells_to_look_at_is_on_the_dashboard_it_links() -> None:
    """PlazaXComplianceFailing said to see plaza_x_compliance_rounds_total by outcome, and linked
    the pipeline dashboard, which had no panel of it."""
    boards = {json.loads(p.read_text())["uid"]: p.read_text() for p in DASHBOARDS.glob("*.json")}
    told = 0
    for rule in alerts():
        annotations: dict[str, str] = rule["annotations"]  # type: ignore[assignment]
        found = re.fullmatch(r"/d/([\w-]+)(\?.*)?", annotations["dashboard"])
        assert found is not None, rule["alert"]
        for name in {"summary", "description"} & set(annotations):
            for metric in re.findall(r"\bplaza_\w+_total\b", annotations[name]):
                told += 1
                assert metric in boards[found[1]], f"{rule['alert']}: {metric} not on {found[1]}"
    assert told


def test_the_compliance_alerts_want_some_volume_first() -> None:
    """One breach out of one deadline is 0%: not a trend to wake city hall for. (X's compliance
    rounds are another compliance: with X's terms.)"""
    compliance = [r for r in alerts() if "sla_compliance" in str(r["expr"])]
    assert {r["alert"] for r in compliance} == {
        "PlazaSlaComplianceBelowTarget",
        "PlazaCityComplianceBelowTarget",
    }
    assert all(">= 10" in str(r["expr"]) for r in compliance)


def test_make_runs_prometheus_scrapes_its_one_process_with_the_same_rules() -> None:
    """`make run` is one process whose gateway serves every service's metrics: the README gave
    only prometheus.yml (make up's six targets), whose five absent ones made PlazaServiceDown
    fire for good on a town's machine."""
    distributed = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    embedded = yaml.safe_load((DEPLOY / "prometheus-embedded.yml").read_text())
    assert embedded["rule_files"] == distributed["rule_files"]
    assert embedded["global"] == distributed["global"]
    [job] = embedded["scrape_configs"]
    api = next(j for j in distributed["scrape_configs"] if j["job_name"] == "plaza-api")
    # the same job name, which the rules and dashboards select on; make run sets no metrics
    # token of its own (make up does), so the embedded job scrapes without one
    assert "authorization" in api and "authorization" not in job
    assert job == {k: v for k, v in api.items() if k != "authorization"}
