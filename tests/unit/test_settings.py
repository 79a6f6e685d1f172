"""Settings: a missing or invalid variable stops start-up with the variable's name."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from plaza.settings import (
    FOREIGN_PREFIXES,
    SCRIPT_VARIABLES,
    SETTINGS,
    BusKind,
    PlazaSettings,
    SettingsError,
    load,
    unknown_variables,
)


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
        ("PLAZA_RELAY_INTERVAL_MS", "0", "PLAZA_RELAY_INTERVAL_MS"),
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


def test_the_public_point_precision_is_a_block_by_default_and_0_is_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from plaza_api.settings import AccessSettings

    monkeypatch.delenv("PLAZA_PUBLIC_POINT_PRECISION_M", raising=False)
    assert load(AccessSettings).access("x" * 32).public_point_precision_m == 50
    monkeypatch.setenv("PLAZA_PUBLIC_POINT_PRECISION_M", "0")
    assert load(AccessSettings).access("x" * 32).public_point_precision_m == 0
    for wrong in ("-1", "1001", "fifty"):
        monkeypatch.setenv("PLAZA_PUBLIC_POINT_PRECISION_M", wrong)
        with pytest.raises(SettingsError, match="PLAZA_PUBLIC_POINT_PRECISION_M"):
            load(AccessSettings)


def test_a_mistyped_variable_is_named_with_the_setting_it_is_near(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Settings ignore what they do not know: `PLAZA_PROT=8001 make run` started on 8000."""
    monkeypatch.setenv("PLAZA_PROT", "8001")
    monkeypatch.setenv("PLAZA_TEST_DATABASE_URL", "postgresql+asyncpg://t")  # the tests' own
    with caplog.at_level("WARNING", logger="plaza.settings"):
        load(PlazaSettings)
    assert [r.getMessage() for r in caplog.records] == [
        "PLAZA_PROT is not a Plaza setting and is ignored: did you mean PLAZA_PORT?"
    ]
    assert unknown_variables({"PLAZA_COLOUR": "red", "PLAZA_KAFKA_PORT": "9092"}) == [
        "PLAZA_COLOUR is not a Plaza setting and is ignored (README, Configuration)"
    ]


def test_the_known_variables_are_every_setting_and_every_scripts() -> None:
    """A new setting, or a new variable of deploy/'s scripts, joins the list or is warned of."""
    from plaza.social import SocialSettings
    from plaza_api.settings import ApiSettings
    from plaza_cli.access_cmd import AccessCliSettings
    from plaza_cli.embedded import EmbeddedSettings
    from plaza_cli.postgres import EmbeddedPostgresSettings
    from plaza_ingest.__main__ import IngestSettings
    from plaza_notifier.__main__ import NotifierSettings
    from plaza_router.settings import RouterSettings

    classes = [
        PlazaSettings, SocialSettings, ApiSettings, AccessCliSettings, EmbeddedSettings,
        IngestSettings, NotifierSettings, RouterSettings, EmbeddedPostgresSettings,
    ]  # fmt: skip
    fields = {f"PLAZA_{name}".upper() for cls in classes for name in cls.model_fields}
    assert fields == SETTINGS
    root = Path(__file__).parents[2]
    scripts = {root / "Makefile", *(p for p in (root / "deploy").rglob("*") if p.is_file())}
    read = {
        name
        for path in scripts
        for name in re.findall(r"PLAZA_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="ignore"))
    }
    assert {n for n in read if not n.startswith(FOREIGN_PREFIXES)} - SETTINGS == SCRIPT_VARIABLES


def test_the_relay_spaces_its_rounds_as_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from plaza.bus.memory import MemoryBus
    from plaza.db import create_engine
    from plaza_router.relay import relay_of

    engine = create_engine("postgresql+asyncpg://plaza@127.0.0.1:9/plaza")  # never connected
    assert relay_of(load(PlazaSettings), MemoryBus(), engine)._busy == 0.02  # the default
    monkeypatch.setenv("PLAZA_RELAY_INTERVAL_MS", "40")
    assert relay_of(load(PlazaSettings), MemoryBus(), engine)._busy == 0.04
