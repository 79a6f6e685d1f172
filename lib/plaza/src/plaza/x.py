"""X (Twitter API v2) for Plaza: the city account's settings, shared by ingest (its filtered
stream and mentions connector) and the notifier (its reply channel), and X's post ids
(snowflakes, which order by time). The tokens are SecretStr: never logged."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Final, Self

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator

from plaza.settings import PlazaSettings, read_secret

# Snowflake ids: milliseconds since X's epoch in the bits above the lowest 22.
EPOCH_MS: Final = 1288834974657
USERNAME = re.compile(r"^[A-Za-z0-9_]{1,15}$")
# X's Developer Agreement wants a deletion honoured within 24 hours: a round every 4 hours, and
# at most every 8, leaves a failed round two more tries inside them.
COMPLIANCE_HOURS: Final = 4.0
MAX_COMPLIANCE_HOURS: Final = 8.0


def snowflake_at(at: datetime) -> str:
    """The smallest post id X could give a post made at `at`: a since_id meaning "from then"."""
    return str((int(at.timestamp() * 1000) - EPOCH_MS) << 22)


def posted_at(post_id: str) -> datetime:
    """When X made the post `post_id` (to the millisecond)."""
    return datetime.fromtimestamp(((int(post_id) >> 22) + EPOCH_MS) / 1000, UTC)


def newer(a: str, b: str) -> bool:
    """Whether post id `a` is after `b` (ids are decimal snowflakes)."""
    return int(a) > int(b)


def _secret(value: SecretStr | None, file: Path | None, variable: str) -> SecretStr | None:
    return read_secret(value, file, variable)


class IngestMode(StrEnum):
    STREAM = "stream"  # the filtered stream, polling mentions only while it is unavailable
    POLL = "poll"  # mentions polling only (an access tier without the filtered stream)


class XSettings(PlazaSettings):
    """X is on when PLAZA_X_USER_ID is set. Ingest reads with the app's bearer token (the
    filtered stream only accepts app-only auth); the notifier posts with a user-context token
    of the city's account (POST /2/tweets and media upload refuse app-only auth)."""

    x_api_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://api.x.com"), description="PLAZA_X_API_URL: X's API"
    )
    x_user_id: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,19}$",
        description="PLAZA_X_USER_ID: the city account's numeric id; turns X on",
    )
    x_username: str = Field(
        default="", description="PLAZA_X_USERNAME: the city account's handle, without @"
    )
    x_bearer_token: SecretStr | None = Field(
        default=None,
        description="PLAZA_X_BEARER_TOKEN: the app's bearer token (app-only: stream, rules, "
        "mentions, the city's timeline)",
    )
    x_bearer_token_file: Path | None = Field(
        default=None, description="PLAZA_X_BEARER_TOKEN_FILE: a file holding it instead"
    )
    x_user_token: SecretStr | None = Field(
        default=None,
        description="PLAZA_X_USER_TOKEN: an OAuth 2.0 user-context access token of the city's "
        "account (scopes tweet.read tweet.write users.read media.write), for the notifier",
    )
    x_user_token_file: Path | None = Field(
        default=None,
        description="PLAZA_X_USER_TOKEN_FILE: a file holding it instead, read again before "
        "every call so that a refresher can rotate it",
    )
    x_ingest_mode: IngestMode = Field(
        default=IngestMode.STREAM,
        description="PLAZA_X_INGEST_MODE: stream (the filtered stream, mentions polled while it "
        "is unavailable) or poll (mentions only)",
    )
    x_poll_seconds: float = Field(
        default=60.0,
        ge=1,
        description="PLAZA_X_POLL_SECONDS: how often mentions are polled when there is no stream",
    )
    x_compliance_hours: float = Field(
        default=COMPLIANCE_HOURS,
        gt=0,
        le=MAX_COMPLIANCE_HOURS,
        description="PLAZA_X_COMPLIANCE_HOURS: how often the X posts Plaza holds are checked "
        "against X's batch compliance endpoints (deleted, protected, suspended...); X wants "
        "them honoured within 24 hours",
    )

    @model_validator(mode="after")
    def _check_x(self) -> Self:
        bearer = _secret(self.x_bearer_token, self.x_bearer_token_file, "X_BEARER_TOKEN")
        _secret(self.x_user_token, self.x_user_token_file, "X_USER_TOKEN")
        if self.x_user_id is None:
            return self
        if not USERNAME.match(self.x_username.lstrip("@")):
            raise ValueError(
                f"PLAZA_X_USER_ID is set but PLAZA_X_USERNAME={self.x_username!r} is not a handle"
            )
        if bearer is None:
            raise ValueError(
                "PLAZA_X_USER_ID is set but neither PLAZA_X_BEARER_TOKEN nor "
                "PLAZA_X_BEARER_TOKEN_FILE is"
            )
        return self

    @property
    def x(self) -> XAccount | None:
        bearer = _secret(self.x_bearer_token, self.x_bearer_token_file, "X_BEARER_TOKEN")
        if self.x_user_id is None or bearer is None:
            return None
        return XAccount(
            api_url=str(self.x_api_url).rstrip("/"),
            user_id=self.x_user_id,
            username=self.x_username.lstrip("@"),
            bearer_token=bearer,
            user_token=self.x_user_token,
            user_token_file=self.x_user_token_file,
            mode=self.x_ingest_mode,
            poll_seconds=self.x_poll_seconds,
            compliance_hours=self.x_compliance_hours,
        )


class XAccount:
    """The city's X account and the tokens Plaza uses with it (secret in repr and logs)."""

    __slots__ = (
        "_user_token",
        "api_url",
        "bearer_token",
        "compliance_hours",
        "mode",
        "poll_seconds",
        "user_id",
        "user_token_file",
        "username",
    )

    def __init__(
        self,
        *,
        api_url: str,
        user_id: str,
        username: str,
        bearer_token: SecretStr,
        user_token: SecretStr | None = None,
        user_token_file: Path | None = None,
        mode: IngestMode = IngestMode.STREAM,
        poll_seconds: float = 60.0,
        compliance_hours: float = COMPLIANCE_HOURS,
    ) -> None:
        self.api_url = api_url
        self.user_id = user_id
        self.username = username
        self.bearer_token = bearer_token
        self._user_token = user_token
        self.user_token_file = user_token_file
        self.mode = mode
        self.poll_seconds = poll_seconds
        self.compliance_hours = compliance_hours

    def user_token(self) -> SecretStr | None:
        """The user-context token, from its file when there is one (read each time: rotated
        by whoever refreshes it; OAuth 2.0 user tokens last two hours)."""
        return _secret(self._user_token, self.user_token_file, "X_USER_TOKEN")

    def post_url(self, post_id: str) -> str:
        return f"https://x.com/{self.username}/status/{post_id}"

    def __repr__(self) -> str:
        return f"XAccount({self.api_url!r}, @{self.username}, id={self.user_id}, tokens=**********)"
