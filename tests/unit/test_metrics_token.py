"""PLAZA_METRICS_TOKEN: every /metrics (the workers' own server, ingest's and the gateway's
route) answers a scrape without the bearer token 401 problem+json with a challenge; without the
setting, anyone who reaches the port reads it, as before."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from plaza.bus.memory import MemoryBus
from plaza.scrape import MetricsAccess
from plaza.service import metrics_app, serve_metrics
from plaza.settings import PlazaSettings, SettingsError, load
from plaza.web import install_metrics, install_problem_handlers
from plaza_api.settings import AccessSettings
from plaza_ingest.app import create_app as create_ingest
from pydantic import SecretStr

from tests.infra import free_port

TOKEN = "s3cret-metrics-token-0123456789"
REALM = 'Bearer realm="plaza-metrics"'


def locked(token: str = TOKEN) -> MetricsAccess:
    return MetricsAccess(SecretStr(token))


@pytest.mark.parametrize(
    ("authorization", "challenge", "detail"),
    [
        (None, REALM, "none was sent"),
        ("", REALM, "none was sent"),
        (f"Basic {TOKEN}", f'{REALM}, error="invalid_request"', "the scheme 'Basic'"),
        ("Bearer", f'{REALM}, error="invalid_request"', "one word"),
        (TOKEN, f'{REALM}, error="invalid_request"', "one word"),
        (f"Bearer {TOKEN}x", f'{REALM}, error="invalid_token"', "is not this process's"),
        (f"Bearer {TOKEN[:-1]}", f'{REALM}, error="invalid_token"', "is not this process's"),
        ("Bearer ĉ", f'{REALM}, error="invalid_token"', "is not this process's"),
    ],
)
def test_a_scrape_without_the_token_is_refused_saying_why(
    authorization: str | None, challenge: str, detail: str
) -> None:
    refused = locked().refusal(authorization)
    assert refused is not None
    assert refused.challenge == challenge
    assert detail in refused.detail and "PLAZA_METRICS_TOKEN" in refused.detail
    assert TOKEN not in refused.detail  # a header of one word may be the token itself


@pytest.mark.parametrize(
    "authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f" Bearer {TOKEN} "]
)
def test_the_token_lets_a_scrape_in(authorization: str) -> None:
    assert locked().refusal(authorization) is None


@pytest.mark.parametrize("authorization", [None, "Basic x", "Bearer anything"])
def test_without_a_token_anyone_reads_the_metrics(authorization: str | None) -> None:
    assert MetricsAccess().refusal(authorization) is None


# --- the setting -------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("PLAZA_METRICS_TOKEN", "PLAZA_METRICS_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_token_is_read_from_the_setting_or_its_file(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load(PlazaSettings).metrics_access() == MetricsAccess()
    clean_env.setenv("PLAZA_METRICS_TOKEN", TOKEN)
    assert load(PlazaSettings).metrics_access().refusal(f"Bearer {TOKEN}") is None
    clean_env.delenv("PLAZA_METRICS_TOKEN")
    secret = tmp_path / "metrics_token"
    secret.write_text(TOKEN + "\n")  # as `secrets.token_urlsafe` printed it
    clean_env.setenv("PLAZA_METRICS_TOKEN_FILE", str(secret))
    access = load(PlazaSettings).metrics_access()
    assert access.refusal(f"Bearer {TOKEN}") is None
    assert access.refusal("Bearer another-token-of-enough-length") is not None
    # the gateway's, as the gateway process and `make run` build it
    assert load(AccessSettings).access("x" * 32).metrics == access


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"PLAZA_METRICS_TOKEN": "short"}, "PLAZA_METRICS_TOKEN is 5 characters: use 16 or more"),
        (
            {"PLAZA_METRICS_TOKEN": "has a space in it, sixteen+"},
            "PLAZA_METRICS_TOKEN may hold only letters, digits and -._~+/",
        ),
        (
            {"PLAZA_METRICS_TOKEN": TOKEN, "PLAZA_METRICS_TOKEN_FILE": "FILE"},
            "PLAZA_METRICS_TOKEN and PLAZA_METRICS_TOKEN_FILE are both set: choose one",
        ),
        ({"PLAZA_METRICS_TOKEN_FILE": "MISSING"}, "PLAZA_METRICS_TOKEN_FILE=MISSING is not a file"),
        ({"PLAZA_METRICS_TOKEN_FILE": "EMPTY"}, "PLAZA_METRICS_TOKEN_FILE=EMPTY is empty"),
    ],
)
def test_a_token_that_cannot_be_used_stops_start_up_naming_it(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], error: str
) -> None:
    (tmp_path / "FILE").write_text(TOKEN)
    (tmp_path / "EMPTY").write_text("\n")
    clean_env.chdir(tmp_path)
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(SettingsError, match="invalid configuration") as stopped:
        load(PlazaSettings)
    assert error in str(stopped.value)


# --- the endpoints -------------------------------------------------------------------------------


def wsgi_get(access: MetricsAccess, authorization: str | None) -> tuple[str, dict[str, str], bytes]:
    """A GET /metrics of a worker's metrics app, called as its WSGI server calls it."""
    answer: dict[str, object] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: object = None
    ) -> None:
        answer.update(status=status, headers={k.lower(): v for k, v in headers})

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/metrics",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "9102",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
    }
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    body = b"".join(metrics_app(access)(environ, start_response))
    return str(answer["status"]), dict(answer["headers"]), body  # type: ignore[call-overload]


def test_a_workers_metrics_ask_for_the_token() -> None:
    status, headers, body = wsgi_get(locked(), None)
    assert status == "401 Unauthorized"
    assert headers["content-type"] == "application/problem+json"
    assert headers["www-authenticate"] == REALM
    assert b'"status":401' in body and b"PLAZA_METRICS_TOKEN" in body
    status, headers, body = wsgi_get(locked(), f"Bearer {TOKEN}")
    assert status.startswith("200") and b"plaza_" in body
    status, _, body = wsgi_get(MetricsAccess(), None)  # no token: as before
    assert status.startswith("200") and b"plaza_" in body


@pytest.fixture
def worker_metrics(clean_env: pytest.MonkeyPatch) -> Iterator[str]:
    """A worker's metrics server, as serve_metrics starts it, with PLAZA_METRICS_TOKEN set."""
    clean_env.setenv("PLAZA_METRICS_TOKEN", TOKEN)
    port = free_port()
    clean_env.setenv("PLAZA_METRICS_PORT", str(port))
    server = serve_metrics(load(PlazaSettings))
    assert server is not None
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_a_workers_metrics_server_checks_the_token(worker_metrics: str) -> None:
    refused = httpx.get(worker_metrics)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == REALM
    assert refused.json()["detail"].startswith("/metrics needs Authorization: Bearer")
    wrong = httpx.get(worker_metrics, headers={"Authorization": "Bearer " + "y" * len(TOKEN)})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == f'{REALM}, error="invalid_token"'
    read = httpx.get(worker_metrics, headers={"Authorization": f"Bearer {TOKEN}"})
    assert read.status_code == 200 and "plaza_" in read.text


async def get(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://plaza"
    ) as client:
        return await client.get("/metrics", headers=headers or {})


async def test_an_apps_metrics_route_asks_for_the_token() -> None:
    app = FastAPI()
    install_problem_handlers(app)

    async def exposition() -> bytes:
        return b"plaza_backlog 1\n"

    install_metrics(app, locked(), exposition)
    refused = await get(app)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["www-authenticate"] == REALM
    assert refused.json() == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "/metrics needs Authorization: Bearer <PLAZA_METRICS_TOKEN>; none was sent",
    }
    read = await get(app, {"Authorization": f"Bearer {TOKEN}"})
    assert read.status_code == 200 and read.text == "plaza_backlog 1\n"
    assert read.headers["content-type"].startswith("text/plain")


async def test_ingests_metrics_ask_for_the_token_and_are_open_without_one() -> None:
    bus = MemoryBus()
    assert (await get(create_ingest(bus, locked()))).status_code == 401
    read = await get(create_ingest(bus, locked()), {"Authorization": f"Bearer {TOKEN}"})
    assert read.status_code == 200 and "plaza_http_requests_total" in read.text
    assert (await get(create_ingest(bus))).status_code == 200
