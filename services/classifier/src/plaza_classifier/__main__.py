"""Runs the classifier as its own process: `python -m plaza_classifier`."""

from __future__ import annotations

from plaza import metrics
from plaza.bus import bus_from_settings
from plaza.city import City
from plaza.contracts import TOPICS
from plaza.service import configure_logging, run, run_worker_service, serve_metrics
from plaza.settings import PlazaSettings, load
from plaza.worker import Worker

from plaza_classifier.classify import default_classifier
from plaza_classifier.handler import GROUP, ClassifyPost


def main() -> None:
    settings = load(PlazaSettings)
    configure_logging(settings.log_level)
    metrics.start_at_zero(consumers={GROUP: [TOPICS.POST_RECEIVED]})
    serve_metrics(settings)
    city = City.from_settings(
        city_config=settings.city_config, city_data_dir=settings.city_data_dir
    )
    bus = bus_from_settings(settings)
    handler = ClassifyPost(city, default_classifier())  # the model loads here, at start
    worker = Worker.in_batches(
        bus,
        group=GROUP,
        topics=[TOPICS.POST_RECEIVED],
        handler=handler,
        batch_size=settings.batch_size,
        commit_interval=settings.commit_interval_ms / 1000,
    )
    run(run_worker_service(bus, worker, kafka_bootstrap=settings.kafka_bootstrap))


if __name__ == "__main__":
    main()
