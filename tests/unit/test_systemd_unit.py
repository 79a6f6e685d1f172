"""deploy/systemd/plaza.service, the unit a town's PC starts Plaza with: systemd finds nothing
to warn about in it, and it stops Plaza the way Ctrl-C does (SIGTERM to `plaza run` itself, with
time to drain the bus), not by killing make, uv and PostgreSQL all at once."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

from plaza.settings import SETTINGS
from plaza_cli.embedded import EmbeddedSettings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "plaza.service"
INSTALLED_AT = "/opt/plaza/plaza"


def service_section() -> dict[str, list[str]]:
    """The [Service] section, each key with every value it is given (Environment= repeats)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_systemd_analyze_verifies_the_unit_without_a_warning(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian's systemd package)"
    # As installed: the clone where the unit expects it (here, this one).
    unit = tmp_path / "plaza.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_AT, str(ROOT)))
    checked = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == checked.stdout == "", checked.stderr + checked.stdout


def test_the_unit_stops_plaza_as_ctrl_c_does() -> None:
    service = service_section()
    [start] = service["ExecStart"]
    [workdir] = service["WorkingDirectory"]
    # Plaza itself is the main process: `make run` would take SIGTERM for make, and the rest of
    # the group (uv, PostgreSQL) would be sent it at the same moment as Plaza.
    assert start == f"{workdir}/.venv/bin/plaza run"
    assert service["KillMode"] == ["mixed"]
    assert service["KillSignal"] == ["SIGTERM"]
    drain = EmbeddedSettings.model_fields["drain_seconds"].default
    assert float(service["TimeoutStopSec"][0]) >= drain + 30
    assert service["Restart"] == ["on-failure"]
    environment = dict(value.split("=", 1) for value in service["Environment"])
    assert not set(environment) - SETTINGS - {"XDG_RUNTIME_DIR"}
    assert (ROOT / environment["PLAZA_CITY_CONFIG"]).is_file()
    assert service["User"] != ["root"]


def test_the_unit_starts_with_the_machine() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(UNIT.read_text())
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]
