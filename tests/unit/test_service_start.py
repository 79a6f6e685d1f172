"""A service started with a wrong Kafka or PostgreSQL address stops at once with one line naming
the setting, and exit status 2: no traceback, no unclosed client, and no router that joins its
group and holds its partitions while it cannot reach its database."""

from __future__ import annotations

import socket
import sys

import pytest

from tests.infra import free_port
from tests.unit.test_cli_start import SHOW_UNCLOSED, plaza


def service(module: str) -> list[str]:
    return [sys.executable, *SHOW_UNCLOSED, "-m", module]


@pytest.mark.parametrize("module", ["plaza_router", "plaza_notifier", "plaza_router.relay"])
def test_a_wrong_database_address_stops_start_up_naming_it(module: str) -> None:
    port = free_port()  # nothing listens there
    done = plaza(
        [],
        command=service(module),
        timeout=30,  # it used to wait there for ever
        PLAZA_DATABASE_URL=f"postgresql+asyncpg://plaza:s3cret@127.0.0.1:{port}/plaza",
        PLAZA_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
    )
    assert done.returncode == 2, done.stderr
    [line] = [x for x in done.stderr.splitlines() if "cannot start" in x]
    assert f"PostgreSQL at postgresql+asyncpg://plaza:***@127.0.0.1:{port}/plaza" in line
    assert "(PLAZA_DATABASE_URL)" in line and "Connection refused" in line
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("module", ["plaza_classifier", "plaza_ingest"])
def test_a_wrong_kafka_address_stops_start_up_naming_it(module: str) -> None:
    port = free_port()
    done = plaza(
        [],
        command=service(module),
        timeout=30,
        PLAZA_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
        PLAZA_INGEST_PORT=str(free_port()),
    )
    assert done.returncode == 2, done.stderr
    [line] = [x for x in done.stderr.splitlines() if "cannot start" in x]
    assert f"the Kafka broker at 127.0.0.1:{port} (PLAZA_KAFKA_BOOTSTRAP) is not reachable" in line
    assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr


@pytest.mark.parametrize("module", ["plaza_classifier", "plaza_router.relay"])
def test_a_taken_metrics_port_stops_start_up_naming_it(module: str) -> None:
    """`make up` with a metrics port taken showed the end of a traceback, "Address already in
    use", naming neither the port nor the setting."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = plaza(
            [],
            command=service(module),
            timeout=30,
            PLAZA_METRICS_PORT=str(port),
            PLAZA_DATABASE_URL=f"postgresql+asyncpg://plaza:x@127.0.0.1:{free_port()}/plaza",
            PLAZA_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert f"PLAZA_METRICS_PORT: cannot serve metrics on port {port} (127.0.0.1)" in last
