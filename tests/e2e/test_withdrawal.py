"""End to end on real Kafka and PostgreSQL, through the five services: a bridge posts a citizen's
report and later says its author deleted it; Open311, the manager API and the queue then show the
request withdrawn by its author instead of its words, photo, handle and address. A bridge key
withdraws only for its platforms, and only the post's author withdraws it."""

from __future__ import annotations

import asyncio

import httpx

from tests.e2e import test_pipeline
from tests.e2e.test_pipeline import Stack, post, wait_in_queue

# The pipeline's five services, started once for this module as for that one.
stack = test_pipeline.stack
stack_dir = test_pipeline.stack_dir

WORDS = "La paperera de la plaça de la Virreina vessa des de dissabte, fa pudor"
PHOTO = "https://files.bcn.social/media/paperera.jpg"
WITHDRAWN = "Withdrawn by its author."


async def detail_once(
    client: httpx.AsyncClient, stack: Stack, request_id: str, done: str
) -> dict[str, object]:
    for _ in range(300):
        detail = dict((await client.get(f"/api/v1/requests/{request_id}")).json())
        if detail["description"] == done:
            return detail
        await asyncio.sleep(0.1)
    raise AssertionError(f"request {request_id} never became {done!r}\n{stack.logs()}")


async def test_a_post_its_author_deleted_leaves_open311_and_the_manager_api(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.api, timeout=10, headers=stack.headers) as admin:
        report = post(
            "withdrawn-1",
            WORDS,
            author_id="7001",
            author_handle="@laia@bcn.social",
            lat=41.4050,
            long=2.1590,
            address="Plaça de la Virreina, 4, 2n 1a",
            media_urls=[PHOTO],
        )
        assert (await admin.post("/api/v1/posts", json=report)).status_code == 202
        item = await wait_in_queue(admin, stack, "06", "withdrawn-1")
        request_id = str(item["service_request_id"])
        [published] = (await admin.get(f"/open311/v2/requests/{request_id}.json")).json()
        assert published["description"] == WORDS and published["media_url"] == PHOTO

        made = await admin.post(
            "/api/v1/admin/keys",
            json={"name": "bluesky-bridge", "role": "bridge", "scopes": ["bluesky"]},
        )
        assert made.status_code == 201, made.text
        bluesky_bridge = {"Authorization": f"Bearer {made.json()['key']}"}
        withdrawal = {"platform": "mastodon", "post_id": "withdrawn-1", "author_id": "7001"}
        # A bridge key for Bluesky does not speak for Mastodon's posts.
        refused = await admin.post(
            "/api/v1/posts/withdrawals", json=withdrawal, headers=bluesky_bridge
        )
        assert refused.status_code == 403, refused.text
        assert "bluesky" in refused.json()["detail"]
        # Somebody else's account: accepted on the bus, refused by the router.
        other = await admin.post(
            "/api/v1/posts/withdrawals", json={**withdrawal, "author_id": "7002"}
        )
        assert other.status_code == 202
        for _ in range(300):
            if "who is not its author: refused" in stack.services["router"].log():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the router took no notice\n{stack.logs()}")
        still = (await admin.get(f"/api/v1/requests/{request_id}")).json()
        assert still["description"] == WORDS and not still["withdrawn"]

        accepted = await admin.post("/api/v1/posts/withdrawals", json=withdrawal)
        assert accepted.status_code == 202, accepted.text
        detail = await detail_once(admin, stack, request_id, WITHDRAWN)

        assert detail["withdrawn"] is True
        assert detail["status"] == "new"  # still there for its district's manager
        assert detail["author_handle"] == "" and detail["media_urls"] == []
        assert detail["address"] is None and detail["lat"] is None
        [mine] = detail["reports"]  # type: ignore[misc]
        assert mine["withdrawn"] is True and mine["text"] == WITHDRAWN
        assert mine["author_handle"] == ""
        [public] = (await admin.get(f"/open311/v2/requests/{request_id}.json")).json()
        assert public["description"] == WITHDRAWN
        assert public["media_url"] is None and public["address"] is None
        assert public["lat"] is None and public["long"] is None
        queue = (await admin.get("/api/v1/districts/06/queue")).json()["items"]
        [listed] = [i for i in queue if i["service_request_id"] == request_id]
        assert listed["description"] == WITHDRAWN and listed["author_handle"] == ""
