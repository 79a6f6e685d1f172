"""Runs the gateway as its own process: `python -m plaza_api`."""

from __future__ import annotations

import gc

import httpx
from plaza import metrics
from plaza.bus.kafka import GroupLag
from plaza.city import City
from plaza.db import create_engine, session_factory
from plaza.policy import RoutingTable, SlaPolicy
from plaza.service import configure_logging, http_server, run
from plaza.settings import BusKind, load

from plaza_api.app import create_app
from plaza_api.reads import PooledReads
from plaza_api.settings import ApiSettings


async def serve(settings: ApiSettings) -> None:
    database_url = settings.require_database()
    engine = create_engine(database_url)
    reads = await PooledReads.open(database_url, size=settings.read_pool_size)
    city = City.from_settings(
        city_config=settings.city_config, city_data_dir=settings.city_data_dir
    )
    # What the managers' actions count: requests closed, deadlines met and missed (when late).
    counters = (metrics.REQUESTS_CLOSED, metrics.SLA_MET, metrics.SLA_BREACHES)
    metrics.start_at_zero(districts=city.districts, counters=counters)
    # The consumer groups' lag, read from the broker so that a group whose members are all down
    # still shows what waits for it (PlazaConsumerLagHigh).
    lag = (
        GroupLag(settings.kafka_bootstrap, namespace=settings.kafka_namespace)
        if settings.bus is BusKind.KAFKA
        else None
    )
    async with httpx.AsyncClient(base_url=settings.ingest_url, timeout=10.0) as ingest:
        app = create_app(
            session_factory(engine),
            ingest,
            city,
            sla=SlaPolicy.load(settings.sla_config),
            routing=RoutingTable.load(settings.routing_config, city),
            access=settings.access(settings.secret()),
            reads=reads,
            lag=lag,
        )
        # What start-up built (the app, its models, the city's map) lives as long as the
        # process: out of the collector's sight, a full collection stops pausing every request.
        gc.collect()
        gc.freeze()
        try:
            await http_server(app, settings.port).serve()
        finally:
            await reads.close()
            await engine.dispose()
            if lag is not None:
                await lag.close()


def main() -> None:
    settings = load(ApiSettings)
    configure_logging(settings.log_level)
    # On uvloop (plaza.service.run): uvicorn's own `loop` setting applies only when uvicorn
    # makes the loop, and here serve() does.
    run(serve(settings))


if __name__ == "__main__":
    main()
