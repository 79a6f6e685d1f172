"""X's compliance check without I/O: which of a job's results withdraw a post (delete,
deactivate, protect, suspend, drop), which its point only (scrub_geo), and which nothing (an
action Plaza does not know, an id Plaza did not ask about, a line that is not JSON); its
progress as stored; how often it runs (the setting)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from plaza.settings import SettingsError, load
from plaza.x import XAccount, XSettings
from plaza_ingest.connectors.base import Deletion
from plaza_ingest.connectors.x_compliance import JobPolling, Progress, XCompliance, deletions_in
from prometheus_client import REGISTRY
from pydantic import SecretStr

ASKED = ["101", "102", "103", "104", "105", "106", "107"]


def line(post_id: str, action: str, reason: str = "") -> str:
    return json.dumps(
        {
            "id": post_id,
            "action": action,
            "created_at": "2026-05-04T10:00:00.000Z",
            "redacted_at": "2026-05-05T08:30:00.000Z",
            "reason": reason or action,
        }
    )


def actions(action: str) -> float:
    labels = {"action": action}
    return REGISTRY.get_sample_value("plaza_x_compliance_actions_total", labels) or 0.0


def test_the_actions_that_take_a_post_out_of_view_withdraw_it_and_scrub_geo_its_point() -> None:
    geo_before, other_before = actions("scrub_geo"), actions("reinstate")
    results = "\n".join(
        [
            line("101", "delete", "deleted"),
            line("102", "delete", "suspended"),
            line("103", "deactivate"),
            line("104", "protect"),
            line("105", "suspend"),
            line("106", "scrub_geo"),
            line("107", "reinstate"),  # no action Plaza knows: counted, left as it is
            "",
            "<html>not json</html>",
            line("999", "delete"),  # not asked about: not Plaza's
        ]
    )

    found = deletions_in(results, ASKED)

    at = datetime(2026, 5, 5, 8, 30, tzinfo=UTC)
    assert found == [
        *(Deletion("x", i, deleted_at=at) for i in ("101", "102", "103", "104", "105")),
        Deletion("x", "106", deleted_at=at, location_only=True),  # its point only
    ]
    assert actions("scrub_geo") == geo_before + 1
    assert actions("reinstate") == other_before + 1


def test_a_result_without_a_date_is_withdrawn_now() -> None:
    [deletion] = deletions_in(json.dumps({"id": "107", "action": "delete"}), ASKED)
    assert deletion.deleted_at is None  # post_withdrawn dates it now


def test_progress_is_stored_and_read_back_and_an_unreadable_one_means_check_now() -> None:
    now = datetime(2026, 5, 5, 12, 0, tzinfo=UTC)
    stored = Progress(now + timedelta(hours=4), "1372966999991541762")
    assert Progress.parse(stored.dump(), now) == stored
    assert Progress.parse(None, now) == Progress(now)  # the very first start
    assert Progress.parse("not json", now) == Progress(now)


def test_job_status_is_asked_ever_less_often() -> None:
    polling = JobPolling(first=5, most=300)
    assert [polling.delay(n) for n in (1, 2, 3, 7, 20)] == [5, 10, 20, 300, 300]


def test_the_check_runs_every_four_hours_unless_set_and_never_less_often_than_eight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLAZA_X_USER_ID", "1234")
    monkeypatch.setenv("PLAZA_X_USERNAME", "bcn")
    monkeypatch.setenv("PLAZA_X_BEARER_TOKEN", "t")
    x = load(XSettings).x
    assert x is not None and x.compliance_hours == 4.0
    monkeypatch.setenv("PLAZA_X_COMPLIANCE_HOURS", "2")
    x = load(XSettings).x
    assert x is not None and x.compliance_hours == 2.0
    for wrong in ("24", "0", "soon"):
        monkeypatch.setenv("PLAZA_X_COMPLIANCE_HOURS", wrong)
        with pytest.raises(SettingsError, match="PLAZA_X_COMPLIANCE_HOURS"):
            load(XSettings)


def rounds(outcome: str) -> float:
    labels = {"outcome": outcome}
    return REGISTRY.get_sample_value("plaza_x_compliance_rounds_total", labels) or 0.0


async def test_an_x_out_of_reach_is_a_round_that_failed_counted_and_tried_again_soon() -> None:
    """No connection to X is a round that did not complete, counted as `unreachable` (what
    PlazaXComplianceFailing watches) and tried again a minute later, not an error that leaves
    the connector's runner restarting it with nothing counted."""
    now = datetime(2026, 5, 5, 8, 0, tzinfo=UTC)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def held() -> list[str]:
        return ["101"]

    account = XAccount(
        api_url="http://127.0.0.1:9", user_id="1234", username="bcn", bearer_token=SecretStr("t")
    )
    before = rounds("unreachable")
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        check = XCompliance(account, http, held, clock=lambda: now)
        batches = check.batches(None)
        first = await anext(batches)
        assert Progress.parse(first.cursor, now) == Progress(now)  # the first round: at once
        failed = await anext(batches)
        await batches.aclose()
    assert rounds("unreachable") == before + 1
    assert Progress.parse(failed.cursor, now) == Progress(now + timedelta(seconds=60))
    assert failed.deletions == ()
