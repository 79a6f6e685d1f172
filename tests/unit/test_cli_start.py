"""`plaza replay` without a Kafka broker and `plaza run` without its port: one clear line, no
traceback, nothing started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import free_port

# Shows the warnings Python hides by default, such as an unclosed connection (-X dev would too,
# but it also turns on asyncio's debug mode, whose "took 0.126 seconds" notes about slow
# callbacks come and go with the machine's load).
SHOW_UNCLOSED = ["-W", "default::ResourceWarning"]
PLAZA = [sys.executable, *SHOW_UNCLOSED, "-c", "from plaza_cli.main import main; main()"]


def plaza(
    args: list[str], *, command: list[str] = PLAZA, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Runs the command line with only the given PLAZA_ settings."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PLAZA_")}
    environment.update(env)
    return subprocess.run(
        [*command, *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def posts(tmp_path: Path) -> Path:
    path = tmp_path / "posts.jsonl"
    path.write_text(
        '{"platform": "webhook", "post_id": "1", "author_handle": "@marta", '
        '"text": "El fanal del carrer de Verdi no funciona"}\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port of 127.0.0.1 that another socket listens on (and never accepts)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_replay_without_a_broker_says_so_in_one_line(posts: Path) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    done = plaza(["replay", str(posts)], PLAZA_KAFKA_BOOTSTRAP=bootstrap)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no traceback, no "Unclosed AIOKafkaProducer"
    assert lines[0].startswith("plaza replay: ")
    assert bootstrap in lines[0]
    assert "PLAZA_KAFKA_BOOTSTRAP" in lines[0]
    assert "not reachable" in lines[0]
    assert "Connect call failed" in lines[0]  # aiokafka's reason
    assert "make up" in lines[0]
    assert done.stdout == ""


def test_replay_waits_for_a_silent_broker_only_so_long(posts: Path, taken_port: int) -> None:
    """A port that takes connections but never answers (a firewall, or not a broker) is given up
    after KAFKA_CONNECT_TIMEOUT, not aiokafka's 30 s request timeout."""
    command = [
        sys.executable,
        *SHOW_UNCLOSED,
        "-c",
        "import plaza_cli.main as m; m.KAFKA_CONNECT_TIMEOUT = 1.0; m.main()",
    ]
    started = time.monotonic()
    done = plaza(
        ["replay", str(posts)],
        command=command,
        PLAZA_KAFKA_BOOTSTRAP=f"127.0.0.1:{taken_port}",
    )
    assert time.monotonic() - started < 25
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"127.0.0.1:{taken_port}" in lines[0]
    assert "PLAZA_KAFKA_BOOTSTRAP" in lines[0]
    assert "no answer within 1 s" in lines[0]


def test_run_with_its_port_taken_starts_nothing(tmp_path: Path, taken_port: int) -> None:
    home = tmp_path / "home"
    started = time.monotonic()
    done = plaza(["run"], PLAZA_PORT=str(taken_port), PLAZA_HOME=str(home))
    assert time.monotonic() - started < 20
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"port {taken_port}" in lines[0]
    assert "already in use" in lines[0]
    assert "PLAZA_PORT" in lines[0]
    assert "Plaza is running" not in done.stdout
    assert not (home / "pgdata").exists()  # the embedded PostgreSQL was not started


def test_run_refuses_a_home_that_holds_another_citys_requests(tmp_path: Path) -> None:
    """The README runs Barcelona, then Jun with the same `make run`: Jun on Barcelona's database
    showed Ciutat Vella's requests as Casco Urbano's. It stops, naming a home of Jun's own."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "city").write_text("Barcelona\n", encoding="utf-8")
    jun = Path(__file__).parents[2] / "deploy" / "cities" / "jun.toml"
    done = plaza(
        ["run"], PLAZA_PORT=str(free_port()), PLAZA_HOME=str(home), PLAZA_CITY_CONFIG=str(jun)
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert f"PLAZA_HOME={home} holds Barcelona's requests, not Jun's" in last
    assert f"PLAZA_HOME={home}-jun make run" in last
    assert "Traceback" not in done.stderr
    assert not (home / "pgdata").exists()  # the embedded PostgreSQL was not started


def test_run_keeps_the_city_of_a_new_home(tmp_path: Path) -> None:
    from plaza_cli.embedded import check_home_city

    home = tmp_path / "home"
    check_home_city(home, "Jun")
    assert (home / "city").read_text(encoding="utf-8") == "Jun\n"
    check_home_city(home, "Jun")  # the same city again: on its way


@pytest.mark.parametrize("args", [["keys", "list"], ["users", "list"]])
def test_keys_and_users_refuse_a_directory_without_plaza_data(
    tmp_path: Path, args: list[str]
) -> None:
    """Run from the wrong directory, they would start a database of their own there, and a key
    made in it would never work against the running Plaza: one line saying where to run them."""
    home = tmp_path / "elsewhere" / ".plaza"
    ran = plaza(args, PLAZA_HOME=str(home))
    assert ran.returncode == 2, ran.stderr
    assert f"no Plaza data in {home}" in ran.stderr and "Traceback" not in ran.stderr
    assert not home.exists()


def test_run_help_names_its_settings_with_their_defaults() -> None:
    """`plaza run --help` said only "-h": a newcomer whose port 8000 was taken found nothing
    there. It lists the settings `make run` takes, each a field of its settings with that
    default."""
    import re

    from plaza_cli.embedded import EmbeddedSettings

    done = plaza(["run", "--help"])
    assert done.returncode == 0, done.stderr
    shown = dict(re.findall(r"^  PLAZA_(\w+)=(\S+)", done.stdout, re.MULTILINE))
    assert {"PORT", "HOME", "DEMO", "DRAIN_SECONDS"} <= set(shown)
    fields = EmbeddedSettings.model_fields
    for name, default in shown.items():
        assert name.lower() in fields, f"PLAZA_{name} is no setting of plaza run"
        if default != "FILE":
            value = fields[name.lower()].default
            value = "true" if value is None and name == "DEMO" else value  # off in a city
            assert str(default) == str(value).removesuffix(".0"), name
