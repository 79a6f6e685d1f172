"""Settings of the social platforms Plaza listens to and answers on, shared by ingest (its
connectors) and the notifier (its reply channels). Credentials are SecretStr: never logged."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Self

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator

from plaza.bluesky import BlueskySettings
from plaza.settings import read_secret as read_secret  # plaza.social.read_secret, as before
from plaza.x import XSettings


def csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


class SocialSettings(BlueskySettings, XSettings):
    """A platform is on when its base URL is set; its token is then required. Bluesky's
    settings are in plaza.bluesky, X's in plaza.x."""

    mastodon_base_url: AnyHttpUrl | None = Field(
        default=None, description="PLAZA_MASTODON_BASE_URL: the city account's instance"
    )
    mastodon_token: SecretStr | None = Field(
        default=None, description="PLAZA_MASTODON_TOKEN: the city account's access token"
    )
    mastodon_token_file: Path | None = Field(
        default=None, description="PLAZA_MASTODON_TOKEN_FILE: a file holding the token instead"
    )
    mastodon_streaming_url: AnyHttpUrl | None = Field(
        default=None,
        description="PLAZA_MASTODON_STREAMING_URL: the streaming server, when it is not the "
        "instance itself (ws:// or wss:// is derived from http:// or https://)",
    )
    mastodon_hashtags: str = Field(
        default="",
        description="PLAZA_MASTODON_HASHTAGS: followed hashtags, comma-separated, without #",
    )
    mastodon_mentions: bool = Field(
        default=True, description="PLAZA_MASTODON_MENTIONS: listen to mentions of the account"
    )

    @model_validator(mode="after")
    def _check_social(self) -> Self:
        token = read_secret(self.mastodon_token, self.mastodon_token_file, "MASTODON_TOKEN")
        if self.mastodon_base_url is not None and token is None:
            raise ValueError(
                "PLAZA_MASTODON_BASE_URL is set but neither PLAZA_MASTODON_TOKEN nor "
                "PLAZA_MASTODON_TOKEN_FILE is"
            )
        return self

    @property
    def mastodon(self) -> MastodonAccount | None:
        token = read_secret(self.mastodon_token, self.mastodon_token_file, "MASTODON_TOKEN")
        if self.mastodon_base_url is None or token is None:
            return None
        base = str(self.mastodon_base_url).rstrip("/")
        streaming = str(self.mastodon_streaming_url or base).rstrip("/")
        return MastodonAccount(
            base_url=base,
            streaming_url=streaming.replace("https://", "wss://", 1).replace("http://", "ws://", 1),
            token=token,
            hashtags=tuple(t.lstrip("#") for t in csv(self.mastodon_hashtags)),
            mentions=self.mastodon_mentions,
        )


class MastodonAccount:
    """The city's account on one Mastodon instance (the token stays secret in repr and logs)."""

    __slots__ = ("base_url", "hashtags", "mentions", "streaming_url", "token")

    def __init__(
        self,
        *,
        base_url: str,
        streaming_url: str,
        token: SecretStr,
        hashtags: tuple[str, ...] = (),
        mentions: bool = True,
    ) -> None:
        self.base_url = base_url
        self.streaming_url = streaming_url
        self.token = token
        self.hashtags = hashtags
        self.mentions = mentions

    def __repr__(self) -> str:
        return f"MastodonAccount({self.base_url!r}, hashtags={self.hashtags!r}, token=**********)"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "p" and self.parts:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(content: str) -> str:
    """Mastodon's status HTML (paragraphs, line breaks, links, mention spans) as plain text."""
    parser = _Text()
    parser.feed(content)
    parser.close()
    lines = "".join(parser.parts).split("\n")
    return "\n".join(" ".join(line.split()) for line in lines).strip()
