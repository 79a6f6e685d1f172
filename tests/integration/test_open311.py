"""Open311 GeoReport v2 on real PostgreSQL: every endpoint in JSON and XML as the spec defines
them, a third-party client (georeport, from PyPI) working unchanged against a real server, a
POSTed request going through ingest, the classifier and the router, and privacy."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from xml.etree import ElementTree

import httpx
import pytest
from georeport import GeoReport
from plaza.bus.memory import MemoryBus
from plaza.city import City
from plaza.contracts import TOPICS, Envelope, Post, PostReceived, decode, envelope, timestamp
from plaza.db.models import Open311Submission, ServiceRequest
from plaza.lifecycle import Command, act, add_note
from plaza.policy import RoutingTable, SlaPolicy
from plaza.requests import Action
from plaza.taxonomy import load_taxonomy
from plaza_api.access import AccessConfig
from plaza_api.auth import Role
from plaza_api.limits import Limits
from plaza_classifier.handler import ClassifyPost
from plaza_ingest.app import create_app as create_ingest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api_helpers import Server, client, gateway, new_key
from tests.integration.lifecycle_helpers import as_event, classified, router

W3C = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
REQUEST_FIELDS = [
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
]


async def change(
    sessions: async_sessionmaker[AsyncSession], rid: int, command: Command, at: datetime
) -> None:
    async with sessions.begin() as s:
        await act(
            s,
            rid,
            command,
            now=at,
            sla=SlaPolicy.load(),
            routing=RoutingTable.load(),
            city=City.barcelona(),
        )


@pytest.fixture
async def requests(sessions: async_sessionmaker[AsyncSession]) -> datetime:
    """Three requests: 1 open (with a public and an internal note), 2 resolved, 3 another
    service, reported with a phone number and a plate in its text."""
    now = datetime.now(UTC).replace(microsecond=0)
    route = router(sessions)
    await route(as_event(classified("p1", at=now - timedelta(hours=3))))
    await route(
        as_event(
            classified("p2", at=now - timedelta(hours=2), latlon=(41.3870, 2.1700), barri="02")
        )
    )
    await route(
        as_event(
            classified(
                "p3",
                at=now - timedelta(hours=1),
                service_code="traffic",
                latlon=(41.3800, 2.1400),
                text="Cotxe abandonat 1234 BCD, truqueu-me al 612 345 678 o a marta@example.org",
            )
        )
    )
    async with sessions.begin() as s:
        await add_note(s, 1, actor="m", note="Ho mirem, gràcies", public=True, now=now)
        await add_note(s, 1, actor="m", note="El veí és conflictiu", public=False, now=now)
    await change(sessions, 2, Command(Action.ACKNOWLEDGE, actor="m"), now)
    await change(
        sessions,
        2,
        Command(
            Action.RESOLVE, actor="m", note="Fanal canviat", photo_url="https://x.example/f.jpg"
        ),
        now,
    )
    return now


@pytest.fixture
async def api(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[httpx.AsyncClient]:
    async with client(gateway(sessions)) as c:
        yield c


async def test_services_list_every_code_of_the_taxonomy_in_json_and_xml(
    api: httpx.AsyncClient,
) -> None:
    services = (await api.get("/open311/v2/services.json")).json()
    assert [s["service_code"] for s in services] == list(load_taxonomy())
    for s in services:
        assert set(s) == {
            "service_code",
            "service_name",
            "description",
            "metadata",
            "type",
            "keywords",
            "group",
        }
        assert s["metadata"] is True and s["type"] in ("realtime", "batch", "blackbox")
    catalan = (await api.get("/open311/v2/services.json", params={"lang": "ca"})).json()
    assert catalan[0]["service_name"] == "Enllumenat públic"
    spanish = (await api.get("/open311/v2/services.json", params={"lang": "es-ES"})).json()
    assert spanish[0]["service_name"] == "Alumbrado público"
    french = await api.get("/open311/v2/services.json", params={"lang": "fr"})
    assert french.status_code == 400 and "en, es, ca" in french.json()[0]["description"]
    xml = await api.get("/open311/v2/services.xml")
    assert xml.headers["content-type"].startswith("text/xml")
    root = ElementTree.fromstring(xml.content)
    assert root.tag == "services"
    assert [e.findtext("service_code") for e in root.findall("service")] == list(load_taxonomy())
    assert root.find("service/metadata").text == "true"  # type: ignore[union-attr]
    definition = (await api.get("/open311/v2/services/streetlight.json")).json()
    assert definition["service_code"] == "streetlight"
    [attribute] = definition["attributes"]
    assert attribute["code"] == "language" and attribute["datatype"] == "singlevaluelist"
    assert [v["key"] for v in attribute["values"]] == ["ca", "es", "en"]
    xml_def = ElementTree.fromstring((await api.get("/open311/v2/services/noise.xml")).content)
    assert xml_def.tag == "service_definition"
    assert xml_def.findtext("attributes/attribute/values/value/key") == "ca"
    discovery = ElementTree.fromstring((await api.get("/open311/v2/discovery.xml")).content)
    assert discovery.findtext("endpoints/endpoint/specification") == (
        "http://wiki.open311.org/GeoReport_v2"
    )
    assert [f.text for f in discovery.findall("endpoints/endpoint/formats/format")] == [
        "text/xml",
        "application/json",
    ]
    assert discovery.findtext("endpoints/endpoint/url") == "http://plaza/open311/v2"


async def test_discovery_names_the_configured_address_not_the_host_asked(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The spec's endpoint url "will likely not change": with PLAZA_PUBLIC_URL set, a Host
    header (a proxy's, or one made up) does not move it."""
    app = gateway(sessions, access=AccessConfig(public_url="https://plaza.bcn.example"))
    async with client(app) as api:
        found = await api.get("/open311/v2/discovery.json", headers={"host": "evil.example"})
    assert found.json()["endpoints"][0]["url"] == "https://plaza.bcn.example/open311/v2"


async def test_requests_have_the_spec_fields_and_every_filter_works(
    api: httpx.AsyncClient, requests: datetime
) -> None:
    listed = (await api.get("/open311/v2/requests.json")).json()
    assert [r["service_request_id"] for r in listed] == ["3", "2", "1"]  # newest first
    for r in listed:
        assert list(r) == REQUEST_FIELDS
        for field in ("requested_datetime", "updated_datetime", "expected_datetime"):
            assert W3C.match(r[field]), r[field]

    async def ids(**params: object) -> list[str]:
        response = await api.get("/open311/v2/requests.json", params=params)
        assert response.status_code == 200, response.text
        return [r["service_request_id"] for r in response.json()]

    now = requests
    assert await ids(service_request_id="1,3") == ["3", "1"]
    assert await ids(service_code="traffic") == ["3"]
    assert await ids(service_code="streetlight,traffic") == ["3", "2", "1"]
    assert await ids(status="closed") == ["2"]
    assert await ids(status="open") == ["3", "1"]
    assert await ids(status="open,closed") == ["3", "2", "1"]
    window = {
        "start_date": (now - timedelta(hours=2, minutes=30)).isoformat(),
        "end_date": (now - timedelta(minutes=90)).isoformat(),
    }
    assert await ids(**window) == ["2"]
    assert await ids(start_date=(now + timedelta(days=1)).isoformat().replace("+00:00", "Z")) == []
    assert await ids(updated_after=(now - timedelta(minutes=30)).isoformat()) == ["2", "1"]
    assert await ids(updated_before=(now - timedelta(minutes=30)).isoformat()) == ["3"]
    assert await ids(page_size=2) == ["3", "2"]
    assert await ids(page_size=2, page=2) == ["1"]
    assert await ids(page=3, page_size=2) == []
    resolved = (await api.get("/open311/v2/requests/2.json")).json()
    assert len(resolved) == 1 and resolved[0]["status"] == "closed"
    assert resolved[0]["status_notes"] == "Fanal canviat"


async def test_the_list_shows_each_request_as_it_is_now(
    api: httpx.AsyncClient, requests: datetime, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The list (read as plain columns, its items kept as JSON by their values) shows each
    request as the request's own endpoint and the XML list do, and a change at once."""

    async def listed() -> dict[str, dict[str, object]]:
        response = await api.get("/open311/v2/requests.json")
        assert response.headers["content-type"] == "application/json"
        return {r["service_request_id"]: r for r in response.json()}

    before = await listed()
    assert set(before) == {"1", "2", "3"}
    xml = ElementTree.fromstring((await api.get("/open311/v2/requests.xml")).content)
    for item in xml.findall("request"):
        rid = item.findtext("service_request_id") or ""
        [one] = (await api.get(f"/open311/v2/requests/{rid}.json")).json()
        assert before[rid] == one
        assert item.findtext("description") == one["description"]
        assert item.findtext("updated_datetime") == one["updated_datetime"]
    later = requests + timedelta(minutes=5)
    await change(sessions, 1, Command(Action.ACKNOWLEDGE, actor="m"), later)
    await change(sessions, 1, Command(Action.RESOLVE, actor="m", note="Arreglat"), later)
    after = await listed()
    assert after["1"]["status"] == "closed" and after["1"]["status_notes"] == "Arreglat"
    assert after["1"]["updated_datetime"] != before["1"]["updated_datetime"]
    assert after["2"] == before["2"] and after["3"] == before["3"]


async def test_extensions_add_district_barri_extended_status_public_notes_and_channel(
    api: httpx.AsyncClient, requests: datetime
) -> None:
    plain = (await api.get("/open311/v2/requests/1.json")).json()[0]
    assert "extended_attributes" not in plain
    [one] = (await api.get("/open311/v2/requests/1.json", params={"extensions": "true"})).json()
    extended = one["extended_attributes"]
    assert extended["district_code"] == "06" and extended["district_name"] == "Gràcia"
    assert extended["barri_code"] == "31" and extended["barri_name"]
    assert extended["extended_status"] == "OPEN" and extended["channel"] == "webhook"
    assert [n["description"] for n in extended["notes"]] == ["Ho mirem, gràcies"]  # not internal
    listed = (await api.get("/open311/v2/requests.json", params={"extensions": "true"})).json()
    assert {
        r["service_request_id"]: r["extended_attributes"]["extended_status"] for r in listed
    } == {
        "1": "OPEN",
        "2": "FIXED",
        "3": "OPEN",
    }
    xml = ElementTree.fromstring(
        (await api.get("/open311/v2/requests/1.xml", params={"extensions": "true"})).content
    )
    assert xml.findtext("request/extended_attributes/district_name") == "Gràcia"
    assert xml.findtext("request/extended_attributes/notes/note/description") == (
        "Ho mirem, gràcies"
    )


async def test_xml_is_the_spec_shape(api: httpx.AsyncClient, requests: datetime) -> None:
    response = await api.get("/open311/v2/requests.xml")
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.content.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = ElementTree.fromstring(response.content)
    assert root.tag == "service_requests"
    requests_ = root.findall("request")
    assert [r.findtext("service_request_id") for r in requests_] == ["3", "2", "1"]
    assert [child.tag for child in requests_[0]] == REQUEST_FIELDS
    assert W3C.match(requests_[0].findtext("requested_datetime") or "")
    assert requests_[0].find("address_id") is not None  # empty elements are there, empty


async def test_errors_are_open311s_own_format(api: httpx.AsyncClient) -> None:
    cases = [
        ("/open311/v2/requests/999.json", 404),
        ("/open311/v2/requests/abc.json", 404),
        ("/open311/v2/requests/99999999999999999999.json", 404),  # past bigint: no such id
        ("/open311/v2/requests/%C2%B2.json", 404),  # "²" is a digit to str.isdigit, not to int
        ("/open311/v2/requests.json?service_request_id=1,%C2%B2", 400),
        ("/open311/v2/services/nope.json", 404),
        ("/open311/v2/requests.json?status=pending", 400),
        ("/open311/v2/requests.json?service_code=streetlights", 400),  # a typo: not an empty list
        ("/open311/v2/requests.json?service_code=streetlight,nope", 400),
        ("/open311/v2/requests.json?start_date=2026-01-01T00:00:00", 400),
        ("/open311/v2/requests.json?start_date=yesterday", 400),
        ("/open311/v2/requests.json?jurisdiction_id=madrid", 404),
        ("/open311/v2/requests.json?api_key=plz_wrong", 403),
        ("/open311/v2/requests.yaml", 404),
        ("/open311/v2/tokens/nope.json", 404),
    ]
    for path, status in cases:
        response = await api.get(path)
        assert response.status_code == status, path
        [error] = response.json()
        assert set(error) == {"code", "description"} and error["code"] == status, path
    xml = await api.get("/open311/v2/requests/999.xml")
    root = ElementTree.fromstring(xml.content)
    assert root.tag == "errors" and root.findtext("error/code") == "404"
    assert (await api.get("/open311/v2/requests.json?jurisdiction_id=barcelona")).status_code == 200
    huge = await api.get("/open311/v2/requests.json?service_request_id=99999999999999999999")
    assert huge.status_code == 200 and huge.json() == []


async def test_public_text_is_masked_and_reporters_are_never_shown(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], requests: datetime
) -> None:
    async with sessions.begin() as s:
        await s.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == 3)
            .values(address="Carrer de Verdi 12, 3r 2a, 08012 Barcelona")
        )
    [r] = (await api.get("/open311/v2/requests/3.json", params={"extensions": "true"})).json()
    assert r["description"] == "Cotxe abandonat [plate], truqueu-me al [phone] o a [email]"
    assert r["address"] == "Carrer de Verdi 12, 08012 Barcelona"  # not which flat
    paths = (
        "/open311/v2/requests.json",
        "/open311/v2/requests.json?extensions=true",
        "/open311/v2/requests.xml",
    )
    for path in paths:
        text = (await api.get(path)).text
        assert "bcn.social" not in text and "612 345 678" not in text  # no handle
        assert "marta@example.org" not in text and "1234 BCD" not in text
        assert "conflictiu" not in text  # the internal note
        assert "3r 2a" not in text


async def test_the_updates_feed_has_public_changes_only(
    api: httpx.AsyncClient, requests: datetime
) -> None:
    since = (requests - timedelta(minutes=1)).isoformat()
    updates = (
        await api.get("/open311/v2/servicerequestupdates.json", params={"start_date": since})
    ).json()
    assert [(u["service_request_id"], u["status"], u["description"]) for u in updates] == [
        ("1", "OPEN", "Ho mirem, gràcies"),
        ("2", "INVESTIGATING", ""),
        ("2", "FIXED", "Fanal canviat"),
    ]
    assert updates[2]["media_url"] == "https://x.example/f.jpg"
    assert all(W3C.match(u["updated_datetime"]) for u in updates)
    xml = ElementTree.fromstring(
        (
            await api.get("/open311/v2/servicerequestupdates.xml", params={"start_date": since})
        ).content
    )
    assert xml.tag == "service_requests_updates"
    assert [u.findtext("status") for u in xml.findall("request_update")] == [
        "OPEN",
        "INVESTIGATING",
        "FIXED",
    ]
    assert xml.findtext("request_update/update_id")


@pytest.mark.parametrize("output_format", ["json", "xml"])
async def test_a_third_party_open311_client_works_unchanged(
    sessions: async_sessionmaker[AsyncSession], requests: datetime, output_format: str
) -> None:
    async with Server(gateway(sessions)) as server:
        geo = GeoReport(
            f"{server.url}/open311/v2", jurisdiction="barcelona", output_format=output_format
        )
        services = await asyncio.to_thread(geo.get_service_list)
        assert [s["service_code"] for s in services] == list(load_taxonomy())
        definition = await asyncio.to_thread(geo.get_service_definition, "streetlight")
        assert definition["service_code"] == "streetlight"
        listed = await asyncio.to_thread(geo.get_service_requests, status="open")
        assert [r["service_request_id"] for r in listed] == ["3", "1"]
        listed = await asyncio.to_thread(
            geo.get_service_requests, service_request_id="2", service_code="streetlight"
        )
        one = listed if isinstance(listed, dict) else listed[0]  # xmltodict: one is a dict
        assert one["service_request_id"] == "2"
        request = await asyncio.to_thread(geo.get_service_request, "1")
        assert request["service_code"] == "streetlight" and request["status"] == "open"


async def test_parameters_are_read_as_the_spec_says(
    api: httpx.AsyncClient, requests: datetime
) -> None:
    """Empty optional parameters are as if not passed, a list parameter may be repeated, and a
    date is a W3C datetime with its timezone: never a bare number, never a 500."""

    async def ids(query: str, path: str = "/open311/v2/requests.json") -> list[str]:
        response = await api.get(f"{path}?{query}")
        assert response.status_code == 200, (query, response.text)
        return [r["service_request_id"] for r in response.json()]

    empty = "start_date=&end_date=&updated_after=&updated_before=&page=&page_size=&extensions="
    assert await ids(empty) == ["3", "2", "1"]
    assert await ids("status=open&status=closed") == ["3", "2", "1"]
    assert await ids("service_request_id=1&service_request_id=3") == ["3", "1"]
    assert await ids("service_code=traffic&service_code=streetlight&status=open") == ["3", "1"]
    # a + the client forgot to encode arrives as a space
    since = (requests - timedelta(hours=2, minutes=30)).astimezone(timezone(timedelta(hours=2)))
    assert await ids(f"start_date={since.isoformat()}") == ["3", "2"]
    assert await ids(f"start_date={since.isoformat().replace('+', '%2B')}") == ["3", "2"]
    assert "+" in since.isoformat()
    # .NET's round-trip format has 7 digits of a second, Go's RFC3339Nano up to 9
    dotnet = (requests - timedelta(hours=2, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.1234567Z")
    assert await ids(f"start_date={dotnet}") == ["3", "2"]
    go = since.strftime("%Y-%m-%dT%H:%M:%S.123456789%z")
    assert await ids(f"start_date={go.replace('+', '%2B')}") == ["3", "2"]
    for query in (
        "end_date=2026",  # read by lax parsers as 2026 s after 1970
        "start_date=1700000000",
        "start_date=2026-05-01",  # no time, no timezone
        "end_date=9999-12-31T23:59:59-23:59",  # past what a datetime holds in UTC
        "updated_after=0001-01-01T00:00:00%2B01:00",
    ):
        response = await api.get(f"/open311/v2/requests.json?{query}")
        assert response.status_code == 400, query
        [error] = response.json()
        assert query.split("=")[0] in error["description"], error
    for path, query in (
        ("requests", "start_date=2026-05-02T00:00:00Z&end_date=2026-05-01T00:00:00Z"),
        ("requests", "updated_after=2026-05-02T00:00:00Z&updated_before=2026-05-01T00:00:00Z"),
        ("servicerequestupdates", "start_date=2026-05-02T00:00:00Z&end_date=2026-05-01T00:00:00Z"),
    ):
        backwards = await api.get(f"/open311/v2/{path}.json?{query}")
        assert backwards.status_code == 400, query
        assert "is after" in backwards.json()[0]["description"], query
    early = await api.get("/open311/v2/servicerequestupdates.json?end_date=0001-01-01T12:00:00Z")
    assert early.status_code == 400 and "end_date" in early.json()[0]["description"]
    updates = await ids("start_date=&end_date=", "/open311/v2/servicerequestupdates.json")
    assert sorted(updates) == ["1", "2", "2"]  # 1's public note, 2's acknowledgement and fix


async def test_xml_never_carries_a_character_xml_cannot_hold(
    api: httpx.AsyncClient, requests: datetime, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A control character in a post or a note (a vertical tab, a bell) would make the whole XML
    list unparseable: XML leaves it out, JSON keeps it escaped."""
    await router(sessions)(
        as_event(
            classified("p4", text="Pintada\x0bal mur\x08!", at=requests, service_code="graffiti")
        )
    )
    async with sessions.begin() as s:
        await add_note(s, 4, actor="m", note="Revisat\x07", public=True, now=requests)
    xml = ElementTree.fromstring((await api.get("/open311/v2/requests.xml")).content)
    assert xml.findtext("request/description") == "Pintadaal mur!"
    one = await api.get("/open311/v2/requests/4.xml", params={"extensions": "true"})
    notes = ElementTree.fromstring(one.content).findall("request/extended_attributes/notes/note")
    assert [n.findtext("description") for n in notes] == ["Revisat"]
    [listed] = (await api.get("/open311/v2/requests/4.json")).json()
    assert listed["description"] == "Pintada\x0bal mur\x08!"


async def test_a_closed_requests_date_is_when_it_was_closed(
    api: httpx.AsyncClient, requests: datetime, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The spec: "For requests with status=closed, this will be the date the request was
    closed". A public note after it changes the request, not that date."""
    [closed] = (await api.get("/open311/v2/requests/2.json")).json()
    assert datetime.fromisoformat(closed["updated_datetime"]) == requests
    async with sessions.begin() as s:
        later = requests + timedelta(minutes=10)
        await add_note(s, 2, actor="m", note="Revisat de nou", public=True, now=later)
        await add_note(s, 1, actor="m", note="En camí", public=True, now=later)
    [still] = (await api.get("/open311/v2/requests/2.json")).json()
    assert still["updated_datetime"] == closed["updated_datetime"]
    [open_] = (await api.get("/open311/v2/requests/1.json")).json()
    assert datetime.fromisoformat(open_["updated_datetime"]) == later  # open: its last change
    listed = {
        r["service_request_id"]: r for r in (await api.get("/open311/v2/requests.json")).json()
    }
    assert listed["2"] == still and listed["1"] == open_
    xml = ElementTree.fromstring((await api.get("/open311/v2/requests/2.xml")).content)
    assert xml.findtext("request/updated_datetime") == closed["updated_datetime"]


async def test_a_description_is_at_most_the_specs_4000_characters(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await router(sessions)(as_event(classified("long", text="Fanal apagat. " * 400)))
    [one] = (await api.get("/open311/v2/requests/1.json")).json()
    assert len(one["description"]) == 4000 and one["description"].endswith("…")
    assert one["description"].startswith("Fanal apagat. Fanal apagat.")


async def test_a_method_not_allowed_names_the_allowed_ones(api: httpx.AsyncClient) -> None:
    response = await api.delete("/open311/v2/services.json")
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
    assert response.json()[0]["code"] == 405
    # requests.json is two routes: the 405 names both, not the first one matched.
    for method in ("PUT", "DELETE", "PATCH"):
        response = await api.request(method, "/open311/v2/requests.json")
        assert response.status_code == 405, method
        assert response.headers["allow"] == "GET, HEAD, POST", method
    response = await api.put("/open311/v2/requests/1.xml")
    assert response.headers["allow"] == "GET, HEAD"
    assert ElementTree.fromstring(response.content).findtext("error/code") == "405"


async def test_a_posted_request_goes_through_the_pipeline_and_its_token_resolves(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    bus = MemoryBus()
    await bus.start()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_ingest(bus)), base_url="http://ingest"
    ) as ingest:
        app = gateway(sessions, ingest)
        civic = await new_key(sessions, Role.CIVIC_DEVELOPER, name="bcn-app")
        bridge = await new_key(sessions, Role.BRIDGE)
        city_hall = await new_key(sessions, Role.CITY_HALL)
        form = {
            "api_key": civic,
            "jurisdiction_id": "barcelona",
            "service_code": "streetlight",
            "lat": "41.4036",
            "long": "2.1566",
            "description": "El fanal del carrer de Verdi no funciona; truqueu al 612345678",
            "email": "marta@example.org",
            "phone": "+34 612 345 678",
            "first_name": "Marta",
            "last_name": "Puig",
            "account_id": "u-77",
            "attribute[language]": "ca",
        }
        async with client(app) as api:
            posted = await api.post("/open311/v2/requests.json", data=form)
            assert posted.status_code == 201, posted.text
            [answer] = posted.json()
            token = answer["token"]
            assert answer["account_id"] == "u-77" and answer["service_notice"]
            pending = (await api.get(f"/open311/v2/tokens/{token}.json")).json()
            assert pending == [{"service_request_id": None, "token": token}]

            consumer = await bus.subscribe("test", [TOPICS.POST_RECEIVED.topic])
            [record] = await consumer.fetch(10, 5.0)
            event = decode(record.topic, record.value)
            post = event.post_received.post
            assert (post.platform, post.post_id, post.channel) == ("open311", token, "open311")
            assert post.service_code == "streetlight" and post.language == "ca"
            assert post.author_handle == "open311:bcn-app"
            assert "marta@example.org" not in str(post) and "Puig" not in str(post)

            # The classifier keeps the service the citizen chose and finds the district.
            [out] = await ClassifyPost(City.barcelona())(event)
            assert out.envelope.post_classified.service_code == "streetlight"
            assert out.envelope.post_classified.placement.district_code == "06"
            await router(sessions)(out.envelope)

            [resolved] = (await api.get(f"/open311/v2/tokens/{token}.json")).json()
            rid = resolved["service_request_id"]
            assert rid is not None
            xml = ElementTree.fromstring((await api.get(f"/open311/v2/tokens/{token}.xml")).content)
            assert xml.findtext("request/service_request_id") == rid
            public = await api.get(
                f"/open311/v2/requests/{rid}.json", params={"extensions": "true"}
            )
            [request] = public.json()
            assert request["service_code"] == "streetlight"
            assert request["extended_attributes"]["channel"] == "open311"
            assert request["description"].endswith("truqueu al [phone]")
            for secret in ("marta@example.org", "612", "Marta", "Puig", "open311:bcn-app"):
                assert secret not in public.text

            # Staff see the reporter's contact details.
            detail = (
                await api.get(
                    f"/api/v1/requests/{rid}", headers={"Authorization": f"Bearer {city_hall}"}
                )
            ).json()
            assert detail["reports"][0]["contact"]["email"] == "marta@example.org"

            refused = {
                # the spec: "403 - Missing or Invalid API Key", "404 - service_code ... not found"
                "no key": ({k: v for k, v in form.items() if k != "api_key"}, 403),
                "a wrong key": ({**form, "api_key": "plz_wrong"}, 403),
                "a bridge's key": ({**form, "api_key": bridge}, 403),
                "an unknown service": ({**form, "service_code": "unicorns"}, 404),
                "no location": ({k: v for k, v in form.items() if k not in ("lat", "long")}, 400),
                "lat alone": ({k: v for k, v in form.items() if k != "long"}, 400),
                "a bad latitude": ({**form, "lat": "91"}, 400),
                "a point in Sydney": ({**form, "lat": "-33.86", "long": "151.2"}, 400),
                "a bad language": ({**form, "attribute[language]": "fr"}, 400),
                "another jurisdiction": ({**form, "jurisdiction_id": "madrid"}, 404),
                "a description past 4,000": ({**form, "description": "x" * 4001}, 400),
            }
            for why, (body, status) in refused.items():
                response = await api.post("/open311/v2/requests.json", data=body)
                assert response.status_code == status, why
                assert response.json()[0]["code"] == status, why
            # L'Hospitalet: inside Barcelona's bounding box, in none of its districts; the
            # refusal does not name a box the point is in
            outside = await api.post(
                "/open311/v2/requests.json", data={**form, "lat": "41.3596", "long": "2.0999"}
            )
            assert outside.json()[0]["description"] == (
                "lat and long (41.3596, 2.0999) are not in Barcelona (more than 150 m from any "
                "of its districts)"
            )
            sydney = await api.post(
                "/open311/v2/requests.json", data={**form, "lat": "-33.86", "long": "151.2"}
            )
            assert "(latitude 41.3169 to 41.4683" in sydney.json()[0]["description"]
            bridged = await api.post("/open311/v2/requests.json", data={**form, "api_key": bridge})
            assert bridged.json()[0]["description"] == (
                "a bridge key may not POST requests: that needs an API key of role admin or "
                "city_hall or civic_developer"
            )
            by_address = {k: v for k, v in form.items() if k not in ("lat", "long")}
            by_address["address_string"] = "Carrer de Verdi 10, Barcelona"
            xml_post = await api.post("/open311/v2/requests.xml", data=by_address)
            assert xml_post.status_code == 201
            root = ElementTree.fromstring(xml_post.content)
            assert root.tag == "service_requests" and root.findtext("request/token")
    await bus.close()


async def test_the_street_a_post_names_is_its_requests_address_unless_it_gave_one(
    sessions: async_sessionmaker[AsyncSession], api: httpx.AsyncClient
) -> None:
    """A post with no geotag and no barri, naming "c/ Aragó, 250", is at "Carrer d'Aragó 250"
    in Open311 and for its manager, in triage (a street places no district); an address the
    post came with (Open311's address_string) wins over the street its text names."""
    classify = ClassifyPost(City.barcelona())
    texts = {
        "named": ("Contenedor desbordado en c/ Aragó, 250", ""),
        "given": ("Contenedor desbordado en c/ Aragó, 250", "Carrer de Verdi 12, 3r 2a"),
    }
    for post_id, (text, address) in texts.items():
        post = Post(platform="mastodon", post_id=post_id, author_handle="@a", text=text)
        post.address = address
        received = envelope(
            PostReceived(post=post), key=post_id, event_id=post_id, correlation_id=post_id
        )
        [out] = await classify(received.envelope)
        await router(sessions)(out.envelope)
    async with sessions() as s:
        rows = (await s.execute(select(ServiceRequest).order_by(ServiceRequest.id))).scalars()
        requests = {r.source_post_id: r for r in rows}
    assert requests["named"].address == "Carrer d'Aragó 250"
    assert requests["named"].queue == "triage" and requests["named"].district_code is None
    assert requests["given"].address == "Carrer de Verdi 12, 3r 2a"
    published = {
        post_id: (await api.get(f"/open311/v2/requests/{r.id}.json")).json()[0]["address"]
        for post_id, r in requests.items()
    }
    assert published == {"named": "Carrer d'Aragó 250", "given": "Carrer de Verdi 12"}
    city_hall = await new_key(sessions, Role.CITY_HALL)
    detail = await api.get(
        f"/api/v1/requests/{requests['named'].id}",
        headers={"Authorization": f"Bearer {city_hall}"},
    )
    assert detail.json()["address"] == "Carrer d'Aragó 250"


async def _posted_then_told(
    sessions: async_sessionmaker[AsyncSession],
    address_string: str,
    text: str,
    *,
    batched: bool = False,
) -> list[ServiceRequest]:
    """A citizen POSTs a report without a point at `address_string`; a neighbour then posts
    `text` on Mastodon, without a point either. Both go through the classifier and the router
    (each in a batch of its own when `batched`); the requests, in order."""
    bus = MemoryBus()
    await bus.start()
    classify, route = ClassifyPost(City.barcelona()), router(sessions)

    async def routed(received: Envelope) -> None:
        [out] = await classify(received)
        assert out.envelope.post_classified.service_code == "cleaning", out.envelope
        assert not out.envelope.post_classified.placement.barri_code  # a street places none
        if batched:
            await route.batch([out.envelope])
        else:
            await route(out.envelope)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_ingest(bus)), base_url="http://ingest"
    ) as ingest:
        civic = await new_key(sessions, Role.CIVIC_DEVELOPER, name="bcn-app")
        async with client(gateway(sessions, ingest)) as api:
            posted = await api.post(
                "/open311/v2/requests.json",
                data={
                    "api_key": civic,
                    "service_code": "cleaning",
                    "address_string": address_string,
                    "description": "Contenidors plens, les bosses per terra",
                    "attribute[language]": "ca",
                },
            )
            assert posted.status_code == 201, posted.text
    consumer = await bus.subscribe("test", [TOPICS.POST_RECEIVED.topic])
    [record] = await consumer.fetch(10, 5.0)
    await routed(decode(record.topic, record.value))
    await bus.close()
    post = Post(
        platform="mastodon",
        post_id="told",
        author_handle="@veina@bcn.social",
        text=text,
        created_at=timestamp(datetime.now(UTC)),
    )
    told = envelope(PostReceived(post=post), key="told", event_id="told", correlation_id="told")
    await routed(told.envelope)
    async with sessions() as s:
        return list((await s.execute(select(ServiceRequest).order_by(ServiceRequest.id))).scalars())


@pytest.mark.parametrize("batched", [False, True])
async def test_a_posted_address_and_a_post_naming_the_same_door_are_one_request(
    sessions: async_sessionmaker[AsyncSession], api: httpx.AsyncClient, batched: bool
) -> None:
    """The duplicate search by address compared the addresses as written: a POSTed
    "Calle Aragón, 250, 2º 1ª" and a later post naming "c/ Aragó 250" became two requests for
    one door. Both are now read by the street register, and the request keeps the address its
    citizen wrote (published without the floor and door)."""
    [request] = await _posted_then_told(
        sessions,
        "Calle Aragón, 250, 2º 1ª",
        "El contenidor d'escombraries de c/ Aragó 250 està ple i fa pudor",
        batched=batched,
    )
    assert request.source_platform == "open311" and request.reporters_count == 2
    assert (request.address, request.address_key) == ("Calle Aragón, 250, 2º 1ª", "018505 250")
    [published] = (await api.get(f"/open311/v2/requests/{request.id}.json")).json()
    assert published["address"] == "Calle Aragón, 250"


async def test_a_posted_address_and_a_post_at_a_door_far_along_the_street_are_two_requests(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Two doors of one street 150 numbers apart are two places, however alike the words."""
    requests = await _posted_then_told(
        sessions,
        "c/ Aragó 250",
        "El contenidor d'escombraries de c/ Aragó 400 està ple i fa pudor",
    )
    assert [(r.address, r.address_key, r.reporters_count) for r in requests] == [
        ("c/ Aragó 250", "018505 250", 1),
        ("Carrer d'Aragó 400", "018505 400", 1),
    ]


async def test_a_post_is_read_as_utf_8_with_every_attribute(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The spec: "All text received by the service from the client will be assumed to be UTF-8"
    (Starlette reads a urlencoded body's raw bytes as Latin-1); attribute[code][] is given once
    per value of a multivaluelist; the key may come in the query string too."""
    bus = MemoryBus()
    await bus.start()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_ingest(bus)), base_url="http://ingest"
    ) as ingest:
        civic = await new_key(sessions, Role.CIVIC_DEVELOPER, name="bcn-app")
        consumer = await bus.subscribe("test", [TOPICS.POST_RECEIVED.topic])
        async with client(gateway(sessions, ingest)) as api:
            raw = (
                f"api_key={civic}&service_code=cleaning&lat=41.3801&long=2.1751"
                "&description=Brutícia a la plaça&attribute[kind][]=rates"
                "&attribute[kind][]=paneroles&attribute[language]=ca"
            ).encode()
            posted = await api.post(
                "/open311/v2/requests.json",
                content=raw,
                headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
            )
            assert posted.status_code == 201, posted.text
            [record] = await consumer.fetch(10, 5.0)
            assert decode(record.topic, record.value).post_received.post.text == (
                "Brutícia a la plaça"
            )
            token = posted.json()[0]["token"]
            async with sessions() as s:
                submission = await s.get(Open311Submission, token)
                assert submission is not None
                assert submission.attributes == {"kind": ["rates", "paneroles"], "language": "ca"}

            not_utf8 = await api.post(
                "/open311/v2/requests.json",
                content=raw.replace("í".encode(), "í".encode("latin-1")),
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.json()[0]["description"]

            in_query = await api.post(
                f"/open311/v2/requests.json?api_key={civic}&jurisdiction_id=barcelona",
                data={"service_code": "cleaning", "lat": "41.38", "long": "2.17"},
            )
            assert in_query.status_code == 201, in_query.text
            elsewhere = await api.post(
                f"/open311/v2/requests.json?api_key={civic}&jurisdiction_id=madrid",
                data={"service_code": "cleaning", "lat": "41.38", "long": "2.17"},
            )
            assert elsewhere.status_code == 404
            not_a_key = await api.post(
                "/open311/v2/requests.json",
                data={"api_key": "revoked_or_wrong", "service_code": "cleaning"},
            )
            assert not_a_key.status_code == 403
            assert "plz_" in not_a_key.json()[0]["description"]
    await bus.close()


async def test_a_posted_request_names_its_citizen_without_a_personal_detail(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """An app posts for many citizens: each submission carries who it was for, as a digest of
    the e-mail (or account, or device) within the app's key, so that the router counts people
    (one citizen's two submissions are one reporter, two citizens two) and no e-mail leaves
    the submission. A submission naming nobody is a reporter of its own."""
    bus = MemoryBus()
    await bus.start()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_ingest(bus)), base_url="http://ingest"
    ) as ingest:
        app_key = await new_key(sessions, Role.CIVIC_DEVELOPER, name="bcn-app")
        other_app = await new_key(sessions, Role.CIVIC_DEVELOPER, name="other-app")
        consumer = await bus.subscribe("test", [TOPICS.POST_RECEIVED.topic])
        form = {"service_code": "cleaning", "lat": "41.3801", "long": "2.1751"}
        submissions = [
            (app_key, {"email": "marta@example.org"}),
            (app_key, {"email": "Marta@Example.org", "device_id": "phone-1"}),
            (app_key, {"email": "pau@example.org"}),
            (app_key, {"account_id": "u-77"}),
            (app_key, {}),
            (app_key, {}),
            (other_app, {"email": "marta@example.org"}),
        ]
        tokens = []
        async with client(gateway(sessions, ingest)) as api:
            for key, who in submissions:
                posted = await api.post(
                    "/open311/v2/requests.json", data={**form, **who, "api_key": key}
                )
                assert posted.status_code == 201, posted.text
                tokens.append(posted.json()[0]["token"])
        records = await consumer.fetch(20, 5.0)
        by_token = {
            p.post_id: p for p in (decode(r.topic, r.value).post_received.post for r in records)
        }
        posts = [by_token[t] for t in tokens]  # in the order submitted
        ids = [p.author_id for p in posts]
        assert ids[0] == ids[1]  # one citizen, whatever the case of the e-mail
        assert len(set(ids)) == 6  # pau, the account, each anonymous one, the other app's marta
        assert ids[4] == posts[4].post_id and ids[5] == posts[5].post_id
        assert all("@" not in i and "marta" not in i and "u-77" not in i for i in ids)
        assert {p.author_handle for p in posts} == {"open311:bcn-app", "open311:other-app"}
    await bus.close()


async def test_the_openapi_docs_are_3_1_with_examples_and_security(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    assert {"OAuth2PasswordBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
    for path, operations in spec["paths"].items():
        if path.startswith("/open311/"):
            for operation in operations.values():
                content = {
                    **operation.get("requestBody", {}).get("content", {}),
                    **operation["responses"].get("200", operation["responses"].get("201", {}))[
                        "content"
                    ],
                }
                assert any("example" in c for c in content.values()), path


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_need_no_cdn(api: httpx.AsyncClient, page: str) -> None:
    """A town's one machine or a city hall network without the internet still has the docs:
    every script, style sheet and icon the page loads is the gateway's own."""
    html = await api.get(page)
    assert html.status_code == 200
    assert "/openapi.json" in html.text
    loaded = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
    assert loaded, html.text
    for url in loaded:
        assert url.startswith("/docs/assets/"), url
        asset = await api.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    assert "fonts.googleapis" not in html.text


async def test_a_json_post_is_told_to_send_a_form(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A mobile app's natural first try is a JSON body: it is told the spec's form is needed,
    not that the api_key (or service_code) it sent is missing."""
    key = await new_key(sessions, Role.CIVIC_DEVELOPER)
    fields = {"service_code": "streetlight", "lat": "41.4036", "long": "2.1566"}
    async with client(gateway(sessions)) as api:
        for extension, headers in (("json", {}), ("xml", {}), ("json", {"X-API-Key": key})):
            posted = await api.post(
                f"/open311/v2/requests.{extension}",
                json={**fields, "api_key": key},
                headers=headers,
            )
            assert posted.status_code == 415, posted.text
            description = (
                posted.json()[0]["description"]
                if extension == "json"
                else ElementTree.fromstring(posted.content).findtext("error/description")
            )
            assert description is not None and "form-encoded" in description
            assert "application/json" in description


async def test_a_note_keeps_the_status_it_was_written_in(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], requests: datetime
) -> None:
    """A note changes no status: in the updates feed and the extended notes it carries the
    status the request had when it was written, not the one it has now (a FixMyStreet client
    would take an old "we are looking into it" for the request being fixed)."""
    later = requests + timedelta(minutes=1)
    await change(sessions, 1, Command(Action.ACKNOWLEDGE, actor="m"), later)
    async with sessions.begin() as s:
        await add_note(s, 1, actor="m", note="Hi anem demà", public=True, now=later)
    await change(sessions, 1, Command(Action.RESOLVE, actor="m", note="Arreglat"), later)
    window = {
        "start_date": (requests - timedelta(minutes=1)).isoformat(),
        "end_date": (later + timedelta(minutes=1)).isoformat(),
    }
    updates = (await api.get("/open311/v2/servicerequestupdates.json", params=window)).json()
    assert [(u["status"], u["description"]) for u in updates if u["service_request_id"] == "1"] == [
        ("OPEN", "Ho mirem, gràcies"),
        ("INVESTIGATING", ""),
        ("INVESTIGATING", "Hi anem demà"),
        ("FIXED", "Arreglat"),
    ]
    [one] = (await api.get("/open311/v2/requests/1.json", params={"extensions": "true"})).json()
    notes = one["extended_attributes"]["notes"]
    assert [(n["summary"], n["description"]) for n in notes] == [
        ("OPEN", "Ho mirem, gràcies"),
        ("INVESTIGATING", "Hi anem demà"),
        ("FIXED", "Arreglat"),
    ]


async def test_a_web_page_can_read_a_too_large_post_being_refused(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Open311 is for any web page: its 413 carries the CORS headers too, or the browser hides
    it and the page sees only a network error."""
    app = gateway(sessions, access=AccessConfig(limits=Limits(max_body_bytes=2048)))
    async with client(app) as api:
        refused = await api.post(
            "/open311/v2/requests.json",
            data={"description": "x" * 5000},
            headers={"Origin": "https://app.example"},
        )
        assert refused.status_code == 413 and refused.json()[0]["code"] == 413
        assert refused.headers["access-control-allow-origin"] == "*"
        assert refused.headers["access-control-expose-headers"] == "Retry-After"
        private = await api.post(
            "/api/v1/posts", content=b"x" * 5000, headers={"Origin": "https://app.example"}
        )
        assert private.status_code == 413
        assert "access-control-allow-origin" not in private.headers


async def test_requests_near_a_point(api: httpx.AsyncClient, requests: datetime) -> None:
    """A web page lists the requests around a point: lat, long and radius (metres, 500 by
    default). Half a point, or a radius alone, is a 400, not the whole city."""

    async def near(query: str) -> list[str]:
        response = await api.get(f"/open311/v2/requests.json?{query}")
        assert response.status_code == 200, (query, response.text)
        return [r["service_request_id"] for r in response.json()]

    # 1 is on carrer de Verdi; 2 (41.3870, 2.1700) is 2.16 km from it, 3 (41.3800, 2.1400) 2.97
    assert await near("lat=41.4036&long=2.1566") == ["1"]
    assert await near("lat=41.4036&long=2.1566&radius=2100") == ["1"]
    assert await near("lat=41.4036&long=2.1566&radius=2200") == ["2", "1"]
    assert await near("lat=41.4036&long=2.1566&radius=3000") == ["3", "2", "1"]
    # east-west: 2.1700 is 1.12 km from 2.1566 at this latitude (in degrees of latitude, 1.49)
    assert await near("lat=41.3870&long=2.1566&radius=1150") == ["2"]
    assert await near("lat=41.3870&long=2.1566&radius=1100") == []
    assert await near("lat=41.4036&long=2.1566&radius=3000&status=closed") == ["2"]
    xml = await api.get("/open311/v2/requests.xml?lat=41.4036&long=2.1566")
    assert [e.text for e in ElementTree.fromstring(xml.content).iter("service_request_id")] == ["1"]
    for query, name in (
        ("lat=41.4036", "lat and long"),
        ("long=2.1566", "lat and long"),
        ("radius=100", "radius"),
        ("lat=41.4036&long=2.1566&radius=0", "radius"),
        ("lat=41.4036&long=2.1566&radius=50000", "radius"),
        ("lat=91&long=2.1566", "lat"),
        ("lat=nan&long=2.1566", "lat"),
    ):
        response = await api.get(f"/open311/v2/requests.json?{query}")
        assert response.status_code == 400, query
        assert name in response.json()[0]["description"], (query, response.text)


async def test_a_posted_photo_file_is_refused_not_dropped(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """An app uploading its photo as a file (`media`, as some Open311 servers take it) is told
    to give media_url: taking the request without the photo would lose it unsaid."""
    key = await new_key(sessions, Role.CIVIC_DEVELOPER)
    fields = {"api_key": key, "service_code": "graffiti", "lat": "41.4036", "long": "2.1566"}
    async with client(gateway(sessions)) as api:
        posted = await api.post(
            "/open311/v2/requests.json",
            data=fields,
            files={"media": ("photo.jpg", b"\xff\xd8\xff\xe0 a photo", "image/jpeg")},
        )
        assert posted.status_code == 400, posted.text
        assert posted.json()[0]["description"].startswith("media: files are not taken")
        assert "media_url" in posted.json()[0]["description"]
    async with sessions() as s:
        assert (await s.execute(select(Open311Submission))).all() == []  # nothing was kept


async def test_head_answers_as_get_without_the_body(
    api: httpx.AsyncClient, requests: datetime
) -> None:
    """HTTP has every GET answer HEAD too (link checkers, uptime monitors)."""
    for path in ("/open311/v2/services.json", "/open311/v2/requests.xml?status=open"):
        got = await api.get(path)
        head = await api.head(path)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == str(len(got.content))
    missing = await api.head("/open311/v2/requests/999.json")
    assert missing.status_code == 404 and missing.content == b""


async def test_a_photo_whose_url_names_its_authors_account_is_not_published(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Bluesky's CDN addresses a photo by its author's DID, which resolves to their handle:
    published as the request's media_url, it told who reported it."""
    did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
    bluesky = f"https://cdn.bsky.app/img/feed_fullsize/plain/{did}/bafkreia@jpeg"
    mastodon = "https://files.bcn.social/media_attachments/files/110/original/f.jpg"
    route, now = router(sessions), datetime.now(UTC)
    for post_id, photo, code in (("b1", bluesky, "streetlight"), ("m1", mastodon, "graffiti")):
        event = classified(post_id, at=now, service_code=code, text=f"Fanal apagat {post_id}")
        event.post.media_urls.append(photo)
        await route(as_event(event))
    async with client(gateway(sessions)) as api:
        listed = (await api.get("/open311/v2/requests.json")).json()
        xml = (await api.get("/open311/v2/requests.xml")).text
    photos = {r["description"]: r["media_url"] for r in listed}
    assert photos == {"Fanal apagat b1": None, "Fanal apagat m1": mastodon}
    assert did not in xml


async def test_an_end_date_includes_the_second_it_names(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Datetimes are written in whole seconds: a request made at 10:00:14.3 is shown as
    10:00:14, and asking for requests up to the time shown (as a client paging back by dates
    does) must include it. The updates feed's end_date the same."""
    at = datetime.now(UTC).replace(microsecond=300_000) - timedelta(hours=1)
    await router(sessions)(as_event(classified("p1", at=at)))
    await change(sessions, 1, Command(Action.ACKNOWLEDGE, actor="m"), at)
    [shown] = (await api.get("/open311/v2/requests/1.json")).json()
    when = shown["requested_datetime"]
    assert when == at.replace(microsecond=0).isoformat()
    window = {"start_date": when, "end_date": when}
    listed = (await api.get("/open311/v2/requests.json", params=window)).json()
    assert [r["service_request_id"] for r in listed] == ["1"]
    updates = (await api.get("/open311/v2/servicerequestupdates.json", params=window)).json()
    assert [u["status"] for u in updates] == ["INVESTIGATING"]
    before = (at - timedelta(seconds=1)).replace(microsecond=0).isoformat()
    assert (
        await api.get(f"/open311/v2/requests.json?end_date={before.replace('+', '%2B')}")
    ).json() == []
    late = "9999-12-31T23:59:59Z"  # through the end of time: no overflow
    assert len((await api.get(f"/open311/v2/requests.json?end_date={late}")).json()) == 1


class _Broken:
    async def fetch(self, sql: str, *args: object) -> list[object]:
        raise RuntimeError("a bug")


class _DatabaseAway:
    async def fetch(self, sql: str, *args: object) -> list[object]:
        raise ConnectionRefusedError("the database is away")


async def test_an_unexpected_error_is_in_the_specs_format_too(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A 500 (a bug) or a 503 (the database away) under /open311/ is [{code, description}] as
    every other Open311 error, readable by a web page (CORS); the manager API's stays
    problem+json."""
    app = gateway(sessions)
    app.state.reads = _Broken()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://plaza") as api:
        failed = await api.get("/open311/v2/requests.json", headers={"Origin": "https://a.example"})
        assert failed.status_code == 500
        assert failed.json() == [
            {"code": 500, "description": "an unexpected error, recorded in the service's log"}
        ]
        assert failed.headers["access-control-allow-origin"] == "*"
        xml = await api.get("/open311/v2/requests.xml")
        assert ElementTree.fromstring(xml.content).findtext("error/code") == "500"
        city_hall = await new_key(sessions, Role.CITY_HALL)
        staff = await api.get(
            "/api/v1/districts/06/queue", headers={"Authorization": f"Bearer {city_hall}"}
        )
        assert staff.status_code == 500
        assert staff.headers["content-type"] == "application/problem+json"
        app.state.reads = _DatabaseAway()
        away = await api.get("/open311/v2/requests.json", headers={"Origin": "https://a.example"})
        assert away.status_code == 503 and away.headers["retry-after"] == "5"
        [error] = away.json()
        assert error["code"] == 503 and "send it again" in error["description"]
        assert away.headers["access-control-allow-origin"] == "*"
        away_xml = await api.get("/open311/v2/requests.xml")
        assert ElementTree.fromstring(away_xml.content).findtext("error/code") == "503"
        staff_away = await api.get(
            "/api/v1/districts/06/queue", headers={"Authorization": f"Bearer {city_hall}"}
        )
        assert staff_away.status_code == 503
        assert staff_away.headers["content-type"] == "application/problem+json"
