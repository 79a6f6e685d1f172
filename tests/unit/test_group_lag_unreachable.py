"""The gateway reads the groups' lag from the broker at each scrape (plaza.bus.kafka.GroupLag):
with the broker away each read fails, and leaves nothing open behind it (each scrape leaked an
aiokafka consumer and its connections, which asyncio reported as "Unclosed AIOKafkaConsumer")."""

from __future__ import annotations

import gc
import logging

import pytest
from aiokafka.errors import KafkaConnectionError
from plaza.bus.kafka import GroupLag

from tests.infra import free_port


async def test_a_read_with_the_broker_away_fails_and_closes_what_it_opened(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lag = GroupLag(f"127.0.0.1:{free_port()}")  # nothing listens there
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for _ in range(3):  # three scrapes
            with pytest.raises(KafkaConnectionError):
                await lag.read()
        gc.collect()  # aiokafka reports an unclosed client when it is collected
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]
    await lag.close()
