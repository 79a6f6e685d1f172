"""The web console's files: served by the gateway with their content types and security headers,
shipped in plaza_api's wheel, and written so that no citizen's text can become markup. (The
console in a browser: tests/integration/test_console.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from plaza.city import City
from plaza.city.config import load_city_config
from plaza.city.outlines import Outlines
from plaza.db import create_engine, session_factory
from plaza_api import console
from plaza_api.app import create_app

from tests.infra import ROOT, SHARED_DATA

CONSOLE_DIR = ROOT / "services/api/src/plaza_api/console"
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "i18n.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}


@pytest.fixture
async def gateway() -> AsyncIterator[httpx.AsyncClient]:
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")  # never connected
    app = create_app(
        session_factory(engine),
        httpx.AsyncClient(base_url="http://ingest.invalid"),
        City.barcelona(),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://plaza"
    ) as client:
        yield client
    await engine.dispose()


def test_the_packaged_files_are_the_ones_served() -> None:
    assert sorted(p.name for p in CONSOLE_DIR.iterdir()) == sorted(FILES)
    assert sorted(console.load_files()) == sorted(FILES)


async def test_each_file_has_its_content_type_and_the_security_headers(
    gateway: httpx.AsyncClient,
) -> None:
    for name, content_type in {**FILES, "": FILES["index.html"]}.items():
        answer = await gateway.get(f"/console/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"] == content_type, name
        for header, value in console.SECURITY_HEADERS.items():
            assert answer.headers[header] == value, (name, header)
        assert answer.content == (CONSOLE_DIR / (name or "index.html")).read_bytes()
        head = await gateway.head(f"/console/{name}")
        assert head.status_code == 200 and head.headers["content-type"] == content_type, name
        again = await gateway.get(
            f"/console/{name}", headers={"If-None-Match": answer.headers["ETag"]}
        )
        assert again.status_code == 304 and not again.content, name
    csp = console.CSP
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "unsafe" not in csp


async def test_the_console_root_redirects_and_unknown_files_are_404(
    gateway: httpx.AsyncClient,
) -> None:
    root = await gateway.get("/console")
    assert root.status_code == 308 and root.headers["location"] == "/console/"
    for missing in ("nope.js", "..%2Fconsole.py", "console.py", "%2e%2e%2Fapp.py"):
        answer = await gateway.get(f"/console/{missing}")
        assert answer.status_code == 404, missing
        assert answer.headers["content-type"] == "application/problem+json"


async def test_the_manager_api_stays_closed_to_other_origins(gateway: httpx.AsyncClient) -> None:
    answer = await gateway.options(
        "/api/v1/me",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in answer.headers
    me = await gateway.get("/api/v1/me", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in me.headers


async def test_city_json_names_the_queues_districts_and_barris(
    gateway: httpx.AsyncClient,
) -> None:
    answer = await gateway.get("/console/city.json")
    assert answer.status_code == 200
    city = answer.json()
    assert city["time_zone"] == "Europe/Madrid"
    assert city["districts"]["06"] == "Gràcia"
    queues = {q["code"]: q["name"] for q in city["queues"]}
    assert queues["06"] == "Gràcia" and "triage" in queues and "city-hall" in queues
    assert len(city["barris"]) == 73
    assert city["council"] == {"language": "ca"}  # the console opens in Catalan


async def test_city_json_gives_the_city_files_time_zone() -> None:
    """Due times are shown on the city's clock: a city in the Canaries is an hour behind Madrid."""
    city = load_city_config(ROOT / "deploy/cities/jun.toml")
    city.council = replace(city.council, time_zone="Atlantic/Canary")
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")  # never connected
    app = create_app(session_factory(engine), httpx.AsyncClient(base_url="http://x.invalid"), city)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as gateway:
        answer = (await gateway.get("/console/city.json")).json()
    await engine.dispose()
    assert (answer["name"], answer["time_zone"]) == ("Jun", "Atlantic/Canary")
    assert answer["council"] == {"language": "es"}  # the console opens in Spanish there


async def test_map_json_draws_a_district_or_the_city_from_its_polygons() -> None:
    """The console's map of a queue: the district's outline and its barris' (their codes as the
    queues' are written: "6" is "06"), the city's districts without one; public, cached by its
    ETag, with the console's headers; a district the city has not is a 404 naming those it has."""
    city = City.barcelona(SHARED_DATA / "barcelona")
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")  # never connected
    app = create_app(session_factory(engine), httpx.AsyncClient(base_url="http://x.invalid"), city)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as gateway:
        gracia = await gateway.get("/console/map.json", params={"district": "6"})
        assert gracia.status_code == 200, gracia.text
        for header, value in console.SECURITY_HEADERS.items():
            assert gracia.headers[header] == value, header
        drawn = gracia.json()
        assert drawn["district"] == "06" and drawn["outlines"] is True
        assert [a["code"] for a in drawn["areas"] if a["kind"] == "barri"] == [
            "28", "29", "30", "31", "32"
        ]  # fmt: skip
        again = await gateway.get(
            "/console/map.json?district=06", headers={"If-None-Match": gracia.headers["ETag"]}
        )
        assert again.status_code == 304
        whole = (await gateway.get("/console/map.json")).json()
        assert whole["district"] is None and len(whole["areas"]) == 10
        unknown = await gateway.get("/console/map.json", params={"district": "99"})
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        assert "Barcelona has no district '99'; known: 01, 02" in unknown.json()["detail"]
    await engine.dispose()


async def test_map_json_of_packaged_barcelona_draws_its_packaged_outlines() -> None:
    """Barcelona without PLAZA_CITY_DATA_DIR (a deployment of the packaged city): the map still
    draws Gràcia's outline and its barris', from the outlines packaged with it, in the frame the
    exact polygons give it to a couple of metres."""
    exact = Outlines(City.barcelona(SHARED_DATA / "barcelona")).map("06")
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")  # never connected
    app = create_app(
        session_factory(engine), httpx.AsyncClient(base_url="http://x.invalid"), City.barcelona()
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as gateway:
        drawn = (await gateway.get("/console/map.json", params={"district": "06"})).json()
        whole = (await gateway.get("/console/map.json")).json()
    await engine.dispose()
    assert drawn["outlines"] is True and whole["outlines"] is True
    assert all(a["path"].startswith("M") for a in drawn["areas"] + whole["areas"])
    assert [a["code"] for a in drawn["areas"] if a["kind"] == "barri"] == [
        "28", "29", "30", "31", "32"
    ]  # fmt: skip
    assert abs(drawn["width"] - exact["width"]) <= 2
    assert abs(drawn["height"] - exact["height"]) <= 2


def test_no_script_turns_text_into_markup() -> None:
    """Citizens' text is attacker-controlled: the console builds the page with DOM APIs and text
    nodes only. None of these may appear in its scripts (nor inline handlers in its HTML)."""
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"setAttribute\(\s*[\"']on|\.srcdoc"
    )
    for script in CONSOLE_DIR.glob("*.js"):
        code = "\n".join(
            line
            for line in script.read_text().splitlines()
            if not line.lstrip().startswith(("//", "/*", "*"))  # comments may name them
        )
        found = forbidden.findall(code)
        assert not found, f"{script.name}: {found}"
    html = (CONSOLE_DIR / "index.html").read_text()
    assert not re.search(r"\son\w+=|<script>|<style|style=", html)


def test_no_script_puts_a_credential_in_a_url() -> None:
    """The live updates are read with fetch() and `Authorization: Bearer`: no EventSource (which
    cannot send it) and no ?access_token= or ?api_key=, which would leave the token in the
    gateway's and any proxy's logs."""
    for script in CONSOLE_DIR.glob("*.js"):
        code = "\n".join(
            line
            for line in script.read_text().splitlines()
            if not line.lstrip().startswith(("//", "/*", "*"))
        )
        found = re.findall(r"EventSource|access_token=|api_key=", code)
        assert not found, f"{script.name}: {found}"
    api = (CONSOLE_DIR / "api.js").read_text()
    assert "Authorization: `Bearer ${token}`" in api and "text/event-stream" in api


def test_the_console_is_in_the_built_wheel(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv, "uv is needed to build plaza-api's wheel (pip install uv)"
    subprocess.run(
        [uv, "build", "--package", "plaza-api", "--wheel", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("plaza_api-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in FILES:
        assert f"plaza_api/console/{name}" in names, name


def translation_tables() -> dict[str, dict[str, str]]:
    """i18n.js's tables, read as the JS object literals they are: one `"key": "text",` a line."""
    source = (CONSOLE_DIR / "i18n.js").read_text()
    tables: dict[str, dict[str, str]] = {}
    for name, body in re.findall(r"^const (\w\w) = \{\n(.*?)^\};", source, re.M | re.S):
        entries = re.findall(r'^  "([\w.]+)": "((?:[^"\\]|\\.)*)",$', body, re.M)
        assert len(entries) == body.count("\n"), f"i18n.js's {name}: a line is not a plain entry"
        tables[name] = dict(entries)
    return tables


def test_every_word_of_the_console_is_in_catalan_spanish_and_english() -> None:
    tables = translation_tables()
    assert sorted(tables) == ["ca", "en", "es"]
    for language, table in tables.items():
        assert table.keys() == tables["en"].keys(), (
            language,
            sorted(table.keys() ^ tables["en"].keys()),
        )
        for key, text in table.items():
            assert text.strip(" ·:") or key == "action.allowedNone", (language, key)
            # the same {placeholders} as English's: a missing one would show as a raw {name}
            placeholders = set(re.findall(r"\{(\w+)\}", text))
            assert placeholders == set(re.findall(r"\{(\w+)\}", tables["en"][key])), (
                language,
                key,
            )


def test_the_console_looks_up_only_words_the_tables_have() -> None:
    """Every t("key") and plural("key", n) in the scripts, and every data-i18n in the page, is
    a key of the tables; a key built from data (t(`status.${s}`)) has keys under its prefix."""
    keys = translation_tables()["en"].keys()
    used: set[str] = set()
    prefixes: set[str] = set()
    for script in CONSOLE_DIR.glob("*.js"):
        code = script.read_text()
        used |= set(re.findall(r'\bt\("([^"]+)"', code))
        used |= {
            f"{key}.{form}"
            for key in re.findall(r'\bplural\("([^"]+)"', code)
            for form in ("one", "other")
        }
        prefixes |= set(re.findall(r"\b(?:t|has)\(`([\w.]+)\$\{", code))
    html = (CONSOLE_DIR / "index.html").read_text()
    used |= set(re.findall(r'data-i18n(?:-label)?="([^"]+)"', html))
    assert len(used) > 150 and prefixes  # the patterns still find the calls
    assert not used - keys, sorted(used - keys)
    for prefix in prefixes:
        assert any(key.startswith(prefix) for key in keys), prefix
    app = (CONSOLE_DIR / "app.js").read_text()
    statuses = re.search(r"const STATUSES = \[(.*?)\];", app, re.S)
    assert statuses
    for status in re.findall(r'"(\w+)"', statuses.group(1)):
        assert f"status.{status}" in keys, status
    actions = re.search(r"const ACTION_FIELDS = \{(.*?)\};", app, re.S)
    assert actions
    for action, fields in re.findall(r"^  (\w+): \[(.*?)\],$", actions.group(1), re.M):
        assert f"action.{action}" in keys, action
        for name in re.findall(r'"(\w+)"', fields):
            assert f"field.{name}" in keys, name
