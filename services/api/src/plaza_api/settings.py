"""The gateway's settings (PLAZA_* environment variables): its port, and access control."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Self

from plaza.city import Council
from plaza.settings import PlazaSettings
from pydantic import Field, SecretStr, model_validator

from plaza_api.access import AccessConfig
from plaza_api.auth import AuthConfig, check_jwt_secret
from plaza_api.limits import Limits
from plaza_api.privacy import MAX_PUBLIC_POINT_PRECISION_M, PUBLIC_POINT_PRECISION_M


class AccessSettings(PlazaSettings):
    """What access control reads; shared by the gateway process and embedded mode."""

    jwt_secret: SecretStr | None = Field(
        default=None,
        description="PLAZA_JWT_SECRET: signs staff tokens (HS256); 32+ random characters",
    )
    token_ttl_minutes: int = Field(default=60, ge=1, le=24 * 60)
    rate_limit_per_minute: int = Field(
        default=600, ge=0, description="Per API key or user; 0 = no limit"
    )
    anonymous_rate_limit_per_minute: int = Field(
        default=120, ge=0, description="Per address, for calls without credentials; 0 = no limit"
    )
    failed_logins_per_user: int = Field(
        default=10,
        ge=0,
        description="PLAZA_FAILED_LOGINS_PER_USER: failed logins a user name may have, from "
        "every address together, before its logins wait (one more a minute); 0 = no limit",
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    jurisdiction_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="PLAZA_JURISDICTION_ID: Open311's jurisdiction_id; by default the city "
        "file's (its `jurisdiction_id`, else its name as a slug), barcelona without one",
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$",
        description="PLAZA_PUBLIC_URL: where citizens and apps reach the gateway "
        "(https://plaza.example.org); Open311's discovery names it",
    )
    public_point_precision_m: int = Field(
        default=PUBLIC_POINT_PRECISION_M,
        ge=0,
        le=MAX_PUBLIC_POINT_PRECISION_M,
        description="PLAZA_PUBLIC_POINT_PRECISION_M: the grid (metres) a request's point is "
        "snapped to wherever it is public (Open311): a block, not the citizen's phone to the "
        "metre; 0 publishes the exact point. Staff always see it exact",
    )

    @model_validator(mode="after")
    def _check_access(self) -> Self:
        if self.jwt_secret is not None:
            check_jwt_secret(self.jwt_secret.get_secret_value())
        return self

    def access(self, jwt_secret: str) -> AccessConfig:
        return AccessConfig(
            auth=AuthConfig(
                jwt_secret=jwt_secret, token_ttl=timedelta(minutes=self.token_ttl_minutes)
            ),
            limits=Limits(
                per_key_per_minute=self.rate_limit_per_minute,
                anonymous_per_minute=self.anonymous_rate_limit_per_minute,
                failed_logins_per_user=self.failed_logins_per_user,
                max_body_bytes=self.max_body_bytes,
            ),
            jurisdiction_id=self.jurisdiction_id
            or Council.from_settings(city_config=self.city_config).jurisdiction_id,
            public_url=self.public_url.rstrip("/") if self.public_url else None,
            public_point_precision_m=self.public_point_precision_m,
            metrics=self.metrics_access(),
        )


class ApiSettings(AccessSettings):
    port: int = Field(default=8000, ge=1, le=65535)
    ingest_url: str = Field(default="http://127.0.0.1:8101", pattern=r"^https?://")
    read_pool_size: int = Field(
        default=4,
        ge=1,
        le=64,
        description="PLAZA_READ_POOL_SIZE: PostgreSQL connections for queue pages and Open311 reads",
    )

    @model_validator(mode="after")
    def _require_secret(self) -> Self:
        # Outside embedded mode there is no safe default: a missing secret stops start-up.
        self.secret()
        return self

    def secret(self) -> str:
        return check_jwt_secret(self.jwt_secret.get_secret_value() if self.jwt_secret else None)


def persisted_secret(home: Path) -> str:
    """Embedded mode's secret: made once, kept in PLAZA_HOME/jwt_secret (readable by its owner
    only), so tokens survive a restart."""
    path = home / "jwt_secret"
    if path.is_file():
        return check_jwt_secret(path.read_text().strip(), f"{path}")
    home.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    return secret
