"""Settings shared by every Plaza process, read from PLAZA_* environment variables."""

from __future__ import annotations

import difflib
import logging
import os
from enum import StrEnum
from pathlib import Path
from typing import Final, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from plaza.scrape import MetricsAccess, check_metrics_token

log = logging.getLogger(__name__)

# Every PLAZA_* variable a Plaza process reads (the settings classes' fields)...
SETTINGS: Final = frozenset(
    {
        "PLAZA_ANONYMOUS_RATE_LIMIT_PER_MINUTE",
        "PLAZA_BATCH_SIZE",
        "PLAZA_BLUESKY_HANDLE",
        "PLAZA_BLUESKY_IMAGE_URL",
        "PLAZA_BLUESKY_JETSTREAM_URL",
        "PLAZA_BLUESKY_MENTIONS",
        "PLAZA_BLUESKY_PASSWORD",
        "PLAZA_BLUESKY_PASSWORD_FILE",
        "PLAZA_BLUESKY_PDS_URL",
        "PLAZA_BLUESKY_PLC_URL",
        "PLAZA_BLUESKY_REWIND_SECONDS",
        "PLAZA_BUS",
        "PLAZA_CITY_CONFIG",
        "PLAZA_CITY_DATA_DIR",
        "PLAZA_COMMIT_INTERVAL_MS",
        "PLAZA_DATABASE_URL",
        "PLAZA_DEMO",
        "PLAZA_DEMO_INTERVAL",
        "PLAZA_DRAIN_SECONDS",
        "PLAZA_DUPLICATE_RADIUS_M",
        "PLAZA_DUPLICATE_TEXT_SIMILARITY",
        "PLAZA_DUPLICATE_WINDOW_HOURS",
        "PLAZA_FAILED_LOGINS_PER_USER",
        "PLAZA_HOME",
        "PLAZA_INBOX_RETENTION_DAYS",
        "PLAZA_INGEST_PORT",
        "PLAZA_INGEST_PUBLISH_TIMEOUT",
        "PLAZA_INGEST_URL",
        "PLAZA_JURISDICTION_ID",
        "PLAZA_JWT_SECRET",
        "PLAZA_KAFKA_BOOTSTRAP",
        "PLAZA_KAFKA_FETCH_MAX_WAIT_MS",
        "PLAZA_KAFKA_FETCH_MIN_BYTES",
        "PLAZA_KAFKA_NAMESPACE",
        "PLAZA_KAFKA_SESSION_TIMEOUT_MS",
        "PLAZA_LOG_LEVEL",
        "PLAZA_MASTODON_BASE_URL",
        "PLAZA_MASTODON_HASHTAGS",
        "PLAZA_MASTODON_MENTIONS",
        "PLAZA_MASTODON_STREAMING_URL",
        "PLAZA_MASTODON_TOKEN",
        "PLAZA_MASTODON_TOKEN_FILE",
        "PLAZA_MAX_BODY_BYTES",
        "PLAZA_MEDIA_ALLOW_PRIVATE_HOSTS",
        "PLAZA_METRICS_PORT",
        "PLAZA_METRICS_TOKEN",
        "PLAZA_METRICS_TOKEN_FILE",
        "PLAZA_MIN_LOCATION_CONFIDENCE",
        "PLAZA_NOT_ACTIONABLE_REPLY",
        "PLAZA_PG_SHARED_BUFFERS",
        "PLAZA_PORT",
        "PLAZA_PUBLIC_POINT_PRECISION_M",
        "PLAZA_PUBLIC_URL",
        "PLAZA_RATE_LIMIT_PER_MINUTE",
        "PLAZA_READ_POOL_SIZE",
        "PLAZA_RELAY_INTERVAL_MS",
        "PLAZA_REPLY_MAX_ATTEMPTS",
        "PLAZA_REPLY_RETRY_BASE_SECONDS",
        "PLAZA_REPLY_SENDING_LEASE_SECONDS",
        "PLAZA_REPLY_TEMPLATES",
        "PLAZA_ROUTING_CONFIG",
        "PLAZA_SLA_CONFIG",
        "PLAZA_SLA_SCAN_INTERVAL",
        "PLAZA_TOKEN_TTL_MINUTES",
        "PLAZA_X_API_URL",
        "PLAZA_X_BEARER_TOKEN",
        "PLAZA_X_BEARER_TOKEN_FILE",
        "PLAZA_X_COMPLIANCE_HOURS",
        "PLAZA_X_INGEST_MODE",
        "PLAZA_X_POLL_SECONDS",
        "PLAZA_X_USERNAME",
        "PLAZA_X_USER_ID",
        "PLAZA_X_USER_TOKEN",
        "PLAZA_X_USER_TOKEN_FILE",
    }
)
# ... and those deploy/local's scripts and deploy/grafana's provisioning read.
SCRIPT_VARIABLES: Final = frozenset(
    {
        "PLAZA_CACHE_DIR",
        "PLAZA_CLASSIFIER_METRICS_PORT",
        "PLAZA_KAFKA_CLUSTER_ID",
        "PLAZA_KAFKA_DATA",
        "PLAZA_KAFKA_HEAP",
        "PLAZA_KAFKA_JVM_OPTS",
        "PLAZA_KAFKA_NODE_ID",
        "PLAZA_KAFKA_PARTITIONS",
        "PLAZA_KAFKA_PORT",
        "PLAZA_KAFKA_VOTERS",
        "PLAZA_NOTIFIER_METRICS_PORT",
        "PLAZA_PROMETHEUS_URL",
        "PLAZA_RELAY_METRICS_PORT",
        "PLAZA_ROOT",
        "PLAZA_ROUTER_METRICS_PORT",
    }
)
# The test harness's own, and its Bluesky test network's: not Plaza's settings.
FOREIGN_PREFIXES: Final = ("PLAZA_TEST_", "PLAZA_BLUESKY_PEER_")


class BusKind(StrEnum):
    KAFKA = "kafka"
    MEMORY = "memory"


class SettingsError(SystemExit):
    """Start-up stops: a setting is missing or invalid. The message names the variable."""


def read_secret(value: SecretStr | None, file: Path | None, variable: str) -> SecretStr | None:
    """A credential given directly, or read from a secret file (first line, trimmed)."""
    if value is not None and file is not None:
        raise ValueError(f"PLAZA_{variable} and PLAZA_{variable}_FILE are both set: choose one")
    if file is None:
        return value
    if not file.is_file():
        raise ValueError(f"PLAZA_{variable}_FILE={file} is not a file")
    secret = file.read_text(encoding="utf-8").strip()
    if not secret:
        raise ValueError(f"PLAZA_{variable}_FILE={file} is empty")
    return SecretStr(secret)


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
        "fetch ends on the first record, and so does every fetch of a topic Plaza's own stages "
        "write a batch at a time (all but post-received and post-withdrawn)",
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
    relay_interval_ms: int = Field(
        default=20,
        ge=1,
        le=10000,
        description="PLAZA_RELAY_INTERVAL_MS: while events keep coming, the outbox relay's rounds "
        "start at least this far apart (each publishes what the transactions committed meanwhile, "
        "and each wakes the notifier once). Longer means fewer, fuller rounds for the relay, "
        "PostgreSQL and the notifier, and replies later by up to as much",
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
    metrics_token: SecretStr | None = Field(
        default=None,
        description="PLAZA_METRICS_TOKEN: the bearer token a scrape of /metrics must send "
        "(unset: anyone who reaches the port reads the metrics, for a private network only)",
    )
    metrics_token_file: Path | None = Field(
        default=None, description="PLAZA_METRICS_TOKEN_FILE: a file holding it instead"
    )

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
        self.metrics_access()
        return self

    def metrics_access(self) -> MetricsAccess:
        """Who may read this process's /metrics (the token's file is read again at each call)."""
        token = read_secret(self.metrics_token, self.metrics_token_file, "METRICS_TOKEN")
        if token is not None:
            check_metrics_token(token.get_secret_value())
        return MetricsAccess(token)

    def require_database(self) -> str:
        if not self.database_url:
            raise SettingsError("PLAZA_DATABASE_URL is not set: this service needs PostgreSQL")
        return self.database_url


S = TypeVar("S", bound=BaseSettings)


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """One line per PLAZA_* variable no Plaza process reads, with the setting it is closest to:
    settings ignore what they do not know, so `PLAZA_PROT=8001 make run` started on 8000 and
    said nothing."""
    known = SETTINGS | SCRIPT_VARIABLES
    lines = []
    for name in sorted(os.environ if environ is None else environ):
        if not name.startswith("PLAZA_") or name in known or name.startswith(FOREIGN_PREFIXES):
            continue
        # The services' settings first: PLAZA_PROT is as near PLAZA_ROOT (Grafana's) as PLAZA_PORT.
        near = difflib.get_close_matches(name, SETTINGS, n=1, cutoff=0.75) or (
            difflib.get_close_matches(name, SCRIPT_VARIABLES, n=1, cutoff=0.75)
        )
        hint = f": did you mean {near[0]}?" if near else " (README, Configuration)"
        lines.append(f"{name} is not a Plaza setting and is ignored{hint}")
    return lines


def load(cls: type[S], *, warn_unknown: bool = True) -> S:
    """Reads settings from the environment, turning a validation error into a clear stop, and
    warns of a PLAZA_* variable that is no setting (a typo; warn_unknown=False for a second
    class of the same process, which would repeat the warning)."""
    if warn_unknown:
        for line in unknown_variables():
            log.warning("%s", line)
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
