"""The JSON shape of a post handed to Plaza by a bridge, a webhook or a replay file: ingest validates
it, and the gateway, which forwards the webhook, documents it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Self

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from plaza.contracts import Post, timestamp
from plaza.taxonomy import load_taxonomy

Token = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]


class PostIn(BaseModel):
    """A citizen's post. Unknown fields are refused, so a typo is reported, not ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    platform: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = Field(
        description="mastodon, bluesky, x, webhook, ...", examples=["mastodon"]
    )
    post_id: Token = Field(description="The platform's id of the post; unique per platform")
    author_handle: Token = Field(examples=["@maria@bcn.social"])
    author_id: Annotated[str, StringConstraints(max_length=256)] = Field(
        default="",
        description="The platform's stable id of the author's account (a Bluesky DID, a "
        "Mastodon or X account id), by which a request counts its reporters: a handle can "
        "change hands. Empty: the handle stands in.",
        examples=["109347502933145278"],
    )
    text: Annotated[str, StringConstraints(min_length=1, max_length=10_000)]
    lang: Annotated[str, StringConstraints(pattern=r"^([a-z]{2,3}(-[A-Za-z0-9]{2,8})*)?$")] = ""
    created_at: datetime | None = Field(default=None, description="ISO 8601 with a timezone")
    lat: float | None = Field(default=None, ge=-90, le=90, allow_inf_nan=False)
    # validate_default: a long left out is checked against a lat given (_paired)
    long: float | None = Field(
        default=None, ge=-180, le=180, allow_inf_nan=False, validate_default=True
    )
    address: Annotated[str, StringConstraints(max_length=500)] = ""
    media_urls: list[AnyHttpUrl] = Field(default_factory=list, max_length=10)
    reply_to: Annotated[str, StringConstraints(max_length=256)] = ""
    url: AnyHttpUrl | None = None
    service_code: str = Field(
        default="",
        description="The service the citizen chose (an Open311 POST): a code of the taxonomy. "
        "The classifier then only finds the district.",
        examples=["streetlight"],
    )

    @field_validator("*", mode="before")
    @classmethod
    def _without_nul(cls, value: object) -> object:
        """NUL characters (\\u0000) go: they mean nothing in a post, and PostgreSQL's text
        cannot hold them, so a post with one would fail at the router."""
        return value.replace("\x00", "") if isinstance(value, str) else value

    # Checks of one field are field validators, so the 422 names that field (a model's own
    # check is reported as the body's, which left a bridge's developer guessing).
    @field_validator("service_code")
    @classmethod
    def _known_service(cls, value: str) -> str:
        if value and value not in load_taxonomy():
            known = ", ".join(load_taxonomy())
            raise ValueError(f"{value!r} is unknown; known: {known}")
        return value

    @field_validator("created_at")
    @classmethod
    def _created_with_timezone(cls, value: datetime | None) -> datetime | None:
        return _with_timezone(value)

    @field_validator("long")
    @classmethod
    def _paired(cls, value: float | None, info: ValidationInfo) -> float | None:
        if "lat" not in info.data:
            return value  # lat was refused: its own error says why
        lat = info.data["lat"]
        if lat is not None and value is None:
            raise ValueError("missing: lat and long must be given together")
        if lat is None and value is not None:
            raise ValueError("given without lat: lat and long must be given together")
        return value

    def to_post(self, channel: str) -> Post:
        post = Post(
            platform=self.platform,
            post_id=self.post_id,
            author_handle=self.author_handle,
            author_id=self.author_id,
            text=self.text,
            language=self.lang,
            created_at=timestamp(self.created_at or datetime.now(UTC)),
            media_urls=[str(u) for u in self.media_urls],
            reply_to_post_id=self.reply_to,
            public_url=str(self.url) if self.url else "",
            channel=channel,
            address=self.address,
            service_code=self.service_code,
        )
        if self.lat is not None and self.long is not None:
            post.latitude = self.lat
            post.longitude = self.long
        return post


class WithdrawalIn(BaseModel):
    """A bridge saying a post it handed to Plaza was deleted by its author: who deleted it is
    named as the post named its author (author_id, else author_handle), and must be them."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    platform: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = Field(
        examples=["mastodon"]
    )
    post_id: Token = Field(description="The id of the deleted post, as it was POSTed")
    author_id: Annotated[str, StringConstraints(max_length=256)] = Field(
        default="", description="The deleting account's stable id, as the post gave it"
    )
    author_handle: Annotated[str, StringConstraints(max_length=256)] = Field(
        default="", description="The deleting account's handle, when the post gave no id"
    )
    deleted_at: datetime | None = Field(default=None, description="ISO 8601 with a timezone")
    location_only: bool = Field(
        default=False,
        description="The author took only the post's location off it: its point goes, its "
        "words and photos stay",
    )

    @field_validator("deleted_at")
    @classmethod
    def _deleted_with_timezone(cls, value: datetime | None) -> datetime | None:
        return _with_timezone(value)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.author_id and not self.author_handle:
            raise ValueError(
                "author_id or author_handle is required: only a post's author withdraws it"
            )
        return self


def _with_timezone(value: datetime | None) -> datetime | None:
    """A moment without a timezone could be any of 24 hours: refused, not guessed."""
    if value is not None and value.tzinfo is None:
        raise ValueError("must include a timezone, e.g. 2026-05-01T10:00:00Z")
    return value


class PostAccepted(BaseModel):
    status: str = "accepted"
    platform: str
    post_id: str
    event_id: str
