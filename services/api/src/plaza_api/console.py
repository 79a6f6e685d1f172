"""The district managers' web console at /console/: its static files (HTML, ES modules, CSS,
packaged in plaza_api/console/, no build step), the city's names it shows (/console/city.json),
and the headers that keep a page full of citizens' text safe (a strict Content-Security-Policy,
no framing, no sniffing, no referrer).

The console is a client of the manager API like any other: it sends the user's token as
`Authorization: Bearer`, from the same origin, so the API's rules (no CORS, no credentials in
URLs) stay as they are."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse
from plaza.city import City
from plaza.city.outlines import Outlines
from plaza.policy import RoutingTable
from plaza.requests import CITY_HALL_QUEUE, TRIAGE_QUEUE

from plaza_api.auth import manager_queues

router = APIRouter(include_in_schema=False)

PREFIX: Final = "/console"
# No inline script or style (citizens' text is on every page: an injected <script> or
# attribute would not run even if a bug let it in), requests only to this origin (the API), no
# framing. Photos are the citizens' (social platforms' media servers, https): shown only when a
# manager asks (a click), never fetched by merely opening a request.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' https:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# The console's own, beside the gateway's on every answer (nosniff, no framing, no Referer:
# plaza_api.limits.SecurityHeaders, which leaves a header a route set as it is).
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    # A new version of the console is picked up at once (revalidated by its ETag).
    "Cache-Control": "no-cache",
}
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",  # its icon (else the browser asks for /favicon.ico, a 404)
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_files() -> dict[str, StaticFile]:
    """The packaged files by name, read once (a few tens of KB). A package without its console
    (a broken build) fails here, at start-up, rather than on a manager's first visit."""
    folder = resources.files("plaza_api") / "console"
    files: dict[str, StaticFile] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.blake2s(body, digest_size=8).hexdigest() + '"'
            files[entry.name] = StaticFile(body, CONTENT_TYPES[suffix], etag)
    if "index.html" not in files or "app.js" not in files:
        raise RuntimeError(f"the console's files are missing from the package ({folder})")
    return files


def _files(request: Request) -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = request.app.state.console_files
    return files


def _send(request: Request, file: StaticFile) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": file.etag}
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.content_type, headers=headers)


@router.get(PREFIX)
async def console_root() -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=308, headers=SECURITY_HEADERS)


@router.get(f"{PREFIX}/")
async def console_index(request: Request) -> Response:
    return _send(request, _files(request)["index.html"])


@router.get(f"{PREFIX}/city.json")
async def console_city(request: Request) -> Response:
    """What the console names: the city, its council's language, its time zone, the queues a manager may have (with
    city hall's), the districts and the barris. Public: it is the city's map, not its data."""
    city: City = request.app.state.city
    routing: RoutingTable = request.app.state.routing
    queues = [
        {
            "code": code,
            "name": name
            or ("Triage (no district found)" if code == TRIAGE_QUEUE else f"City-wide: {code}"),
        }
        for code, name in manager_queues(city, routing).items()
    ]
    queues.append({"code": CITY_HALL_QUEUE, "name": "City hall (escalated)"})
    body = {
        "name": city.name,
        # the console opens in the council's language when it has it (README "The web console")
        "council": {"language": city.council.language},
        # due times are shown on the city's clock, whatever the manager's device is set to
        "time_zone": city.council.time_zone,
        "queues": queues,
        "districts": {code: d.name for code, d in city.districts.items()},
        "barris": {code: b.name for code, b in city.barris.items()},
    }
    return Response(orjson.dumps(body), media_type="application/json", headers=SECURITY_HEADERS)


@router.get(f"{PREFIX}/map.json")
async def console_map(request: Request, district: str | None = None) -> Response:
    """A map to place a queue's requests on: a district's outline and its barris', or the whole
    city's districts without `district`, as SVG paths simplified to a few metres (a manager's
    phone reads a district's in 5 KB), drawn from the city's own polygons (packaged Barcelona's:
    the simplified outlines packaged with it): no tile server. Public, as city.json is. Another
    city placed by centres alone gets their names where they are."""
    city: City = request.app.state.city
    outlines: Outlines | None = getattr(request.app.state, "outlines", None)
    if outlines is None:
        outlines = request.app.state.outlines = Outlines(city)
    code = city.district_code(district) if district is not None else None
    if district is not None and code is None:
        raise HTTPException(
            404,
            f"district: {city.name} has no district {district!r}; known: {', '.join(city.districts)}",
        )
    body = orjson.dumps(outlines.map(code))
    file = StaticFile(
        body, "application/json", '"' + hashlib.blake2s(body, digest_size=8).hexdigest() + '"'
    )
    return _send(request, file)


@router.get(PREFIX + "/{name}")
async def console_file(name: str, request: Request) -> Response:
    file = _files(request).get(name)
    if file is None:
        raise HTTPException(404, f"the console has no file {name!r}")
    return _send(request, file)
