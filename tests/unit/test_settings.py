"""Settings: a missing or invalid variable stops start-up with the variable's name."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from plaza.settings import BusKind, PlazaSettings, SettingsError, load


def test_defaults_are_the_local_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PLAZA_BUS", "PLAZA_KAFKA_BOOTSTRAP", "PLAZA_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    s = load(PlazaSettings)
    assert s.bus is BusKind.KAFKA and s.kafka_bootstrap == "127.0.0.1:9092"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PLAZA_BUS", "rabbit", "PLAZA_BUS"),
        (
            "PLAZA_DATABASE_URL",
            "mysql://x",
            "PLAZA_DATABASE_URL must start with postgresql+asyncpg",
        ),
        ("PLAZA_METRICS_PORT", "99999", "PLAZA_METRICS_PORT"),
        ("PLAZA_CITY_DATA_DIR", "/nonexistent/dir", "PLAZA_CITY_DATA_DIR=/nonexistent/dir"),
    ],
)
def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=re.escape(expected)):
        load(PlazaSettings)


def test_a_service_needing_a_database_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLAZA_DATABASE_URL", raising=False)
    with pytest.raises(SettingsError, match="PLAZA_DATABASE_URL is not set"):
        load(PlazaSettings).require_database()


def test_a_service_process_refuses_to_start_without_its_settings() -> None:
    env = {"PATH": "/usr/bin:/bin", "PLAZA_BUS": "kafka"}
    result = subprocess.run(
        [sys.executable, "-m", "plaza_router"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "PLAZA_DATABASE_URL" in result.stderr


def test_the_public_url_is_an_http_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from plaza_api.settings import AccessSettings

    monkeypatch.setenv("PLAZA_PUBLIC_URL", "https://plaza.bcn.example/")
    access = load(AccessSettings).access("x" * 32)
    assert access.public_url == "https://plaza.bcn.example"
    for wrong in ("plaza.bcn.example", "ftp://plaza.bcn.example", "https://a b"):
        monkeypatch.setenv("PLAZA_PUBLIC_URL", wrong)
        with pytest.raises(SettingsError, match="PLAZA_PUBLIC_URL"):
            load(AccessSettings)
