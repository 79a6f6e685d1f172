"""The Bluesky reply channel: an app.bsky.feed.post in the citizen's thread
(com.atproto.repo.createRecord with reply.root and reply.parent), at a record key (a TID)
derived from the reply id, so the same reply can never be created twice; mention facets for the
handles in the text (the worker sent), the resolution photo uploaded as a blob and embedded;
rate limits read from RateLimit-* headers and 429s; our reply found at its record key
(getRecord) when an earlier attempt's outcome is unknown. After a restore from a backup a post
read again may have had its reply under another request number, so at another key: the city's
repo is read once (listRecords: the keys are no clock, so all of it) for the replies it made
before the restore, and the reply looked for among those to the post.

The post to answer is the citizen's post's at:// URI (its id in Plaza): the channel reads it
(getRecord on the city's PDS, which asks the AppView for other PDSes' records) for its cid and
its thread's root."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final, cast

import httpx
from plaza.bluesky import HANDLE, MENTION, POST, AtUri, BlueskyAccount, tid_for

from plaza_notifier.channels import (
    ChannelReply,
    Gone,
    PostedReply,
    RateBudget,
    Refused,
    same_words,
)
from plaza_notifier.photos import PhotoFetcher

log = logging.getLogger(__name__)

Json = Mapping[str, object]
MAX_IMAGE_BYTES: Final = 1_000_000  # app.bsky.embed.images' limit per image
# Bluesky's own mention and link detection (@atproto/api's richtext): an @handle after a space,
# a bracket or the start; a URL up to the first space, without trailing punctuation.
MENTION_TEXT = re.compile(r"(?:^|(?<=[\s(]))@([a-zA-Z0-9.-]+)\b")
LINK_TEXT = re.compile(r"https?://\S+")
ALT: Final = {
    "ca": "Foto de la feina feta",
    "es": "Foto del trabajo realizado",
    "en": "Photo of the work done",
}
EXPIRED: Final = {"ExpiredToken", "InvalidToken"}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _obj(value: object) -> Json:
    return cast(Json, value) if isinstance(value, dict) else {}


def _error(response: httpx.Response) -> tuple[str, str]:
    """XRPC's error body: (error, message)."""
    try:
        body = _obj(response.json())
    except ValueError:
        return "", response.text[:200]
    return _str(body.get("error")), _str(body.get("message"))


def _strong_ref(value: object) -> dict[str, str] | None:
    ref = _obj(value)
    uri, cid = _str(ref.get("uri")), _str(ref.get("cid"))
    return {"uri": uri, "cid": cid} if uri and cid else None


def _reset_at(response: httpx.Response, now: datetime) -> datetime | None:
    """When the budget comes back: RateLimit-Reset (unix seconds) or Retry-After."""
    reset = response.headers.get("ratelimit-reset")
    if reset and reset.isdecimal():  # isdigit() takes "²", which int() refuses
        return datetime.fromtimestamp(int(reset), UTC)
    retry = response.headers.get("retry-after")
    if retry:
        if retry.isdecimal():
            return now + timedelta(seconds=int(retry))
        return parsedate_to_datetime(retry)
    return None


def byte_span(text: str, start: int, end: int) -> dict[str, int]:
    """A facet's index: UTF-8 byte offsets, as the AT Protocol counts them."""
    before = len(text[:start].encode())
    return {"byteStart": before, "byteEnd": before + len(text[start:end].encode())}


def _detail(response: httpx.Response) -> str:
    """An XRPC error body: its error name and message."""
    error, message = _error(response)
    return f"{error} {message}".strip()


class BlueskyChannel:
    def __init__(
        self,
        account: BlueskyAccount,
        http: httpx.AsyncClient,
        *,
        photos: PhotoFetcher | None = None,
        clock: type[datetime] = datetime,
    ) -> None:
        if account.password is None:
            raise ValueError("the Bluesky channel needs the account's password")
        self._account = account
        self._http = http
        self._photos = photos or PhotoFetcher()
        self._clock = clock
        self._budget = RateBudget(
            "bluesky",
            remaining_header="ratelimit-remaining",
            reset_at=_reset_at,
            detail=_detail,
            now=self._now,
        )
        self._did = ""
        self._access = ""
        self._refresh = ""
        self._dids: dict[str, str | None] = {}
        # The city's replies made before the restore, by the post they answer: (words, uri).
        self._before_restore: dict[str, list[tuple[list[str], str]]] | None = None

    @property
    def platform(self) -> str:
        return "bluesky"

    @property
    def mention_author(self) -> bool:
        return False  # a reply notifies the author of the post it answers

    def _now(self) -> datetime:
        return self._clock.now(UTC)

    def _url(self, method: str) -> str:
        return f"{self._account.pds_url}/xrpc/{method}"

    def _before_call(self) -> None:
        self._budget.before_call()

    def _check(self, response: httpx.Response, what: str) -> None:
        self._budget.check(response, what)

    async def _create_session(self) -> None:
        assert self._account.password is not None
        self._before_call()
        response = await self._http.post(
            self._url("com.atproto.server.createSession"),
            json={
                "identifier": self._account.handle,
                "password": self._account.password.get_secret_value(),
            },
        )
        self._check(response, "createSession")
        self._take_session(response)
        log.info("bluesky: signed in as %s (%s)", self._account.handle, self._did)

    def _take_session(self, response: httpx.Response) -> None:
        body = _obj(response.json())
        self._did = _str(body.get("did"))
        self._access = _str(body.get("accessJwt"))
        self._refresh = _str(body.get("refreshJwt"))

    async def _refresh_session(self) -> None:
        """A new access token from the refresh token; a new session if that has expired too."""
        self._before_call()
        response = await self._http.post(
            self._url("com.atproto.server.refreshSession"),
            headers={"Authorization": f"Bearer {self._refresh}"},
        )
        if response.status_code in (400, 401) and _error(response)[0] in EXPIRED | {""}:
            await self._create_session()
            return
        self._check(response, "refreshSession")
        self._take_session(response)

    async def _call(
        self,
        method: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Json | None = None,
        content: bytes | None = None,
        content_type: str = "",
    ) -> httpx.Response:
        """An authenticated XRPC call, after a session refresh if the access token expired."""
        if not self._access:
            await self._create_session()
        for attempt in (1, 2):
            self._before_call()
            headers = {"Authorization": f"Bearer {self._access}"}
            if content_type:
                headers["Content-Type"] = content_type
            if json is None and content is None:
                response = await self._http.get(self._url(method), params=params, headers=headers)
            else:
                response = await self._http.post(
                    self._url(method), json=json, content=content, headers=headers
                )
            expired = response.status_code in (400, 401) and _error(response)[0] in EXPIRED
            if not expired or attempt == 2:
                return response
            await self._refresh_session()
        raise AssertionError("unreachable")

    async def _get_record(self, uri: AtUri) -> Json | None:
        """{uri, cid, value} of a record, or None if there is none at that address."""
        response = await self._call(
            "com.atproto.repo.getRecord",
            params={"repo": uri.did, "collection": uri.collection, "rkey": uri.rkey},
        )
        if response.status_code in (400, 404) and _error(response)[0] in ("RecordNotFound", ""):
            return None
        self._check(response, "getRecord")
        return _obj(response.json())

    async def _did_of(self, handle: str) -> str | None:
        if handle not in self._dids:
            response = await self._call(
                "com.atproto.identity.resolveHandle", params={"handle": handle}
            )
            if response.status_code == 400:  # no such handle: plain text, as in the app
                log.warning("bluesky: @%s is no account; no mention for it", handle)
                self._dids[handle] = None
            else:
                self._check(response, "resolveHandle")
                self._dids[handle] = _str(_obj(response.json()).get("did")) or None
        return self._dids[handle]

    async def facets(self, text: str) -> list[dict[str, object]]:
        """Mention facets for the @handles that are accounts, link facets for the URLs."""
        facets: list[dict[str, object]] = []
        for match in MENTION_TEXT.finditer(text):
            handle = match.group(1).rstrip(".")
            if not HANDLE.match(handle):
                continue
            did = await self._did_of(handle)
            if did:
                facets.append(
                    {
                        "$type": "app.bsky.richtext.facet",
                        "index": byte_span(text, match.start(), match.start() + 1 + len(handle)),
                        "features": [{"$type": MENTION, "did": did}],
                    }
                )
        for match in LINK_TEXT.finditer(text):
            url = match.group(0).rstrip(".,;:!?)")
            facets.append(
                {
                    "$type": "app.bsky.richtext.facet",
                    "index": byte_span(text, match.start(), match.start() + len(url)),
                    "features": [{"$type": "app.bsky.richtext.facet#link", "uri": url}],
                }
            )
        return sorted(facets, key=lambda f: cast(dict[str, int], f["index"])["byteStart"])

    async def _image(self, photo_url: str, language: str) -> dict[str, object] | None:
        """An images embed with the photo, uploaded as a blob; None if the photo cannot be
        attached (plaza_notifier.photos says why)."""
        photo = await self._photos.get(photo_url, platform="bluesky", max_bytes=MAX_IMAGE_BYTES)
        if photo is None:
            return None
        response = await self._call(
            "com.atproto.repo.uploadBlob", content=photo.content, content_type=photo.content_type
        )
        self._check(response, "uploadBlob")
        blob = _obj(_obj(response.json()).get("blob"))
        alt = ALT.get(language, ALT["en"])
        return {"$type": "app.bsky.embed.images", "images": [{"alt": alt, "image": blob}]}

    def _posted(self, uri: str) -> PostedReply:
        return PostedReply(uri, AtUri.parse(uri).web_url)

    async def post(self, reply: ChannelReply) -> PostedReply:
        try:
            parent_uri = AtUri.parse(reply.in_reply_to_post_id)
        except ValueError as exc:
            raise Refused(f"bluesky: {exc}") from exc
        parent = await self._get_record(parent_uri)
        if parent is None:
            raise Gone(f"bluesky: the post {parent_uri} is gone (deleted by its author)")
        parent_ref = _strong_ref(parent)
        if parent_ref is None:
            raise Refused(f"bluesky: getRecord of {parent_uri} answered no cid")
        # A post that is itself a reply: ours joins the same thread, under the same root.
        root = _strong_ref(_obj(_obj(parent.get("value")).get("reply")).get("root")) or parent_ref
        record: dict[str, object] = {
            "$type": POST,
            "text": reply.text,
            "createdAt": self._now().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "reply": {"root": root, "parent": parent_ref},
        }
        if reply.language:
            record["langs"] = [reply.language]
        if facets := await self.facets(reply.text):
            record["facets"] = facets
        if reply.photo_url and (embed := await self._image(reply.photo_url, reply.language)):
            record["embed"] = embed
        rkey = tid_for(reply.reply_id)
        response = await self._call(
            "com.atproto.repo.createRecord",
            json={"repo": self._did, "collection": POST, "rkey": rkey, "record": record},
        )
        if response.status_code >= 500 or "already" in _error(response)[1]:
            # The PDS answers a bare 500 when a record is already at this key: an earlier
            # attempt (whose answer was lost) posted it. Only we write this key of our repo.
            found = await self.find(reply)
            if found is not None:
                log.info("bluesky: reply %s was already posted as %s", reply.reply_id, found)
                return found
        self._check(response, "createRecord")
        return self._posted(_str(_obj(response.json()).get("uri")))

    async def find(self, reply: ChannelReply) -> PostedReply | None:
        if not self._did:
            await self._create_session()
        record = await self._get_record(AtUri(self._did, POST, tid_for(reply.reply_id)))
        if record is not None:
            return self._posted(_str(record.get("uri")))
        if reply.restored_at is None:
            return None
        replies = await self._replies_before(reply.restored_at)
        wanted = reply.text.split()
        for found, uri in replies.get(reply.in_reply_to_post_id, []):
            if same_words(reply, wanted, found):
                return self._posted(uri)
        return None

    async def _replies_before(
        self, restored_at: datetime
    ) -> dict[str, list[tuple[list[str], str]]]:
        """The city's replies made before the restore, by the post each answers (read once)."""
        if self._before_restore is None:
            replies: dict[str, list[tuple[list[str], str]]] = {}
            params = {"repo": self._did, "collection": POST, "limit": "100"}
            while True:
                response = await self._call("com.atproto.repo.listRecords", params=params)
                self._check(response, "listRecords")
                body = _obj(response.json())
                records = body.get("records")
                for record in map(_obj, records if isinstance(records, list) else []):
                    value = _obj(record.get("value"))
                    parent = _str(_obj(_obj(value.get("reply")).get("parent")).get("uri"))
                    made = _str(value.get("createdAt")).replace("Z", "+00:00")
                    try:
                        before = datetime.fromisoformat(made) < restored_at
                    except ValueError:
                        before = True  # no readable time: it may be one
                    if parent and before:
                        words = _str(value.get("text")).split()
                        replies.setdefault(parent, []).append((words, _str(record.get("uri"))))
                cursor = _str(body.get("cursor"))
                if not cursor or not records:
                    break
                params = {**params, "cursor": cursor}
            log.info(
                "bluesky: %d replies the city made before the restore, to look among",
                sum(map(len, replies.values())),
            )
            self._before_restore = replies
        return self._before_restore
