"""The committed Grafana dashboards are what deploy/grafana/generate.py makes, and hold together."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType

from tests.infra import ROOT
from tests.prometheus import DASHBOARDS, level_labels, panel_queries, recording_rules


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "plaza_dashboards", ROOT / "deploy" / "grafana" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
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
        f"{level}:plaza_sla_compliance:ratio{w}"
        for level in ("district", "city")
        for w in ("1h", "24h", "7d")
    )
