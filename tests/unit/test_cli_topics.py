"""`plaza topics create` without a Kafka broker, or with no partitions: one clear line, exit 2."""

from __future__ import annotations

import pytest

from tests.infra import free_port
from tests.unit.test_cli_start import plaza


def test_topics_create_without_a_broker_says_so_in_one_line() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    done = plaza(["topics", "create"], PLAZA_KAFKA_BOOTSTRAP=bootstrap)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no traceback
    assert lines[0].startswith("plaza topics: ")
    assert bootstrap in lines[0] and "PLAZA_KAFKA_BOOTSTRAP" in lines[0]
    assert "not reachable" in lines[0] and "make up" in lines[0]
    assert done.stdout == ""  # no topic names: none was created


@pytest.mark.parametrize("partitions", ["0", "-3", "six"])
def test_topics_create_needs_one_partition_or_more(partitions: str) -> None:
    done = plaza(["topics", "create", "--partitions", partitions])
    assert done.returncode == 2, done.stderr
    assert "argument --partitions" in done.stderr
    assert "Traceback" not in done.stderr
