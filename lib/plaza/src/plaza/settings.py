"""Settings shared by every Plaza process, read from PLAZA_* environment variables."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self, TypeVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class BusKind(StrEnum):
    KAFKA = "kafka"
    MEMORY = "memory"


class SettingsError(SystemExit):
    """Start-up stops: a setting is missing or invalid. The message names the variable."""


class PlazaSettings(BaseSettings):
    """What every service reads. Services extend it with their own fields."""

    model_config = SettingsConfigDict(env_prefix="PLAZA_", extra="ignore", frozen=True)

    bus: BusKind = BusKind.KAFKA
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Prefixed to every topic and consumer group, so several Plazas (or tests) share a broker.
    kafka_namespace: str = ""
    kafka_session_timeout_ms: int = Field(
        default=10000,
        ge=6000,
        le=300000,
        description="How soon a consumer that died loses its partitions (the broker's bounds)",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=25,
        ge=1,
        le=30000,
        description="While records flow, how long the broker may hold a consumer's fetch for "
        "kafka_fetch_min_bytes (the most a hop adds to a post's latency); an idle consumer's "
        "fetch ends on the first record",
    )
    kafka_fetch_min_bytes: int = Field(
        default=64 * 1024,
        ge=1,
        le=16 * 1024 * 1024,
        description="While records flow, the bytes a fetch waits for (fewer, fuller fetches)",
    )
    commit_interval_ms: int = Field(
        default=250,
        ge=0,
        le=60000,
        description="PLAZA_COMMIT_INTERVAL_MS: how often a worker commits its consumed offsets "
        "(0: after every batch). Longer means fewer requests to the broker and, after a crash, "
        "more records handled again (which the consumers' inboxes recognise)",
    )
    database_url: str = Field(
        default="",
        description="postgresql+asyncpg://user:pass@host:port/db; required where a database is used",
    )
    city_data_dir: Path | None = Field(
        default=None,
        description="Directory with districtes_geo.json and barris_geo.json for exact polygons",
    )
    city_config: Path | None = Field(
        default=None,
        description="A city configuration file (TOML, see plaza.city.config); without it, "
        "Plaza serves Barcelona. When set, PLAZA_CITY_DATA_DIR is not used",
    )
    sla_config: Path | None = Field(
        default=None, description="PLAZA_SLA_CONFIG: a TOML file overriding the SLA defaults"
    )
    routing_config: Path | None = Field(
        default=None, description="PLAZA_ROUTING_CONFIG: a TOML file replacing the routing rules"
    )
    batch_size: int = Field(
        default=250,
        ge=1,
        le=1000,
        description="PLAZA_BATCH_SIZE: records the classifier, the router and the notifier "
        "handle in one call (for the router and the notifier, one transaction and one commit); 1 "
        "handles each on its own. Larger batches hold the router's dedupe locks longer",
    )
    log_level: str = "INFO"
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0 = no metrics server")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.bus is BusKind.KAFKA and not self.kafka_bootstrap.strip():
            raise ValueError("PLAZA_KAFKA_BOOTSTRAP must name at least one broker host:port")
        if self.database_url and not self.database_url.startswith("postgresql+asyncpg://"):
            raise ValueError(
                "PLAZA_DATABASE_URL must start with postgresql+asyncpg:// (asyncpg is the driver)"
            )
        for name in ("sla_config", "routing_config"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"PLAZA_{name.upper()}={path} is not a file")
        if self.city_data_dir is not None and not self.city_data_dir.is_dir():
            raise ValueError(f"PLAZA_CITY_DATA_DIR={self.city_data_dir} is not a directory")
        if self.city_config is not None and not self.city_config.is_file():
            raise ValueError(f"PLAZA_CITY_CONFIG={self.city_config} is not a file")
        return self

    def require_database(self) -> str:
        if not self.database_url:
            raise SettingsError("PLAZA_DATABASE_URL is not set: this service needs PostgreSQL")
        return self.database_url


S = TypeVar("S", bound=PlazaSettings)


def load(cls: type[S]) -> S:
    """Reads settings from the environment, turning a validation error into a clear stop."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) if err["loc"] else ""
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {(prefix + field).upper()}: {message}" if field else f"  {message}")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from None
