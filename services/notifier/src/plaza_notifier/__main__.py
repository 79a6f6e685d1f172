"""Runs the notifier as its own process: `python -m plaza_notifier`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Self

import httpx
from plaza import metrics
from plaza.bus import bus_from_settings
from plaza.city import Council
from plaza.contracts import TOPICS
from plaza.db import create_engine, session_factory
from plaza.service import (
    check_database,
    configure_logging,
    on_stop_signals,
    run,
    serve_metrics,
    start_bus,
    started,
)
from plaza.settings import SettingsError, load
from plaza.social import SocialSettings
from plaza.worker import Worker
from pydantic import Field, model_validator

from plaza_notifier import metrics as notifier_metrics
from plaza_notifier.bluesky import BlueskyChannel
from plaza_notifier.channels import ReplyChannel
from plaza_notifier.delivery import Deliverer, DeliveryPolicy
from plaza_notifier.handler import GROUP, PostReply
from plaza_notifier.mastodon import MastodonChannel
from plaza_notifier.photos import PhotoFetcher
from plaza_notifier.templates import TemplateError, Templates, load_templates
from plaza_notifier.x import XChannel

log = logging.getLogger("plaza_notifier")


class NotifierSettings(SocialSettings):
    reply_templates: Path | None = Field(
        default=None,
        description="PLAZA_REPLY_TEMPLATES: a TOML file whose entries replace the packaged "
        "reply templates (plaza_notifier/templates.toml)",
    )
    reply_max_attempts: int = Field(
        default=5, ge=1, description="PLAZA_REPLY_MAX_ATTEMPTS: tries before a dead letter"
    )
    reply_retry_base_seconds: float = Field(
        default=2.0, gt=0, description="PLAZA_REPLY_RETRY_BASE_SECONDS: the first retry's delay"
    )
    reply_sending_lease_seconds: float = Field(
        default=60.0,
        ge=1,
        description="PLAZA_REPLY_SENDING_LEASE_SECONDS: after this long a reply left in "
        "`sending` is taken as interrupted (its thread is searched before sending again)",
    )
    media_allow_private_hosts: bool = Field(
        default=False,
        description="PLAZA_MEDIA_ALLOW_PRIVATE_HOSTS: fetch resolution photos from loopback and "
        "private addresses too (the tests' local servers); never in a city's deployment, where "
        "a worker's photo URL could reach the city's internal network",
    )

    @model_validator(mode="after")
    def _check_bluesky_password(self) -> Self:
        bluesky = self.bluesky  # the notifier posts as the city: it needs the password
        if bluesky is not None and bluesky.password is None:
            raise ValueError(
                "PLAZA_BLUESKY_HANDLE is set but neither PLAZA_BLUESKY_PASSWORD nor "
                "PLAZA_BLUESKY_PASSWORD_FILE is"
            )
        return self

    @model_validator(mode="after")
    def _check_templates(self) -> Self:
        try:
            self.templates()
        except (TemplateError, SettingsError) as exc:
            raise ValueError(str(exc)) from None
        return self

    def templates(self) -> Templates:
        """The reply templates, answering posts in other languages in the city's language
        (PLAZA_CITY_CONFIG's `language`; Barcelona's Catalan without one), with due times on
        the city's clock (its `time_zone`)."""
        council = Council.from_settings(city_config=self.city_config)
        return load_templates(self.reply_templates, council.language, council.zone)

    @model_validator(mode="after")
    def _check_x_user_token(self) -> Self:
        x = self.x  # the notifier posts as the city: it needs the account's user token
        if x is not None and x.user_token() is None:
            raise ValueError(
                "PLAZA_X_USER_ID is set but neither PLAZA_X_USER_TOKEN nor "
                "PLAZA_X_USER_TOKEN_FILE is"
            )
        return self

    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            max_attempts=self.reply_max_attempts,
            base_delay=self.reply_retry_base_seconds,
            lease=self.reply_sending_lease_seconds,
        )


def build_channels(
    settings: SocialSettings, http: httpx.AsyncClient, photos: PhotoFetcher
) -> dict[str, ReplyChannel]:
    """A channel for each platform the settings turn on; the others get the log channel."""
    channels: dict[str, ReplyChannel] = {}
    if settings.mastodon is not None:
        channels["mastodon"] = MastodonChannel(settings.mastodon, http, photos=photos)
    if settings.bluesky is not None:
        channels["bluesky"] = BlueskyChannel(settings.bluesky, http, photos=photos)
    if settings.x is not None:
        channels["x"] = XChannel(settings.x, http, photos=photos)
    return channels


def photo_fetcher(settings: NotifierSettings) -> PhotoFetcher:
    """How the channels fetch resolution photos (the notifier's process and embedded mode)."""
    if settings.media_allow_private_hosts:
        log.warning(
            "PLAZA_MEDIA_ALLOW_PRIVATE_HOSTS is on: photos are fetched from private addresses too"
        )
    return PhotoFetcher(allow_private_hosts=settings.media_allow_private_hosts)


async def serve(settings: NotifierSettings) -> None:
    # No ping per transaction: the worker and the deliverer retry what a dead connection fails.
    engine = create_engine(settings.require_database(), pre_ping=False)
    sessions = session_factory(engine)
    bus = bus_from_settings(settings)
    async with httpx.AsyncClient(timeout=15.0) as http:
        channels = build_channels(settings, http, photo_fetcher(settings))
        handler = PostReply(sessions, channels, settings.templates())
        worker = Worker.in_batches(
            bus,
            group=GROUP,
            topics=[TOPICS.REPLY_REQUESTED],
            handler=handler,
            batch_size=settings.batch_size,
            commit_interval=settings.commit_interval_ms / 1000,
        )
        deliverer = Deliverer(sessions, channels, settings.delivery_policy())

        def stop() -> None:
            worker.stop()
            deliverer.stop()

        on_stop_signals(stop)
        await check_database(engine)
        await start_bus(bus, settings.kafka_bootstrap)
        started()
        try:
            loops = [worker.run()] + ([deliverer.run()] if channels else [])
            await asyncio.gather(*loops)
        finally:
            stop()
            await bus.close()
            await engine.dispose()


def main() -> None:
    settings = load(NotifierSettings)
    configure_logging(settings.log_level)
    metrics.start_at_zero(consumers={GROUP: [TOPICS.REPLY_REQUESTED]})
    notifier_metrics.start_at_zero()
    serve_metrics(settings)
    run(serve(settings))


if __name__ == "__main__":
    main()
