"""Bluesky (AT Protocol) for Plaza: the city's account settings, shared by ingest (its Jetstream
connector) and the notifier (its reply channel), and the protocol's identifiers (at:// URIs and
TIDs). The password is a SecretStr: never logged."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

from pydantic import AnyHttpUrl, AnyUrl, Field, SecretStr, model_validator

from plaza.settings import PlazaSettings, read_secret

POST: Final = "app.bsky.feed.post"
MENTION: Final = "app.bsky.richtext.facet#mention"
DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]{1,2048}$")
# A handle is a domain name: labels of letters, digits and hyphens, the last one not numeric.
HANDLE = re.compile(
    r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
)
DEFAULT_IMAGE_URL: Final = "https://cdn.bsky.app/img/feed_fullsize/plain/{did}/{cid}@jpeg"


def _secret(value: SecretStr | None, file: Path | None) -> SecretStr | None:
    return read_secret(value, file, "BLUESKY_PASSWORD")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip().lstrip("@") for part in value.split(",") if part.strip())


class BlueskySettings(PlazaSettings):
    """Bluesky is on when PLAZA_BLUESKY_HANDLE is set. Ingest needs no password (Jetstream and
    handle resolution are public); the notifier does (it posts as the city)."""

    bluesky_handle: str | None = Field(
        default=None,
        description="PLAZA_BLUESKY_HANDLE: the city's account (ajuntament.bsky.social); turns "
        "Bluesky on in ingest and in the notifier",
    )
    bluesky_password: SecretStr | None = Field(
        default=None,
        description="PLAZA_BLUESKY_PASSWORD: an app password of the city's account (notifier)",
    )
    bluesky_password_file: Path | None = Field(
        default=None, description="PLAZA_BLUESKY_PASSWORD_FILE: a file holding it instead"
    )
    bluesky_pds_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://bsky.social"),
        description="PLAZA_BLUESKY_PDS_URL: the city account's PDS (sessions, posts, getRecord, "
        "resolveHandle)",
    )
    bluesky_jetstream_url: AnyUrl = Field(
        default=AnyUrl("wss://jetstream2.us-east.bsky.network"),
        description="PLAZA_BLUESKY_JETSTREAM_URL: the Jetstream instance ingest follows",
    )
    bluesky_mentions: str = Field(
        default="",
        description="PLAZA_BLUESKY_MENTIONS: the city's accounts whose mentions come in, handles "
        "or DIDs, comma-separated (default: PLAZA_BLUESKY_HANDLE)",
    )
    bluesky_plc_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://plc.directory"),
        description="PLAZA_BLUESKY_PLC_URL: where did:plc documents (authors' handles) are read",
    )
    bluesky_image_url: str = Field(
        default=DEFAULT_IMAGE_URL,
        description="PLAZA_BLUESKY_IMAGE_URL: an image's URL from its author's {did} and blob "
        "{cid} (Bluesky's CDN; or a PDS's /xrpc/com.atproto.sync.getBlob?did={did}&cid={cid})",
    )
    bluesky_rewind_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="PLAZA_BLUESKY_REWIND_SECONDS: how far before its cursor the connector "
        "resumes Jetstream (repeats are recognised)",
    )

    @model_validator(mode="after")
    def _check_bluesky(self) -> Self:
        _secret(self.bluesky_password, self.bluesky_password_file)
        if self.bluesky_handle is not None and not HANDLE.match(self.bluesky_handle.lstrip("@")):
            raise ValueError(f"PLAZA_BLUESKY_HANDLE={self.bluesky_handle!r} is not a handle")
        for account in _csv(self.bluesky_mentions):
            if not (HANDLE.match(account) or DID.match(account)):
                raise ValueError(f"PLAZA_BLUESKY_MENTIONS: {account!r} is neither handle nor DID")
        if "{did}" not in self.bluesky_image_url or "{cid}" not in self.bluesky_image_url:
            raise ValueError("PLAZA_BLUESKY_IMAGE_URL must hold {did} and {cid}")
        return self

    @property
    def bluesky(self) -> BlueskyAccount | None:
        if not self.bluesky_handle:
            return None
        handle = self.bluesky_handle.lstrip("@")
        return BlueskyAccount(
            handle=handle,
            password=_secret(self.bluesky_password, self.bluesky_password_file),
            pds_url=str(self.bluesky_pds_url).rstrip("/"),
            jetstream_url=str(self.bluesky_jetstream_url).rstrip("/"),
            plc_url=str(self.bluesky_plc_url).rstrip("/"),
            mentions=_csv(self.bluesky_mentions) or (handle,),
            image_url=self.bluesky_image_url,
            rewind_seconds=self.bluesky_rewind_seconds,
        )


class BlueskyAccount:
    """The city's Bluesky account and where Plaza reaches it (the password stays secret)."""

    __slots__ = (
        "handle",
        "image_url",
        "jetstream_url",
        "mentions",
        "password",
        "pds_url",
        "plc_url",
        "rewind_seconds",
    )

    def __init__(
        self,
        *,
        handle: str,
        password: SecretStr | None,
        pds_url: str,
        jetstream_url: str,
        plc_url: str = "https://plc.directory",
        mentions: tuple[str, ...] = (),
        image_url: str = DEFAULT_IMAGE_URL,
        rewind_seconds: float = 5.0,
    ) -> None:
        self.handle = handle
        self.password = password
        self.pds_url = pds_url
        self.jetstream_url = jetstream_url
        self.plc_url = plc_url
        self.mentions = mentions or (handle,)
        self.image_url = image_url
        self.rewind_seconds = rewind_seconds

    def __repr__(self) -> str:
        return f"BlueskyAccount({self.handle!r}, pds={self.pds_url!r}, password=**********)"


@dataclass(frozen=True, slots=True)
class AtUri:
    """at://<did>/<collection>/<rkey>: a record's address, and a Bluesky post's id in Plaza."""

    did: str
    collection: str
    rkey: str

    @classmethod
    def parse(cls, uri: str) -> AtUri:
        parts = uri.removeprefix("at://").split("/") if uri.startswith("at://") else []
        if len(parts) != 3 or not all(parts) or not DID.match(parts[0]):
            raise ValueError(f"{uri!r} is not the at:// URI of a record")
        return cls(*parts)

    def __str__(self) -> str:
        return f"at://{self.did}/{self.collection}/{self.rkey}"

    @property
    def web_url(self) -> str:
        """Where a person sees the post (the Bluesky app takes a DID in place of a handle)."""
        return f"https://bsky.app/profile/{self.did}/post/{self.rkey}"


S32: Final = "234567abcdefghijklmnopqrstuvwxyz"  # base32-sortable, the alphabet of TIDs
# Derived TIDs take their time from a hash, within 2015-01-01 .. ~2023-12: in the past, like an
# imported post's, never "in the future"; 48 bits of time and 10 of clock id leave 58 of the hash.
_TID_BASE_US: Final = 1_420_070_400_000_000


def tid(timestamp_us: int, clock_id: int = 0) -> str:
    """A TID (the record key of every app.bsky.feed.post): 53 bits of microseconds, 10 of clock."""
    if not 0 <= clock_id < 1024 or not 0 <= timestamp_us < 1 << 53:
        raise ValueError("a TID holds 53 bits of microseconds and a 10-bit clock id")
    value = (timestamp_us << 10) | clock_id
    return "".join(S32[(value >> (5 * i)) & 31] for i in range(12, -1, -1))


def tid_for(key: str) -> str:
    """The TID derived from `key` (a reply id): the same key always names the same record, so a
    reply created under it can never be created twice."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return tid(_TID_BASE_US + (digest >> 16 & (1 << 48) - 1), digest & 1023)
