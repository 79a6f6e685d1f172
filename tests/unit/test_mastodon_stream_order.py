"""Mastodon streams notifications out of id order (it fans them out from background jobs:
mastodon/mastodon#19693). A mention that arrives after a newer one is still published: it was
dropped as "already seen" by id, and the cursor had passed it, so no catch-up found it either."""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

import httpx
import plaza_ingest.connectors.mastodon as connector
import pytest
from plaza.social import MastodonAccount
from pydantic import SecretStr


def mention(notification_id: str, status_id: str, text: str) -> dict[str, Any]:
    return {
        "id": notification_id,
        "type": "mention",
        "status": {
            "id": status_id,
            "account": {"id": "99", "acct": "marta"},
            "content": f"<p>{text}</p>",
            "created_at": "2026-11-27T10:00:00Z",
            "language": "ca",
            "media_attachments": [],
            "reblog": None,
            "in_reply_to_id": None,
            "url": None,
        },
    }


class Socket:
    """A streaming connection that delivers these messages, then ends."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages

    async def __aenter__(self) -> Socket:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def __aiter__(self) -> Any:
        for message in self.messages:
            yield message


async def test_a_mention_streamed_after_a_newer_one_is_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    late = [mention("102", "202", "Fanal apagat"), mention("101", "201", "Clot al carrer")]
    frames = [json.dumps({"event": "notification", "payload": json.dumps(n)}) for n in late]
    monkeypatch.setattr(connector, "connect", lambda *args, **kwargs: Socket(frames))
    stored: list[dict[str, Any]] = [mention("100", "200", "Brossa")]  # what the REST API has

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("verify_credentials"):
            return httpx.Response(200, json={"id": "1"})
        since = request.url.params.get("min_id")
        page = [n for n in stored if since is None or connector.newer(n["id"], since)]
        return httpx.Response(200, json=sorted(page, key=lambda n: -int(n["id"])))

    account = MastodonAccount(base_url="http://x", streaming_url="ws://x", token=SecretStr("t"))
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        stream = connector.MastodonStream(account, connector.Source.MENTIONS, http)
        published, cursor = [], "100"
        async for batch in stream.batches(cursor):
            published += [post.post_id for post in batch.posts]
            cursor = batch.cursor
    assert sorted(published) == ["201", "202"]
    assert cursor == "102"  # the cursor only moves forward


async def test_a_catch_up_reads_past_a_short_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mastodon filters a page after reading it (hidden, muted): a short page is not the end,
    and the catch-up after a reconnect stopped at the first one."""
    monkeypatch.setattr(connector, "connect", lambda *args, **kwargs: Socket([]))
    stored = [mention(str(n), str(100 + n), f"Fanal {n}") for n in range(101, 106)]

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("verify_credentials"):
            return httpx.Response(200, json={"id": "1"})
        since = request.url.params.get("min_id")
        page = [n for n in stored if since is None or connector.newer(n["id"], since)][:2]
        return httpx.Response(200, json=sorted(page, key=lambda n: -int(n["id"])))

    account = MastodonAccount(base_url="http://x", streaming_url="ws://x", token=SecretStr("t"))
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        stream = connector.MastodonStream(account, connector.Source.MENTIONS, http)
        published = [post.post_id async for batch in stream.batches("100") for post in batch.posts]
    assert published == ["201", "202", "203", "204", "205"]
