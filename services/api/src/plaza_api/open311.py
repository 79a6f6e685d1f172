"""Open311 GeoReport v2 for civic developers, in JSON and XML exactly as the spec defines them:
discovery, services and their definitions, requests (read, filter, page, POST), tokens, and
FixMyStreet's servicerequestupdates feed. Errors are the spec's own: [{code, description}].

Everything here is public data: a reporter's contact details, handle and private notes never
appear, e-mail addresses, phone numbers and licence plates in public text are masked, and a
request's point is published on a grid of a street block (plaza_api.privacy.PublicGrid)."""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, Final, cast
from urllib.parse import parse_qsl, unquote_to_bytes
from xml.etree import ElementTree

import asyncpg
import orjson
from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from plaza.city import SNAP_METRES, City
from plaza.db.models import Open311Submission, RequestReport
from plaza.requests import (
    CLOSED_STATUSES,
    OPEN_STATUSES,
    Action,
    extended_status,
    open311_status,
    parse_id,
)
from plaza.taxonomy import LANGUAGES, load_taxonomy, service_name
from plaza.web import allowed_methods
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from plaza_api.auth import (
    ANONYMOUS,
    KEY_PREFIX,
    OPEN311_WRITERS,
    InvalidCredentials,
    Principal,
    authenticator,
)
from plaza_api.deps import IngestDep, SessionDep
from plaza_api.limits import OPEN311_PREFIX, PublicCors, enforce_rate_limit
from plaza_api.privacy import (
    METRES_PER_DEGREE,
    PUBLIC_POINT_PRECISION_M,
    PublicGrid,
    mask,
    public_address,
    public_media,
)
from plaza_api.reads import Reads

router = APIRouter(prefix="/open311/v2", tags=["Open311 GeoReport v2"])

SPEC_URL: Final = "http://wiki.open311.org/GeoReport_v2"
CHANGESET: Final = "2026-11-26T00:00:00+00:00"
DEFAULT_WINDOW: Final = timedelta(days=90)  # the spec's default when no dates are given
MAX_PAGE_SIZE: Final = 1000
MAX_DESCRIPTION: Final = 4000  # the spec's limit of a request's description
MAX_PAGE: Final = 1_000_000  # past any city's requests; (page - 1) x page_size must fit a bigint
UPDATES_WINDOW: Final = timedelta(days=1)  # FixMyStreet's default for servicerequestupdates
DEFAULT_RADIUS: Final = 500.0  # metres around lat/long, when no radius is given
MAX_RADIUS: Final = 20_000.0  # metres: past any one city
FORMATS: Final = {"json": "application/json", "xml": "text/xml; charset=utf-8"}
# The audit-trail kinds a citizen sees as updates of their request.
PUBLIC_UPDATE_KINDS: Final = frozenset({*(a.value for a in Action), "note"})

# Service groups for Open311 clients' menus (the taxonomy's codes; unknown codes are "Other").
_GROUPS: Final[Mapping[str, str]] = {
    "streetlight": "Streets",
    "pavement": "Streets",
    "street_furniture": "Streets",
    "graffiti": "Streets",
    "cleaning": "Cleaning and waste",
    "parks_trees": "Green spaces and animals",
    "animals": "Green spaces and animals",
    "water_sewer": "Water",
    "traffic": "Mobility",
    "mobility": "Mobility",
    "noise": "Civic life",
    "public_space": "Civic life",
}
_LANGUAGE_NAMES: Final = {"ca": "Català", "es": "Español", "en": "English"}
# XML element names for the items of a list field.
_ITEM_TAGS: Final = {
    "endpoints": "endpoint",
    "formats": "format",
    "attributes": "attribute",
    "values": "value",
    "notes": "note",
}


def w3c(value: datetime | None) -> str | None:
    """A W3C datetime with its timezone, e.g. 2026-05-04T10:00:00+00:00."""
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else None


# --- rendering: one structure, two formats ---------------------------------------------------


# Characters XML 1.0 cannot carry, even escaped (C0 controls but tab, newline and carriage
# return; lone surrogates; U+FFFE, U+FFFF): ElementTree writes them as they are, and one of
# them would make a whole list unparseable. JSON carries them (escaped); XML drops them.
_XML_ILLEGAL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_value(parent: ElementTree.Element, tag: str, value: object) -> None:
    element = ElementTree.SubElement(parent, tag)
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _xml_value(element, str(key), inner)
    elif isinstance(value, list | tuple):
        item_tag = _ITEM_TAGS.get(tag, "item")
        for inner in value:
            _xml_value(element, item_tag, inner)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    else:
        element.text = _XML_ILLEGAL.sub("", str(value))


def to_xml(root: str, item: str | None, body: object) -> bytes:
    """`body` (a list of items under `root`, or one mapping as `root`) as the spec's XML."""
    element = ElementTree.Element(root)
    if item is None:
        assert isinstance(body, Mapping)
        for key, value in body.items():
            _xml_value(element, str(key), value)
    else:
        assert isinstance(body, list)
        for entry in body:
            _xml_value(element, item, entry)
    out: bytes = ElementTree.tostring(element, encoding="utf-8", xml_declaration=True)
    return out


def render(
    fmt: str,
    root: str,
    item: str | None,
    body: object,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    if fmt == "xml":
        return Response(
            to_xml(root, item, body), status, headers=headers, media_type=FORMATS["xml"]
        )
    return Response(orjson.dumps(body), status, headers=headers, media_type=FORMATS["json"])


def open311_error(
    status: int, description: str, fmt: str = "json", headers: Mapping[str, str] | None = None
) -> Response:
    """The spec's error format: an array of {code, description} (XML: <errors><error>…)."""
    return render(
        fmt, "errors", "error", [{"code": status, "description": description}], status, headers
    )


class Open311Error(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def _format(path_format: str) -> str:
    if path_format not in FORMATS:
        raise Open311Error(404, f"unknown format {path_format!r}: use .json or .xml")
    return path_format


def _check_jurisdiction(request: Request, jurisdiction_id: str | None) -> None:
    ours: str = request.app.state.jurisdiction_id
    if jurisdiction_id and jurisdiction_id != ours:
        raise Open311Error(404, f"unknown jurisdiction_id {jurisdiction_id!r}; this is {ours!r}")


async def _public_read(request: Request, path_format: str, jurisdiction_id: str | None) -> str:
    """What every public read checks first: the format, the jurisdiction, the caller's key.
    Returns the format."""
    fmt = _format(path_format)
    _check_jurisdiction(request, jurisdiction_id)
    await _public_caller(request)
    return fmt


async def _public_caller(request: Request) -> None:
    """Reads are public; a key (api_key or a header) only earns its own rate limit. A wrong key
    is refused (403), never silently ignored."""
    enforce_rate_limit(request, await _caller(request))


async def _caller(request: Request, form_key: str | None = None) -> Principal:
    """Who calls: the api_key (the form's, then the query's), X-API-Key, or a staff member's
    bearer token; anonymous without any. A credential that is none of Plaza's is a 403."""
    key = form_key or request.query_params.get("api_key") or request.headers.get("x-api-key")
    bearer = request.headers.get("authorization", "")
    credential = key or (bearer[7:].strip() if bearer.lower().startswith("bearer ") else None)
    try:
        return await authenticator(request).principal(credential)
    except InvalidCredentials as exc:
        enforce_rate_limit(request, ANONYMOUS)  # guessing keys costs the address its budget
        if key and not key.startswith(KEY_PREFIX):
            raise Open311Error(
                403, f"api_key is not valid: a Plaza API key starts with {KEY_PREFIX!r}"
            ) from None
        raise Open311Error(403, str(exc)) from None


_Handler = Callable[[Request, Exception], Awaitable[Response]]


def _allowed(request: Request) -> str:
    """A 405's Allow: every method of the path."""
    return ", ".join(allowed_methods(request))


def install_open311_errors(app: FastAPI) -> None:
    """Under /open311/ every error takes the spec's format (422 becomes 400, 401 becomes 403),
    an unexpected one too; elsewhere the app's problem+json handlers answer as before."""
    fallback_validation = cast(_Handler, app.exception_handlers[RequestValidationError])
    fallback_http = cast(_Handler, app.exception_handlers[StarletteHTTPException])
    fallback_unexpected = cast(_Handler, app.exception_handlers[Exception])

    def fmt_of(request: Request) -> str:
        return "xml" if request.url.path.endswith(".xml") else "json"

    async def on_open311_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Open311Error)
        return open311_error(exc.status, exc.description, fmt_of(request))

    async def on_validation(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith(OPEN311_PREFIX):
            return await fallback_validation(request, exc)
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"] if p not in ("query", "path", "body"))
            parts.append(f"{field}: {err['msg']}")
        return open311_error(400, "; ".join(parts) or "invalid request", fmt_of(request))

    async def on_http(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith(OPEN311_PREFIX):
            return await fallback_http(request, exc)
        assert isinstance(exc, StarletteHTTPException)
        status = 403 if exc.status_code == 401 else exc.status_code
        headers = {
            k: v for k, v in (exc.headers or {}).items() if k.lower() in ("retry-after", "allow")
        }
        if status == 405:
            headers = {**headers, "Allow": _allowed(request)}
        return open311_error(status, str(exc.detail), fmt_of(request), headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # A 500 (the database away), or a 409 for a change PostgreSQL undid: an Open311 client
        # reads [{code, description}] whatever the status. This handler runs outside every
        # middleware, so the CORS headers a web page needs to read it are added here.
        response = await fallback_unexpected(request, exc)
        if not request.url.path.startswith(OPEN311_PREFIX):
            return response
        detail = str(orjson.loads(response.body)["detail"])
        headers = {k.decode(): v.decode() for k, v in PublicCors.ALLOW}
        if "retry-after" in response.headers:
            headers["Retry-After"] = response.headers["retry-after"]
        return open311_error(response.status_code, detail, fmt_of(request), headers)

    def database_away(scope: Scope, detail: str, headers: Mapping[str, str]) -> Response | None:
        # plaza.web.DatabaseUnavailable's 503, in the spec's format (inside CORS: no headers)
        if not scope["path"].startswith(OPEN311_PREFIX):
            return None
        return open311_error(503, detail, fmt_of(Request(scope)), headers)

    app.state.database_away = database_away
    handlers: dict[type[Exception], _Handler] = {
        Open311Error: on_open311_error,
        RequestValidationError: on_validation,
        StarletteHTTPException: on_http,
        Exception: on_unexpected,
    }
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)


# Parameters that take a comma-separated list: given several times, their values are joined.
_LIST_PARAMS: Final = frozenset({b"service_request_id", b"service_code", b"status"})


def open311_query(raw: bytes) -> bytes:
    """A query string as the spec reads it: an optional parameter passed empty is as if not
    passed ("the response should be the same whether a parameter is passed and is empty or is
    not passed at all"), and a list parameter given several times is one comma-separated list
    (otherwise the last one would silently win)."""
    kept: list[bytearray] = []
    lists: dict[bytes, bytearray] = {}
    for part in raw.split(b"&"):
        name, _, value = part.partition(b"=")
        if not value:
            continue
        key = unquote_to_bytes(name.replace(b"+", b" "))
        if key in _LIST_PARAMS and key in lists:
            lists[key] += b"," + value
            continue
        kept.append(bytearray(part))
        if key in _LIST_PARAMS:
            lists[key] = kept[-1]
    return b"&".join(kept)


class Open311Query:
    """Reads every /open311/ request's query string ahead of routing (pure ASGI), as
    open311_query() says. (A HEAD is answered as its GET by plaza.web.HeadAsGet.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith(OPEN311_PREFIX)
            and scope["query_string"]
        ):
            scope = {**scope, "query_string": open311_query(scope["query_string"])}
        await self.app(scope, receive, send)


# --- discovery and services ------------------------------------------------------------------

_FORMAT_PARAM = Annotated[str, Path(description="json or xml", examples=["json"])]
_JURISDICTION = Annotated[
    str | None,
    Query(description="Accepted as the spec says; this endpoint serves one jurisdiction"),
]


def _responses(example: object, root: str, item: str | None) -> dict[int | str, dict[str, object]]:
    return {
        200: {
            "description": "JSON (the .json path) or XML (the .xml path)",
            "content": {
                "application/json": {"example": example},
                "text/xml": {"example": to_xml(root, item, example).decode()},
            },
        },
        "4XX": {
            "description": "Open311 errors: 400 bad parameter, 403 api_key, 404 not found",
            "content": {"application/json": {"example": [{"code": 404, "description": "…"}]}},
        },
    }


@router.get(
    "/discovery.{format}",
    response_class=Response,
    responses=_responses(
        {
            "changeset": CHANGESET,
            "contact": "…",
            "key_service": "…",
            "endpoints": [
                {
                    "specification": SPEC_URL,
                    "url": "https://plaza.example/open311/v2",
                    "changeset": CHANGESET,
                    "type": "production",
                    "formats": ["text/xml", "application/json"],
                }
            ],
        },
        "discovery",
        None,
    ),
)
async def discovery(request: Request, format: _FORMAT_PARAM) -> Response:
    """Where this Open311 endpoint is, what it speaks, and how to get an API key."""
    fmt = _format(format)
    await _public_caller(request)
    # The configured address, not the Host header a client (or an attacker) sent, when known.
    public: str | None = request.app.state.public_url
    base = (public or str(request.base_url).rstrip("/")) + "/open311/v2"
    city: City = request.app.state.city
    administrators = f"the Plaza administrators of {city.council.agency}"  # the city, by name
    body = {
        "changeset": CHANGESET,
        "contact": administrators[0].upper() + administrators[1:],
        "key_service": f"Ask {administrators} for an API key (role civic_developer)",
        "endpoints": [
            {
                "specification": SPEC_URL,
                "url": base,
                "changeset": CHANGESET,
                "type": "production",
                "formats": ["text/xml", "application/json"],
            }
        ],
    }
    return render(fmt, "discovery", None, body)


def _language(lang: str | None) -> str:
    return lang if lang in LANGUAGES else "en"


def service_entry(code: str, lang: str = "en") -> dict[str, object]:
    service = load_taxonomy()[code]
    name = service.names[_language(lang)]
    return {
        "service_code": code,
        "service_name": name,
        "description": f"{name}: {service.covers}",
        "metadata": True,
        "type": "batch",  # a POST answers with a token; the request id follows (tokens/{token})
        "keywords": service.covers,
        "group": _GROUPS.get(code, "Other"),
    }


_LANG = Annotated[
    str | None,
    Query(description="Names in ca, es or en (default en; ca-ES is ca)", examples=["ca"]),
]


@router.get(
    "/services.{format}",
    response_class=Response,
    responses=_responses([service_entry("streetlight")], "services", "service"),
)
async def services(
    request: Request,
    format: _FORMAT_PARAM,
    jurisdiction_id: _JURISDICTION = None,
    lang: _LANG = None,
) -> Response:
    """Every service code of the city's taxonomy: the service_code a POST names. `lang` gives
    the names in Catalan or Spanish (the descriptions and keywords are the taxonomy's English)."""
    fmt = await _public_read(request, format, jurisdiction_id)
    language = (lang or "en").partition("-")[0].lower()
    if language not in LANGUAGES:
        raise Open311Error(400, f"lang {lang!r}: the names are in {', '.join(LANGUAGES)}")
    return render(fmt, "services", "service", [service_entry(c, language) for c in load_taxonomy()])


def service_definition(code: str) -> dict[str, object]:
    return {
        "service_code": code,
        "attributes": [
            {
                "variable": True,
                "code": "language",
                "datatype": "singlevaluelist",
                "required": False,
                "datatype_description": "One of the keys: ca, es or en",
                "order": 1,
                "description": "The language the city answers in (otherwise the description's)",
                "values": [{"key": k, "name": n} for k, n in _LANGUAGE_NAMES.items()],
            }
        ],
    }


@router.get(
    "/services/{service_code}.{format}",
    response_class=Response,
    responses=_responses(service_definition("streetlight"), "service_definition", None),
)
async def service_definition_of(
    request: Request,
    service_code: str,
    format: _FORMAT_PARAM,
    jurisdiction_id: _JURISDICTION = None,
) -> Response:
    """The attributes a POST of this service may carry, as `attribute[code]=key`."""
    fmt = await _public_read(request, format, jurisdiction_id)
    if service_code not in load_taxonomy():
        raise Open311Error(404, f"no service {service_code!r}; GET services.{fmt} lists them")
    return render(fmt, "service_definition", None, service_definition(service_code))


# --- requests --------------------------------------------------------------------------------


# The columns of a request's public item, in the order public_item reads them; with extensions
# also _EXTENDED_COLUMNS. Its point is the published one (PublicGrid.lateral_sql), never the
# exact lat and long.
_ITEM_COLUMNS: Final = (
    "id",
    "status",
    "status_notes",
    "service_code",
    "description",
    "agency_responsible",
    "requested_datetime",
    # "For requests with status=closed, this will be the date the request was closed": a
    # public note added later changes the request, not that date.
    f"CASE WHEN status = ANY('{{{','.join(sorted(CLOSED_STATUSES))}}}'::text[]) THEN "
    "coalesce(closed_at, resolved_at, updated_datetime) ELSE updated_datetime END "
    "AS updated_datetime",
    "expected_datetime",
    "address",
    "public_lat",
    "public_long",
    "media_url",
)
_EXTENDED_COLUMNS: Final = (
    "district_code",
    "barri_code",
    "channel",
    "reporters_count",
    "duplicate_of",
)
# Public items kept as JSON, by the values they were made of: a busy list serves its newest
# pages over and over, and an item is a function of its values alone (a change of the request
# is another key). About 1.2 KB each, key included: 6 MB at most.
_ITEM_CACHE_SIZE: Final = 5_000
# A page of requests, newest first: the columns, the published point's FROM items, then the
# filters' conditions.
_PAGE_SQL: Final = (
    "SELECT {columns} FROM service_requests, {points}{where}"
    " ORDER BY requested_datetime DESC, id DESC OFFSET {offset} LIMIT {limit}"
)
# The status a request event `e` (of request `r`) left the request in. An event records only
# what it changed, so a note (which changes no status) found the request in the status of the
# last change before it, not in the status it has now: a note written while it was being
# investigated, on a request fixed since, is no "fixed" update.
_EVENT_STATUS: Final = """coalesce(
    e.after ->> 'status',
    (SELECT p.after ->> 'status' FROM request_events p
     WHERE p.service_request_id = e.service_request_id AND p.id < e.id AND p.after ? 'status'
     ORDER BY p.id DESC LIMIT 1),
    r.status)"""
# The public notes of some requests, oldest first.
_NOTES_SQL: Final = f"""
    SELECT e.service_request_id, e.at, e.kind, {_EVENT_STATUS} AS status, e.note
    FROM request_events e JOIN service_requests r ON r.id = e.service_request_id
    WHERE e.service_request_id = ANY($1::bigint[]) AND e.public AND e.kind = ANY($2::text[])
      AND e.note IS NOT NULL
    ORDER BY e.id
"""


def public_item(values: Sequence[Any]) -> dict[str, object]:
    """A request as the spec's fields, public text masked, from its _ITEM_COLUMNS values."""
    (
        id_,
        status,
        status_notes,
        service_code,
        description,
        agency_responsible,
        requested,
        updated,
        expected,
        address,
        lat,
        long,
        media_url,
    ) = values
    return {
        "service_request_id": str(id_),
        "status": open311_status(status),
        "status_notes": mask(status_notes),
        "service_name": service_name(service_code, "en"),
        "service_code": service_code,
        "description": _at_most(mask(description), MAX_DESCRIPTION),
        "agency_responsible": agency_responsible,
        "service_notice": None,
        "requested_datetime": w3c(requested),
        "updated_datetime": w3c(updated),
        "expected_datetime": w3c(expected),
        "address": public_address(address),
        "address_id": None,
        "zipcode": None,
        "lat": lat,
        "long": long,
        "media_url": public_media(media_url),
    }


def _at_most(text: str | None, length: int) -> str | None:
    """text cut to `length` characters, an ellipsis marking the cut (a social post may be
    longer than Open311's description)."""
    return text if text is None or len(text) <= length else text[: length - 1] + "…"


@lru_cache(maxsize=_ITEM_CACHE_SIZE)
def _public_item_json(values: tuple[Any, ...]) -> bytes:
    # A copy the size of its text: the bytes orjson returns hold on to about 4 KB each.
    return bytes(memoryview(orjson.dumps(public_item(values))))


def _extended(
    r: Mapping[str, Any], city: City, notes: Sequence[Mapping[str, Any]]
) -> dict[str, object]:
    district = city.districts.get(r["district_code"] or "")
    barri = city.barris.get(r["barri_code"] or "")
    return {
        "district_code": r["district_code"],
        "district_name": district.name if district else None,
        "barri_code": r["barri_code"],
        "barri_name": barri.name if barri else None,
        "extended_status": extended_status(r["status"]),
        "channel": r["channel"],
        "reporters_count": r["reporters_count"],
        "duplicate_of": str(r["duplicate_of"]) if r["duplicate_of"] else None,
        "notes": [
            {
                "datetime": w3c(e["at"]),
                "type": e["kind"],
                "summary": extended_status(e["status"] or r["status"]),
                "description": mask(e["note"]),
            }
            for e in notes
        ],
    }


async def _read_requests(
    request: Request,
    where: Sequence[str],
    args: Sequence[object],
    *,
    page: int = 1,
    page_size: int = MAX_PAGE_SIZE,
    extensions: bool = False,
) -> Sequence[asyncpg.Record]:
    """The requests matching `where` (conditions on service_requests with $n placeholders for
    `args`), newest first: one statement on the gateway's read connections, no ORM objects."""
    reads: Reads = request.app.state.reads
    n = len(args)
    sql = _PAGE_SQL.format(
        columns=", ".join(_ITEM_COLUMNS + (_EXTENDED_COLUMNS if extensions else ())),
        points=public_grid(request).lateral_sql(),
        where=f" WHERE {' AND '.join(where)}" if where else "",
        offset=f"${n + 1}::bigint",
        limit=f"${n + 2}::int",
    )
    return await reads.fetch(sql, *args, (page - 1) * page_size, page_size)


def public_grid(request: Request) -> PublicGrid:
    """The grid this gateway publishes points on (PLAZA_PUBLIC_POINT_PRECISION_M)."""
    return _grid(request.app.state.public_point_precision_m)


@lru_cache(maxsize=8)
def _grid(precision_m: float) -> PublicGrid:
    return PublicGrid(precision_m)


async def _requests_response(
    request: Request, fmt: str, rows: Sequence[asyncpg.Record], extensions: bool
) -> Response:
    """Requests read by _read_requests as the spec's list (with extensions, their public notes
    read in one more statement)."""
    if extensions:
        reads: Reads = request.app.state.reads
        city: City = request.app.state.city
        notes: dict[int, list[Mapping[str, Any]]] = {r["id"]: [] for r in rows}
        if rows:
            for note in await reads.fetch(_NOTES_SQL, list(notes), sorted(PUBLIC_UPDATE_KINDS)):
                notes[note["service_request_id"]].append(note)
        width = len(_ITEM_COLUMNS)
        body = [
            {
                **public_item(tuple(r)[:width]),
                "extended_attributes": _extended(r, city, notes[r["id"]]),
            }
            for r in rows
        ]
        return render(fmt, "service_requests", "request", body)
    if fmt == "json":
        items = b",".join(_public_item_json(tuple(r)) for r in rows)
        return Response(b"[%b]" % items, media_type=FORMATS["json"])
    return render(fmt, "service_requests", "request", [public_item(tuple(r)) for r in rows])


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


# A W3C datetime as the spec asks for: a date, a time and a timezone (2026-05-01T00:00:00Z,
# 2026-05-01T02:00:00+02:00; seconds and their fraction optional). A space for the offset's +
# is a + a client forgot to encode in the query string. The note lets a fraction have any
# number of digits: .NET's round-trip format writes 7, Go's and Java's up to 9 (a datetime
# keeps microseconds, so the rest is dropped).
_W3C_DATETIME: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+ -]\d{2}:?\d{2})", re.ASCII
)
_W3C_EXAMPLE: Final = "W3C format with a timezone, e.g. 2026-05-01T00:00:00Z"


def _when(name: str, value: str | None) -> datetime | None:
    """A date parameter's datetime (UTC), or None when it is not given. A bare number (which
    lax parsers read as Unix time), a date without a time or a timezone, or one past what a
    datetime holds in UTC is a 400 naming the parameter."""
    if value is None:
        return None
    if not _W3C_DATETIME.fullmatch(value):
        raise Open311Error(400, f"{name}: {value[:40]!r} is not a datetime ({_W3C_EXAMPLE})")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+")).astimezone(
            UTC
        )
    except (ValueError, OverflowError) as exc:
        raise Open311Error(400, f"{name}: {value!r} is not a valid datetime: {exc}") from None


def _before(name: str, value: datetime, span: timedelta) -> datetime:
    try:
        return value - span
    except OverflowError:
        raise Open311Error(400, f"{name} is too early") from None


def _in_order(
    first_name: str, first: datetime | None, last_name: str, last: datetime | None
) -> None:
    """Two bounds of a window, both given, the wrong way round are a mistake to be told of (the
    window would be empty, and an empty list reads as "nothing happened")."""
    if first is not None and last is not None and first > last:
        raise Open311Error(
            400, f"{first_name} ({w3c(first)}) is after {last_name} ({w3c(last)}): no time between"
        )


def _through(end: datetime) -> datetime:
    """The first instant past an end_date (which the spec includes). Every datetime is written
    in whole seconds, so an end_date in whole seconds (as a client copies one it was shown)
    includes all of that second: a request at 10:00:14.3, shown as 10:00:14, is in a list up to
    10:00:14, and a client paging back by dates misses none."""
    try:
        return end + (timedelta(seconds=1) if end.microsecond == 0 else timedelta(microseconds=1))
    except OverflowError:  # the end of time: nothing is past it
        return datetime.max.replace(tzinfo=UTC)


_EXAMPLE_WHEN: Final = "2026-05-01T00:00:00Z"
# A phone's point on carrer de Verdi, as the default grid publishes it (to 6 decimals, 0.1 m):
# an example the API could not answer would show clients the exact point it never gives.
_EXAMPLE_POINT: Final = tuple(
    round(c, 6) for c in PublicGrid(PUBLIC_POINT_PRECISION_M).point(41.4036, 2.1566)
)
_EXAMPLE_REQUEST: Final = {
    "service_request_id": "123",
    "status": "open",
    "status_notes": None,
    "service_name": "Street lighting",
    "service_code": "streetlight",
    "description": "El fanal del carrer de Verdi no funciona",
    "agency_responsible": "Districte de Gràcia",
    "service_notice": None,
    "requested_datetime": "2026-05-04T08:00:00+00:00",
    "updated_datetime": "2026-05-04T08:00:00+00:00",
    "expected_datetime": "2026-05-07T08:00:00+00:00",
    "address": None,
    "address_id": None,
    "zipcode": None,
    "lat": _EXAMPLE_POINT[0],
    "long": _EXAMPLE_POINT[1],
    "media_url": None,
}


def _near(
    lat: float | None, long: float | None, radius: float | None, grid: PublicGrid
) -> tuple[float, ...] | None:
    """The lat/long/radius filter (an extension: web pages list the requests around a point)
    as a box (south, north, west, east) around the exact points that may be published inside
    the circle (it is widened by a grid cell), and, for the test on the published point, the
    point, the cosine that scales longitude and the radius in degrees; None without a point.
    Half a point is a 400, as a radius alone is: either would otherwise silently list the whole
    city."""
    if lat is None and long is None:
        if radius is not None:
            raise Open311Error(400, "radius needs lat and long: the point it is measured from")
        return None
    if lat is None or long is None:
        raise Open311Error(400, "lat and long must be given together")
    degrees = (radius or DEFAULT_RADIUS) / METRES_PER_DEGREE
    scale = max(math.cos(math.radians(lat)), 1e-6)  # degrees of longitude are shorter
    # A published point is at most half a cell from the exact one: a whole cell is room to spare.
    box = degrees + grid.step
    west, east = long - box / scale, long + box / scale
    return lat - box, lat + box, west, east, lat, long, scale, degrees


@router.get(
    "/requests.{format}",
    response_class=Response,
    responses=_responses([_EXAMPLE_REQUEST], "service_requests", "request"),
)
async def list_requests(
    request: Request,
    format: _FORMAT_PARAM,
    jurisdiction_id: _JURISDICTION = None,
    service_request_id: Annotated[
        str | None,
        Query(description="Comma-separated ids; overrides every other filter", examples=["1,2"]),
    ] = None,
    service_code: Annotated[
        str | None, Query(description="Comma-separated service codes", examples=["streetlight"])
    ] = None,
    start_date: Annotated[
        str | None,
        Query(description="Requested at or after (W3C, with a timezone)", examples=[_EXAMPLE_WHEN]),
    ] = None,
    end_date: Annotated[str | None, Query(description="Requested at or before (W3C)")] = None,
    status: Annotated[
        str | None, Query(description="open, closed, or both comma-separated", examples=["open"])
    ] = None,
    updated_after: Annotated[str | None, Query(description="Changed after (W3C)")] = None,
    updated_before: Annotated[str | None, Query(description="Changed before (W3C)")] = None,
    lat: Annotated[
        float | None,
        Query(
            ge=-90,
            le=90,
            description="With long: only requests whose published point (on the grid of "
            "PLAZA_PUBLIC_POINT_PRECISION_M) is within radius of this point",
        ),
    ] = None,
    long: Annotated[float | None, Query(ge=-180, le=180, description="With lat")] = None,
    radius: Annotated[
        float | None,
        Query(
            gt=0,
            le=MAX_RADIUS,
            description=f"Metres from lat/long (default {DEFAULT_RADIUS:g}, at most "
            f"{MAX_RADIUS:g}); needs lat and long",
        ),
    ] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="1 for the newest requests")] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = MAX_PAGE_SIZE,
    extensions: Annotated[
        bool,
        Query(
            description="true adds extended_attributes: district, barri, extended (FixMyStreet) "
            "status, public notes and channel"
        ),
    ] = False,
) -> Response:
    """Requests, newest first. Without ids or dates: those of the last 90 days (the spec's
    default). `lat`, `long` and `radius` (an extension) keep those whose published point is
    within radius metres of a point (requests placed by an address alone have no point, and are
    left out)."""
    fmt = await _public_read(request, format, jurisdiction_id)
    where: list[str] = []
    args: list[object] = []

    def condition(sql: str, value: object) -> None:
        """A condition with one argument, `$` in sql standing for its placeholder."""
        args.append(value)
        where.append(sql.replace("$", f"${len(args)}"))

    def number(value: float) -> str:
        """An argument's placeholder, as a float8."""
        args.append(value)
        return f"${len(args)}::float8"

    ids = _csv(service_request_id)
    if ids:
        if not all(i.isascii() and i.isdigit() for i in ids):
            raise Open311Error(400, "service_request_id must be a comma-separated list of ids")
        # an id past a bigint names no request
        condition("id = ANY($::bigint[])", [i for i in map(parse_id, ids) if i is not None])
    else:
        start, end = _when("start_date", start_date), _when("end_date", end_date)
        after, before = (
            _when("updated_after", updated_after),
            _when("updated_before", updated_before),
        )
        _in_order("start_date", start, "end_date", end)
        _in_order("updated_after", after, "updated_before", before)
        if start is None and end is None and after is None and before is None:
            start = datetime.now(UTC) - DEFAULT_WINDOW
        if start is not None:
            condition("requested_datetime >= $::timestamptz", start)
        if end is not None:
            condition("requested_datetime < $::timestamptz", _through(end))
        if after is not None:
            condition("updated_datetime > $::timestamptz", after)
        if before is not None:
            condition("updated_datetime < $::timestamptz", before)
        near = _near(lat, long, radius, public_grid(request))
        if near is not None:
            # A box first (plain comparisons on the stored point), then the distance of the
            # published point: the exact one decides nothing, so no sequence of small circles
            # finds it. Within a city, degrees of longitude shrunk by the cosine of the latitude
            # are as good as a great circle.
            south, north, west, east, lat0, long0, scale, degrees = map(number, near)
            where.append(f"lat BETWEEN {south} AND {north} AND long BETWEEN {west} AND {east}")
            where.append(
                f"(public_lat - {lat0}) ^ 2 + ((public_long - {long0}) * {scale}) ^ 2"
                f" <= {degrees} ^ 2"
            )
        codes = _csv(service_code)
        if codes:
            unknown_codes = sorted(set(codes) - set(load_taxonomy()))
            if unknown_codes:  # a typo would otherwise list nothing, day after day
                raise Open311Error(
                    400, f"service_code: no service {unknown_codes}; GET services.{fmt} lists them"
                )
            condition("service_code = ANY($::text[])", codes)
        statuses = _csv(status)
        if statuses:
            unknown = set(statuses) - {"open", "closed"}
            if unknown:
                raise Open311Error(400, f"status must be open or closed, not {sorted(unknown)}")
            wanted: set[str] = set()
            if "open" in statuses:
                wanted |= OPEN_STATUSES
            if "closed" in statuses:
                wanted |= CLOSED_STATUSES
            condition("status = ANY($::text[])", sorted(wanted))
    rows = await _read_requests(
        request, where, args, page=page, page_size=page_size, extensions=extensions
    )
    return await _requests_response(request, fmt, rows, extensions)


@router.get(
    "/requests/{service_request_id}.{format}",
    response_class=Response,
    responses=_responses([_EXAMPLE_REQUEST], "service_requests", "request"),
)
async def get_request(
    request: Request,
    service_request_id: str,
    format: _FORMAT_PARAM,
    jurisdiction_id: _JURISDICTION = None,
    extensions: bool = False,
) -> Response:
    """One request (as a list of one, as the spec says)."""
    fmt = await _public_read(request, format, jurisdiction_id)
    rid = parse_id(service_request_id)
    if rid is None:
        raise Open311Error(404, f"no service request {service_request_id!r}")
    rows = await _read_requests(request, ["id = $1::bigint"], [rid], extensions=extensions)
    if not rows:
        raise Open311Error(404, f"no service request {service_request_id!r}")
    return await _requests_response(request, fmt, rows, extensions)


# --- POST requests ---------------------------------------------------------------------------

_POST_FIELDS: Final = {
    "api_key": "Your API key (role civic_developer). Required.",
    "jurisdiction_id": "Optional; this endpoint's jurisdiction",
    "service_code": "Required: a service_code of services.json",
    "lat": "Latitude (WGS84); with long, or give address_string",
    "long": "Longitude (WGS84)",
    "address_string": "A human address, when there are no coordinates",
    "address_id": "An address id of the city's registry",
    "email": "The reporter's e-mail: private, never published",
    "device_id": "The reporting device's id: private",
    "account_id": "The reporter's account in your app: private",
    "first_name": "The reporter's first name: private",
    "last_name": "The reporter's last name: private",
    "phone": "The reporter's phone: private",
    "description": "What is wrong, in the citizen's words (published, contact details masked)",
    "media_url": "A photo's URL",
    "attribute[language]": "ca, es or en: the language of the city's answers",
}
_EMAIL: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# What a POST's body may be: the spec's form, or a multipart form (Starlette reads both).
_FORM_TYPES: Final = ("application/x-www-form-urlencoded", "multipart/form-data")


def _number(form: Mapping[str, str], name: str, low: float, high: float) -> float | None:
    raw = form.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Open311Error(400, f"{name} must be a number, not {raw!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise Open311Error(400, f"{name} must be between {low} and {high}")
    return value


async def _form(request: Request) -> list[tuple[str, str]]:
    """The POST's fields in order. A urlencoded body is decoded as UTF-8, as the spec says all
    text is (Starlette's form parser reads it as Latin-1). A file (an app's photo as `media`,
    as some Open311 servers take it) is a 400: dropped, the request would go on without it."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type and media_type not in _FORM_TYPES:
        # Read as a form, a JSON body is no fields at all: the caller would be told that its
        # api_key or service_code is missing when it sent both.
        raise Open311Error(
            415,
            f"the body is {media_type}: a POST is form-encoded, as the spec says "
            f"({' or '.join(_FORM_TYPES)}; curl -d name=value sends it)",
        )
    if media_type != "application/x-www-form-urlencoded":
        form = (await request.form()).multi_items()
        files = sorted({name for name, value in form if not isinstance(value, str)})
        if files:
            raise Open311Error(
                400,
                f"{', '.join(files)}: files are not taken; give media_url, the public http(s) "
                "address of the photo",
            )
        return [(k, v) for k, v in form if isinstance(v, str)]
    try:
        return parse_qsl(
            (await request.body()).decode("utf-8"), keep_blank_values=True, errors="strict"
        )
    except UnicodeDecodeError:
        raise Open311Error(400, "the form is not UTF-8 (the spec's encoding)") from None


def _attributes(fields: Sequence[tuple[str, str]]) -> dict[str, str | list[str]]:
    """attribute[code]=value fields by code; attribute[code][]=value (a multivaluelist's, given
    once per value) as a list."""
    found: dict[str, str | list[str]] = {}
    for name, value in fields:
        if not (name.startswith("attribute[") and name.endswith("]")):
            continue
        code = name[10:-1]
        if code.endswith("]["):
            values = found.setdefault(code[:-2], [])
            if isinstance(values, list):
                values.append(value)
        else:
            found[code] = value
    return found


def _citizen(key_id: int, identity: str) -> str:
    """Who submitted a request through an app, as its reports are counted (one citizen's two
    submissions are one reporter): a digest of the e-mail, account or device the app gave,
    within that app's key, so that no personal detail leaves the submission. Empty when the app
    gave none (each submission is then a reporter of its own)."""
    identity = identity.strip().lower()
    if not identity:
        return ""
    digest = hashlib.sha256(f"{key_id}:{identity}".encode()).hexdigest()[:32]
    return f"key{key_id}:{digest}"


def _text(form: Mapping[str, str], name: str, max_length: int) -> str | None:
    value = form.get(name, "").strip()
    if len(value) > max_length:
        raise Open311Error(400, f"{name} is longer than {max_length} characters")
    return value or None


@router.post(
    "/requests.{format}",
    response_class=Response,
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["api_key", "service_code"],
                        "properties": {
                            name: {"type": "string", "description": text}
                            for name, text in _POST_FIELDS.items()
                        },
                    },
                    "example": {
                        "api_key": "plz_…",
                        "service_code": "streetlight",
                        "lat": "41.4036",
                        "long": "2.1566",
                        "description": "El fanal del carrer de Verdi no funciona",
                        "email": "marta@example.org",
                    },
                }
            },
        }
    },
    responses={
        201: {
            "description": "Accepted: the token resolves to the request's id (tokens/{token})",
            "content": {
                "application/json": {
                    "example": [{"token": "…", "service_notice": "…", "account_id": None}]
                }
            },
        },
        "4XX": {
            "description": "400 bad parameter, 403 missing or wrong api_key, 404 unknown "
            "service_code or jurisdiction_id, 415 a body that is not a form (JSON)"
        },
    },
)
async def post_request(
    request: Request, format: _FORMAT_PARAM, session: SessionDep, ingest: IngestDep
) -> Response:
    """Submits a request (form-encoded, as the spec says). It enters the same pipeline as a social
    post: the service code is the one given, the district is found from the location. The answer
    carries a token; tokens/{token} gives the service_request_id once the request is open."""
    fmt = _format(format)
    fields = await _form(request)
    form = dict(fields)  # a field given twice: its last value
    _check_jurisdiction(
        request, form.get("jurisdiction_id") or request.query_params.get("jurisdiction_id")
    )
    caller = await _caller(request, form.get("api_key"))
    if caller.kind == "anonymous":
        raise Open311Error(403, "api_key is required to POST a request")
    enforce_rate_limit(request, caller)
    if caller.kind != "key" or caller.role not in OPEN311_WRITERS:
        allowed = " or ".join(sorted(OPEN311_WRITERS))
        what = f"a {caller.role} key" if caller.kind == "key" else f"a {caller.role} user's token"
        raise Open311Error(
            403, f"{what} may not POST requests: that needs an API key of role {allowed}"
        )
    code = form.get("service_code", "").strip()
    if not code:
        raise Open311Error(400, "service_code is required")
    if code not in load_taxonomy():
        raise Open311Error(404, f"no service {code!r}; GET services.{fmt} lists them")
    lat, long = _number(form, "lat", -90, 90), _number(form, "long", -180, 180)
    if (lat is None) != (long is None):
        raise Open311Error(400, "lat and long must be given together")
    city: City = request.app.state.city
    if lat is not None and long is not None and city.locate(lat, long) is None:
        box = city.bbox
        if box.contains(lat, long):
            # Inside the box but in no district (L'Hospitalet, the sea): the box's figures
            # would tell the client its point is in them.
            where = f"more than {SNAP_METRES:g} m from any of its districts"
        else:
            where = (
                f"latitude {box.min_lat:g} to {box.max_lat:g}, "
                f"longitude {box.min_lon:g} to {box.max_lon:g}"
            )
        raise Open311Error(
            400, f"lat and long ({lat:g}, {long:g}) are not in {city.name} ({where})"
        )
    address = _text(form, "address_string", 500)
    address_id = _text(form, "address_id", 256)
    if lat is None and not address and not address_id:
        raise Open311Error(400, "a location is required: lat and long, or address_string")
    description = _text(form, "description", MAX_DESCRIPTION)
    email = _text(form, "email", 256)
    if email and not _EMAIL.match(email):
        raise Open311Error(400, f"email {email!r} is not an e-mail address")
    media_url = _text(form, "media_url", 2000)
    if media_url and not media_url.startswith(("http://", "https://")):
        raise Open311Error(400, "media_url must be an http(s) URL")
    language = form.get("attribute[language]", "").strip()
    if language and language not in _LANGUAGE_NAMES:
        raise Open311Error(400, f"attribute[language] must be one of {', '.join(_LANGUAGE_NAMES)}")
    attributes = _attributes(fields)
    token = secrets.token_hex(12)
    account_id, device_id = _text(form, "account_id", 256), _text(form, "device_id", 256)
    now = datetime.now(UTC)
    async with session.begin():
        session.add(
            Open311Submission(
                token=token,
                api_key_id=caller.id,
                service_code=code,
                email=email,
                phone=_text(form, "phone", 64),
                first_name=_text(form, "first_name", 128),
                last_name=_text(form, "last_name", 128),
                device_id=device_id,
                account_id=account_id,
                attributes=attributes,
                submitted_at=now,
            )
        )
    post: dict[str, object] = {
        "platform": "open311",
        "post_id": token,
        # Who submitted it: the app, never the citizen (their details stay in the submission).
        "author_handle": f"open311:{caller.name}",
        "author_id": _citizen(caller.id, email or account_id or device_id or "") or token,
        "text": description or service_name(code, language or "en"),
        "lang": language,
        "created_at": now.isoformat(),
        "address": address or address_id or "",
        "service_code": code,
        "media_urls": [media_url] if media_url else [],
    }
    if lat is not None:
        post["lat"], post["long"] = lat, long
    try:
        accepted = await ingest.post("/api/v1/open311/posts", json=post)
    except Exception as exc:  # as the webhook's forwarding does (gateway.py)
        accepted = None
        reason = f"ingest is unavailable: {type(exc).__name__}"
    if accepted is None or accepted.status_code != 202:
        reason = reason if accepted is None else f"ingest refused it: {accepted.text[:300]}"
        async with session.begin():
            gone = await session.get(Open311Submission, token)
            if gone is not None:
                await session.delete(gone)
        status = 400 if accepted is not None and accepted.status_code == 422 else 503
        raise Open311Error(status, reason)
    body = [
        {
            "token": token,
            "service_notice": "Received: the city answers in public. "
            f"GET tokens/{token}.{fmt} gives the request's id.",
            "account_id": form.get("account_id") or None,
        }
    ]
    return render(fmt, "service_requests", "request", body, status=201)


@router.get(
    "/tokens/{token}.{format}",
    response_class=Response,
    responses=_responses(
        [{"service_request_id": "123", "token": "…"}], "service_requests", "request"
    ),
)
async def resolve_token(
    request: Request,
    token: str,
    format: _FORMAT_PARAM,
    session: SessionDep,
    jurisdiction_id: _JURISDICTION = None,
) -> Response:
    """The service_request_id a POST's token became (empty until the pipeline has opened it; a
    report that joined an open request gives that request's id)."""
    fmt = await _public_read(request, format, jurisdiction_id)
    if await session.get(Open311Submission, token) is None:
        raise Open311Error(404, f"no token {token!r}")
    request_id = (
        await session.execute(
            select(RequestReport.service_request_id).where(
                RequestReport.platform == "open311", RequestReport.post_id == token
            )
        )
    ).scalar_one_or_none()
    body = [{"service_request_id": str(request_id) if request_id else None, "token": token}]
    return render(fmt, "service_requests", "request", body)


# --- FixMyStreet's servicerequestupdates -----------------------------------------------------


# Public changes in a time window, oldest first; each with the status it left (or, for a note,
# found) the request in.
_UPDATES_SQL: Final = f"""
    SELECT e.id, e.service_request_id, e.at, e.note, e.after ->> 'resolution_photo_url' AS photo,
           {_EVENT_STATUS} AS status
    FROM request_events e JOIN service_requests r ON r.id = e.service_request_id
    WHERE e.public AND e.kind = ANY($1::text[]) AND e.at >= $2::timestamptz
      AND e.at < $3::timestamptz
    ORDER BY e.at, e.id OFFSET $4::bigint LIMIT $5::int
"""


def _update(row: Mapping[str, Any]) -> dict[str, object]:
    return {
        "update_id": str(row["id"]),
        "service_request_id": str(row["service_request_id"]),
        "status": extended_status(row["status"]),
        "updated_datetime": w3c(row["at"]),
        "description": mask(row["note"]) or "",
        "media_url": row["photo"] or None,
    }


@router.get(
    "/servicerequestupdates.{format}",
    response_class=Response,
    responses=_responses(
        [
            {
                "update_id": "7",
                "service_request_id": "123",
                "status": "FIXED",
                "updated_datetime": "2026-05-05T09:00:00+00:00",
                "description": "Fanal canviat",
                "media_url": "https://…/photo.jpg",
            }
        ],
        "service_requests_updates",
        "request_update",
    ),
)
async def service_request_updates(
    request: Request,
    format: _FORMAT_PARAM,
    jurisdiction_id: _JURISDICTION = None,
    start_date: Annotated[
        str | None,
        Query(description="Updates at or after (W3C; default: a day before end_date)"),
    ] = None,
    end_date: Annotated[
        str | None, Query(description="Updates at or before (default: now)")
    ] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = MAX_PAGE_SIZE,
) -> Response:
    """FixMyStreet's feed of public updates (status changes and public notes, with the extended
    status), oldest first. Internal notes are never in it."""
    fmt = await _public_read(request, format, jurisdiction_id)
    given_end = _when("end_date", end_date)
    end = given_end or datetime.now(UTC)
    start = _when("start_date", start_date) or _before("end_date", end, UPDATES_WINDOW)
    _in_order("start_date", start, "end_date", given_end)
    reads: Reads = request.app.state.reads
    rows = await reads.fetch(
        _UPDATES_SQL,
        sorted(PUBLIC_UPDATE_KINDS),
        start,
        _through(end),
        (page - 1) * page_size,
        page_size,
    )
    body = [_update(row) for row in rows]
    return render(fmt, "service_requests_updates", "request_update", body)
