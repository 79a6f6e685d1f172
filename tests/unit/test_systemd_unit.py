"""deploy/systemd/, the units a town's PC runs Plaza with: systemd finds nothing to warn about in
them; plaza.service stops Plaza the way Ctrl-C does (SIGTERM to `plaza run` itself, with time to
drain the bus), not by killing make, uv and PostgreSQL all at once; plaza-backup.timer makes a
backup of the same Plaza every night."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

from plaza.settings import SETTINGS
from plaza_cli.embedded import EmbeddedSettings

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
UNIT = UNITS / "plaza.service"
INSTALLED_AT = "/opt/plaza/plaza"


def service_section(unit: Path = UNIT) -> dict[str, list[str]]:
    """The [Service] section, each key with every value it is given (Environment= repeats)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
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
    # As installed: the clone where the units expect it (here, this one).
    units = sorted(UNITS.iterdir())
    assert [u.name for u in units] == [
        "plaza-backup.service",
        "plaza-backup.timer",
        "plaza.service",
    ]
    for unit in units:
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED_AT, str(ROOT)))
    checked = subprocess.run(
        [analyze, "verify", *(str(tmp_path / u.name) for u in units)],
        capture_output=True,
        text=True,
        timeout=60,
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


def test_the_nightly_backup_is_of_the_plaza_the_service_runs() -> None:
    service, backup = service_section(), service_section(UNITS / "plaza-backup.service")
    for same in ("User", "WorkingDirectory", "Environment", "EnvironmentFile"):
        kept = [v for v in service[same] if not v.startswith("XDG_RUNTIME_DIR=")]
        assert [v for v in backup[same] if not v.startswith("XDG_RUNTIME_DIR=")] == kept, same
    [start] = backup["ExecStart"]
    assert f"{service['WorkingDirectory'][0]}/.venv/bin/plaza backup " in start
    assert backup["Type"] == ["oneshot"]
    timer = configparser.ConfigParser(interpolation=None)
    timer.read_string((UNITS / "plaza-backup.timer").read_text())
    assert timer["Timer"]["Persistent"] == "true"  # a night the PC was off: at the next boot
