"""A real Prometheus for the tests (Debian's `prometheus` package, installed by .ci/run): our own
instance on a free port with a temporary storage directory, and the queries the tests ask it."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from tests.infra import ROOT, free_port

DEPLOY = ROOT / "deploy" / "prometheus"
RULE_FILES = (DEPLOY / "rules" / "recording.yml", DEPLOY / "rules" / "alerts.yml")
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"


def binary(name: str) -> str:
    """`prometheus` or `promtool`; a missing one fails the test that needs it, loudly."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else "")
    if not found:
        raise AssertionError(
            f"{name} not found: install Debian's prometheus package "
            "(apt-get install prometheus; .ci/run does)"
        )
    return found


def scrape_config(
    targets: dict[str, str], token_file: Path, interval: str = "1s"
) -> dict[str, object]:
    """deploy/prometheus/prometheus.yml with each job's target replaced by this run's port and
    its bearer token's file by this run's (the committed one is PLAZA_HOME's, up.sh's). Every
    job of the committed file must get a target, so the file covers every service, and must
    send the token, as each service asks for it."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert sorted(jobs) == sorted(targets), f"jobs {jobs} vs the services started {list(targets)}"
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        assert "credentials_file" in job.get("authorization", {}), f"{job['job_name']}: no token"
        job["authorization"] = {"credentials_file": str(token_file)}
    config["global"] = {"scrape_interval": interval, "evaluation_interval": interval}
    config["rule_files"] = [str(p) for p in RULE_FILES]
    return config


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    errors: list[str] = field(default_factory=list)

    def query(self, expr: str) -> list[dict[str, object]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body.get("status") == "success", f"{expr}: {body}"
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def rules(self) -> list[dict[str, object]]:
        body = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict[str, object]]:
        body = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()
        active: list[dict[str, object]] = body["data"]["activeTargets"]
        return active

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_prometheus(config: dict[str, object], directory: Path) -> Prometheus:
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log_path = directory / "prometheus.log"
    proc = subprocess.Popen(
        [
            binary("prometheus"),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited at start-up:\n{prometheus.log()}")
        try:
            if httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200:
                return prometheus
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    prometheus.stop()
    raise AssertionError(f"prometheus was not ready within 30 s:\n{prometheus.log()}")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str
    legend: str

    def labels(self) -> set[str]:
        """The labels its legend shows, which each of its series must carry."""
        return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", self.legend))


def panel_queries() -> list[PanelQuery]:
    """Every query of every committed dashboard."""
    import json

    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        model = json.loads(path.read_text())
        for panel in model["panels"]:
            for target in panel.get("targets", []):
                found.append(
                    PanelQuery(
                        model["title"],
                        panel["title"],
                        target["expr"],
                        target.get("legendFormat", ""),
                    )
                )
    return found


# The labels a recording rule's level stands for (level:metric:operation).
_LEVEL_LABELS = ("service_code", "district", "deadline", "group", "topic", "partition", "stage")
_LEVEL_LABELS += ("platform",)


def level_labels(record: str) -> set[str]:
    """`district:...` keeps district, `group_topic:...` group and topic, `city:...` nothing."""
    level = record.split(":")[0]
    if level == "city":
        return set()
    labels, rest = set(), level
    while rest:
        name = next((n for n in _LEVEL_LABELS if rest == n or rest.startswith(n + "_")), None)
        assert name is not None, f"recording rule {record}: unknown level {level!r}"
        labels.add(name)
        rest = rest[len(name) + 1 :]
    return labels


def recording_rules() -> list[str]:
    names = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names += [rule["record"] for rule in group["rules"] if "record" in rule]
    return names
