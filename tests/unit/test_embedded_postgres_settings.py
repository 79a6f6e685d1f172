"""PLAZA_PG_SHARED_BUFFERS: the embedded PostgreSQL's shared_buffers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from plaza.settings import SettingsError, load
from plaza_cli.postgres import EmbeddedPostgresSettings

MB = 1024 * 1024


def buffers(monkeypatch: pytest.MonkeyPatch, value: str | None) -> int:
    if value is None:
        monkeypatch.delenv("PLAZA_PG_SHARED_BUFFERS", raising=False)
    else:
        monkeypatch.setenv("PLAZA_PG_SHARED_BUFFERS", value)
    return load(EmbeddedPostgresSettings).shared_buffers_bytes()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("512MB", 512 * MB),
        ("2GB", 2048 * MB),
        ("131072kB", 128 * MB),
        (" 1GB ", 1024 * MB),
        ("1001kB", 1000 * 1024),  # whole pages of 8kB, as PostgreSQL keeps it
    ],
)
def test_a_size_in_postgresqls_notation(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int
) -> None:
    assert buffers(monkeypatch, value) == expected


@pytest.mark.parametrize(
    ("memory_gb", "expected"), [(24, 1024 * MB), (4, 512 * MB), (0.5, 128 * MB)]
)
def test_auto_is_an_eighth_of_the_memory_between_128mb_and_1gb(
    monkeypatch: pytest.MonkeyPatch, memory_gb: float, expected: int
) -> None:
    memory = SimpleNamespace(total=int(memory_gb * 1024 * MB))
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory)
    assert buffers(monkeypatch, None) == expected
    assert buffers(monkeypatch, "auto") == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("512", "'512' is not a size: a whole number and kB, MB or GB, such as 512MB"),
        ("1TB", "'1TB' is not a size"),
        ("0.5GB", "'0.5GB' is not a size"),
        ("64kB", "'64kB' is less than PostgreSQL's least, 128kB"),
        ("8193GB", "'8193GB' is more than PostgreSQL's most, 8589934584kB"),
    ],
)
def test_a_bad_size_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    with pytest.raises(SettingsError) as stopped:
        buffers(monkeypatch, value)
    assert f"PLAZA_PG_SHARED_BUFFERS: {says}" in str(stopped.value)


def test_a_bad_size_stops_before_any_server_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from plaza_cli.postgres import EmbeddedPostgres

    monkeypatch.setenv("PLAZA_PG_SHARED_BUFFERS", "lots")
    with pytest.raises(SettingsError, match="PLAZA_PG_SHARED_BUFFERS: 'lots' is not a size"):
        EmbeddedPostgres(tmp_path / "pgdata")
    assert not (tmp_path / "pgdata").exists()
