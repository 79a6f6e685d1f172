"""The web console in a real browser (Debian's chromium, driven by Playwright) against the gateway
on a real port and the test PostgreSQL: signing in and out, a manager's queue and only hers, the
actions through the forms (If-Match, 412, problem details), a citizen's HTML shown as text, a
worker's actions, the CSP, a phone's width, and its languages (Catalan for Barcelona, Spanish for
a Spanish town, the user's choice remembered). One browser for the module, a new context (fresh
sessionStorage) per test; every test fails on a JavaScript error or a CSP violation."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    async_playwright,
    expect,
)
from plaza.city import City
from plaza.city.config import load_city_config
from plaza.contracts import PostWithdrawn, envelope
from plaza.db.models import ReplyDelivery, ServiceRequest
from plaza_api.app import create_app
from plaza_api.auth import Role
from plaza_router.withdrawals import WithdrawPost
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.infra import ROOT, SHARED_DATA
from tests.integration.api_helpers import PASSWORD, Server, new_key, new_user
from tests.integration.lifecycle_helpers import as_event, classified, router

pytestmark = pytest.mark.postgres

# A shared two-core machine under a whole test run: waits that pass in 1 s alone get room.
expect.set_options(timeout=15_000)

XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> fanal trencat'


AXE_INSTALL = ROOT / "tests/console/axe/install.sh"
# What the city must meet (WCAG 2.1 A and AA, the EU Web Accessibility Directive's level), and
# axe's best practices a screen-reader user meets on every page: landmarks, one h1, headings in
# order.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def chromium() -> str:
    """Debian's chromium (Playwright's own browser download does not work here). Missing, the
    tests fail: under CI as anywhere, nothing is skipped."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail(
            "chromium not found: the console's browser tests need Debian's chromium "
            "(apt-get install chromium; .ci/run does)"
        )
    return found


@pytest.fixture(scope="module")
def axe() -> str:
    """axe-core's source, installed from the npm registry by tests/console/axe/install.sh (as
    .ci/run does). Without npm the tests fail, as without chromium."""
    try:
        done = subprocess.run(
            [str(AXE_INSTALL)],
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"{AXE_INSTALL} did not run: {exc}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(
            f"axe-core could not be installed ({AXE_INSTALL} exited {done.returncode}; "
            f"npm is needed): {done.stderr[-2000:]}",
            pytrace=False,
        )
    return Path(done.stdout.strip()).read_text()


async def audit(page: Page, axe: str, screen: str) -> list[str]:
    """axe-core's violations on the page as it is now, one line each: the screen, the rule, its
    WCAG criterion's tags, the elements. axe is evaluated through the DevTools protocol, which the
    console's CSP (no inline script) does not govern."""
    if await page.evaluate("typeof window.axe") != "object":
        await page.evaluate(axe + "\n;0")
    violations = await page.evaluate(
        """async (tags) => {
            const result = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
            return result.violations.map(v => ({
                id: v.id, tags: v.tags.filter(t => t.startsWith('wcag')), help: v.help,
                nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary),
            }));
        }""",
        AXE_TAGS,
    )
    return [
        f"{screen}: {v['id']} {v['tags']} ({v['help']}): {json.dumps(v['nodes'], ensure_ascii=False)}"
        for v in violations
    ]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable)
        yield launched
        await launched.close()


@dataclass
class Console:
    url: str
    sessions: async_sessionmaker[AsyncSession]
    api: httpx.AsyncClient  # city hall's key: what really happened
    errors: list[str] = field(default_factory=list)

    async def request(self, rid: str) -> dict[str, object]:
        answer = await self.api.get(f"/api/v1/requests/{rid}")
        assert answer.status_code == 200, answer.text
        body: dict[str, object] = answer.json()
        return body


async def open_request(
    sessions: async_sessionmaker[AsyncSession], post_id: str, **kw: object
) -> None:
    await router(sessions)(as_event(classified(post_id, at=datetime.now(UTC), **kw)))  # type: ignore[arg-type]


@functools.cache
def barcelona() -> City:
    """Barcelona with its barris' polygons (as make run has them): the map draws its outlines."""
    return City.barcelona(SHARED_DATA / "barcelona")


@pytest.fixture
async def console(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Console]:
    """The gateway serving the console; maria manages Gràcia (06), pere Sant Andreu's neighbour
    Horta (07), jordi is a worker, alba is city hall. Request 1 is in 06, request 2 in 07."""
    await new_user(sessions, "maria", Role.MANAGER, scopes=["06"])
    await new_user(sessions, "pere", Role.MANAGER, scopes=["07"])
    await new_user(sessions, "jordi", Role.WORKER, worker_handle="@jordi")
    await new_user(sessions, "alba", Role.CITY_HALL)
    await open_request(sessions, "p1", text="El fanal del carrer de Verdi no funciona")
    await open_request(
        sessions, "p2", district="07", barri="43", latlon=None, text="Soroll al carrer d'Horta"
    )
    key = await new_key(sessions, Role.CITY_HALL)
    app = create_app(sessions, httpx.AsyncClient(base_url="http://ingest.invalid"), barcelona())
    async with (
        Server(app) as server,
        httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as api,
    ):
        yield Console(server.url, sessions, api)


async def in_english(context: BrowserContext) -> None:
    """The console as an English-speaking user left it (the tests below name its English words;
    Barcelona's console opens in Catalan otherwise)."""
    await context.add_init_script("localStorage.setItem('plaza.console.language', 'en')")


def watch(page: Page, console: Console) -> None:
    """JavaScript errors, CSP violations and dialogs go to console.errors (the test fails)."""
    page.on("pageerror", lambda exc: console.errors.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            console.errors.append(f"console {msg.type}: {msg.text}")
            # a 4xx the console shows the user is logged by the browser too; that is no bug
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    page.on("dialog", lambda dialog: console.errors.append(f"a dialog opened: {dialog.message}"))


@pytest.fixture
async def page(browser: Browser, console: Console) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    await in_english(context)
    page = await context.new_page()
    watch(page, console)
    yield page
    await context.close()
    assert console.errors == [], console.errors  # JavaScript errors, CSP violations, alerts


def contrast(css: str, background: tuple[int, int, int]) -> float:
    """WCAG's contrast ratio of an rgb() colour against another."""

    def luminance(rgb: tuple[int, ...]) -> float:
        c = [x / 255 for x in rgb]
        c = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    rgb = tuple(int(n) for n in re.findall(r"\d+", css)[:3])
    high, low = sorted((luminance(rgb), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


async def sign_in(page: Page, console: Console, user: str, password: str = PASSWORD) -> None:
    await page.goto(f"{console.url}/console/")
    await page.get_by_label("Username").fill(user)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.locator("#who")).to_contain_text(user)


# Live updates come within the stream's poll (1 s) and a refresh: far under the 30 s polling.
LIVE = 8_000


async def live(page: Page) -> None:
    await expect(page.locator("#queue-meta")).to_contain_text("live", timeout=LIVE)


async def test_a_manager_signs_in_and_out(page: Page, console: Console) -> None:
    await page.goto(f"{console.url}/console/")
    await page.get_by_label("Username").fill("maria")
    await page.get_by_label("Password", exact=True).fill("not her password")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.locator("#sign-in-message")).to_contain_text("Wrong username or password.")

    await sign_in(page, console, "maria")
    await expect(page.locator("#who")).to_contain_text("manager of Gràcia")
    token = await page.evaluate("sessionStorage.getItem('plaza.console.token')")
    assert token and token not in page.url
    assert "password" not in page.url

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#sign-in-message")).to_contain_text("You have signed out")
    assert await page.evaluate("sessionStorage.length") == 0
    await expect(page.locator("#session")).to_be_hidden()


async def test_an_expired_or_revoked_token_brings_the_sign_in_back(
    page: Page, console: Console
) -> None:
    await sign_in(page, console, "maria")
    await live(page)  # its stream opened with the good token: the refresh finds the bad one
    await page.evaluate("sessionStorage.setItem('plaza.console.token', 'not-a-token')")
    await page.get_by_role("button", name="Refresh").click()
    await expect(page.locator("#sign-in-message")).to_contain_text("Your session has ended")
    assert await page.evaluate("sessionStorage.length") == 0


async def test_an_api_key_signs_in_too(page: Page, console: Console) -> None:
    key = await new_key(console.sessions, Role.MANAGER, scopes=["06"], name="gracia-tablet")
    await page.goto(f"{console.url}/console/")
    await page.get_by_text("Use an API key instead").click()
    await page.get_by_label("API key").fill("plz_not-a-key")
    await page.get_by_role("button", name="Sign in with the key").click()
    await expect(page.locator("#sign-in-message")).to_contain_text(
        "the key or session was not accepted: wrong, expired or revoked"
    )
    await page.get_by_text("Use an API key instead").click()
    await page.get_by_label("API key").fill(await new_key(console.sessions, Role.CIVIC_DEVELOPER))
    await page.get_by_role("button", name="Sign in with the key").click()
    await expect(page.locator("#sign-in-message")).to_contain_text("the console is for staff")
    assert await page.evaluate("sessionStorage.length") == 0
    await page.get_by_label("API key").fill(key)
    await page.get_by_label("API key").press("Enter")  # as a pasted key is sent
    await expect(page.locator("#who")).to_contain_text("gracia-tablet")
    await expect(page.locator("#queue-items li[data-id='1']")).to_be_visible()


async def test_a_manager_sees_her_districts_queue_and_not_anothers(
    page: Page, console: Console
) -> None:
    await sign_in(page, console, "maria")
    await expect(page.get_by_role("heading", name="Queue: Gràcia")).to_be_visible()
    item = page.locator("#queue-items li[data-id='1']")
    await expect(item).to_contain_text("El fanal del carrer de Verdi")
    await expect(item).to_contain_text("Street lighting")  # the service's name, from the API
    await expect(item.locator(".desc")).to_have_attribute("lang", "ca")  # the citizen's words
    await expect(item.locator("time").first).to_have_attribute("datetime", re.compile(r"^20\d\d-"))
    assert await page.locator("#queue-items li[data-id='2']").count() == 0
    options = await page.get_by_label("Queue", exact=True).locator("option").all_inner_texts()
    assert options == ["Gràcia"]
    # Horta is not hers: the API says so, and the console shows it
    await page.goto(f"{console.url}/console/#/queue/07")
    await expect(page.locator("#queue-error")).to_contain_text("queue '07' is not yours")
    assert await page.locator("#queue-items li[data-id='2']").count() == 0
    await page.goto(f"{console.url}/console/#/request/2")
    await expect(page.get_by_role("alert")).to_contain_text("is in queue '07'")


async def test_city_hall_sees_every_queue_and_the_escalated_ones(
    page: Page, console: Console
) -> None:
    await new_user(console.sessions, "ana", Role.CITY_HALL)
    async with console.sessions.begin() as session:
        await session.execute(
            update(ServiceRequest).where(ServiceRequest.id == 2).values(escalated_at=func.now())
        )
    await sign_in(page, console, "ana")
    await expect(page.locator("#who")).to_contain_text("city hall")
    options = await page.get_by_label("Queue", exact=True).locator("option").all_inner_texts()
    assert options[0] == "Ciutat Vella" and "City hall (escalated)" in options
    assert "City-wide: city-mobility" in options
    await page.get_by_label("Language").select_option("ca")  # the console's names change too
    await expect(page.get_by_role("heading", name="Cua: Ciutat Vella")).to_be_visible()
    options = await page.get_by_label("Cua", exact=True).locator("option").all_inner_texts()
    assert "Ajuntament (escalades)" in options and "Tota la ciutat: city-mobility" in options
    assert "Triatge (sense districte)" in options
    await page.get_by_label("Idioma").select_option("en")
    await page.get_by_label("Queue", exact=True).select_option("city-hall")
    await page.get_by_role("button", name="Apply filters").click()
    item = page.locator("#queue-items li[data-id='2']")
    await expect(item.locator(".flag.escalated")).to_have_text("Escalated")
    await expect(page.locator("#queue-items > li")).to_have_count(1)


async def test_filters_and_load_more(page: Page, console: Console) -> None:
    for n in range(3, 56):  # 53 more in Gràcia, each a street of its own (no duplicates)
        await open_request(console.sessions, f"p{n}", latlon=(41.395 + n * 0.001, 2.15))
    await sign_in(page, console, "maria")
    items = page.locator("#queue-items > li")
    await expect(items).to_have_count(50)
    await page.get_by_role("button", name="Load more").click()
    await expect(items).to_have_count(54)
    # reading goes on from the first request loaded, not the list's last one
    await expect(page.locator("#queue-items > li:nth-child(51) > a")).to_be_focused()
    await expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    await page.get_by_label("Overdue").select_option("true")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page.locator("#queue-items .empty")).to_contain_text("No request matches")
    assert "overdue=true" in page.url


async def test_acknowledge_assign_and_resolve_through_the_console(
    page: Page, console: Console
) -> None:
    await sign_in(page, console, "maria")
    await page.locator("#queue-items li[data-id='1'] a").click()
    await expect(page.get_by_role("heading", name="#1 Street lighting")).to_be_visible()
    await expect(page.locator(".post.citizen")).to_contain_text("El fanal del carrer de Verdi")
    await expect(page.get_by_text("41.40360, 2.15660")).to_be_visible()

    await page.locator("form[data-action='acknowledge'] button").click()
    await expect(page.locator("form[data-action='acknowledge']")).to_have_count(0)
    assert (await console.request("1"))["status"] == "acknowledged"

    assign = page.locator("form[data-action='assign']")
    await assign.get_by_label("Worker").fill("jordi")
    await assign.get_by_role("button").click()
    await expect(page.locator("form[data-action='start']")).to_be_visible()
    assert (await console.request("1"))["assigned_worker"] == "@jordi"

    resolve = page.locator("form[data-action='resolve']")
    await resolve.get_by_label("Note").fill("Fanal canviat")
    await resolve.get_by_label("Photo").fill("https://photos.example.org/fanal.jpg")
    await resolve.get_by_role("button").click()
    await expect(page.locator("form[data-action='reopen']")).to_be_visible()
    done = await console.request("1")
    assert (done["status"], done["resolution_photo_url"]) == (
        "resolved",
        "https://photos.example.org/fanal.jpg",
    )
    history = page.locator(".history > li")
    await expect(history).to_have_count(4)
    await expect(history.nth(3)).to_contain_text("resolve by user:maria")


async def test_a_request_changed_meanwhile_is_a_412_showing_it_as_it_is_now(
    page: Page, console: Console
) -> None:
    await sign_in(page, console, "maria")
    await page.goto(f"{console.url}/console/#/request/1")
    assign = page.locator("form[data-action='assign']")
    await assign.get_by_label("Worker").fill("@jordi")
    # someone else acts on it while maria reads
    changed = await console.api.post("/api/v1/requests/1/actions/acknowledge")
    assert changed.status_code == 200
    await assign.get_by_role("button").click()
    await expect(page.locator("#conflict")).to_contain_text("Someone else changed this request")
    await expect(page.locator("#conflict")).to_contain_text("version 2")
    await expect(page.locator("#request-title")).to_be_focused()  # the page anew, its alert said
    await expect(page.locator(".request .tags .status")).to_have_text("acknowledged")
    assert (await console.request("1"))["assigned_worker"] is None  # nothing undone or done


async def test_a_refused_action_shows_the_problems_detail_by_its_form(
    page: Page, console: Console
) -> None:
    await sign_in(page, console, "maria")
    await page.goto(f"{console.url}/console/#/request/1")
    transfer = page.locator("form[data-action='transfer']")
    await transfer.get_by_label("To district").select_option("05")
    await transfer.get_by_role("button").click()  # without a reason
    await expect(transfer.locator("[role=alert]")).to_contain_text("reason")
    await expect(transfer.locator("[role=alert]")).to_contain_text("(422)")
    # the field and the button say why too, for a screen reader coming back to them
    await expect(transfer.get_by_label("Note")).to_have_accessible_description(
        re.compile("reason.*422")
    )
    await expect(transfer.get_by_role("button")).to_have_accessible_description(
        re.compile("reason")
    )
    note = page.locator("#note-form")
    await note.get_by_label("Add a note").fill("Cal una grua")
    await note.get_by_role("button").click()
    await expect(page.locator(".post.note")).to_contain_text("Cal una grua")
    await expect(page.get_by_role("heading", name="Notes")).to_be_focused()  # where it was added


async def test_the_queue_refreshes_itself_keeping_the_users_place(
    page: Page, console: Console
) -> None:
    await page.clock.install()
    await sign_in(page, console, "maria")
    link = page.locator("#queue-items li[data-id='1'] a")
    await link.focus()
    await open_request(console.sessions, "later", latlon=(41.41, 2.16))  # request 3
    await page.clock.run_for(31_000)  # the 30 s refresh
    await expect(page.locator("#queue-items li[data-id='3']")).to_be_visible()
    await expect(link).to_be_focused()
    await page.get_by_role("button", name="Refresh").click()
    await expect(page.locator("#queue-items > li")).to_have_count(2)


async def test_a_request_routed_while_the_queue_is_open_shows_up_live(
    page: Page, console: Console
) -> None:
    """The manager API's event stream, read with the token in a header: a new request and
    another manager's change show within seconds, without a reload, the focus and the request
    under it kept in place, the arrival said politely."""
    for n in range(3, 12):  # enough requests to scroll
        await open_request(console.sessions, f"p{n}", latlon=(41.395 + n * 0.001, 2.15))
    streams: list[dict[str, str]] = []
    page.on(
        "request",
        lambda r: streams.append(r.headers) if r.url.endswith("/queue/events") else None,
    )
    await sign_in(page, console, "maria")
    await live(page)
    assert streams and streams[0]["authorization"].startswith("Bearer ")  # not in the URL
    link = page.locator("#queue-items li[data-id='6'] a")
    await link.focus()
    await link.evaluate("a => a.scrollIntoView({block: 'center'})")
    top = await link.evaluate("a => a.getBoundingClientRect().top")
    await open_request(console.sessions, "later", latlon=(41.42, 2.16))  # request 12
    arrived = page.locator("#queue-items li[data-id='12']")
    await expect(arrived).to_be_visible(timeout=LIVE)
    await expect(arrived.locator(".flag.arrived")).to_have_text("Just in")
    await expect(page.locator("#announce")).to_contain_text("new request in the queue: #12")
    await expect(link).to_be_focused()
    assert await link.evaluate("a => a.getBoundingClientRect().top") == top

    # another manager acknowledges request 6, the one she is on
    assert (await console.api.post("/api/v1/requests/6/actions/acknowledge")).status_code == 200
    item = page.locator("#queue-items li[data-id='6']")
    await expect(item.locator(".status")).to_have_text("acknowledged", timeout=LIVE)
    await expect(link).to_be_focused()
    assert await link.evaluate("a => a.getBoundingClientRect().top") == top


async def test_a_request_coming_up_from_the_next_page_is_no_arrival(
    page: Page, console: Console
) -> None:
    for n in range(3, 53):  # 51 in Gràcia: one beyond the first page
        await open_request(console.sessions, f"p{n}", latlon=(41.395 + n * 0.001, 2.15))
    await sign_in(page, console, "maria")
    await live(page)
    items = page.locator("#queue-items > li")
    await expect(items).to_have_count(50)
    last = await items.nth(49).get_attribute("data-id")
    below = await console.api.get(
        "/api/v1/districts/06/queue", params={"limit": 51}
    )  # the one on the next page
    coming = below.json()["items"][50]["service_request_id"]
    moved = await console.api.post(
        f"/api/v1/requests/{await items.nth(0).get_attribute('data-id')}/actions/transfer",
        json={"district_code": "05", "note": "És de l'Eixample"},
    )
    assert moved.status_code == 200, moved.text
    await expect(page.locator(f"#queue-items li[data-id='{coming}']")).to_be_visible(timeout=LIVE)
    assert last != coming
    await expect(page.locator("#queue-items .flag.arrived")).to_have_count(0)
    # a new urgent one, due first (request 53): an arrival
    await open_request(console.sessions, "later", latlon=(41.45, 2.16), urgent=True)
    await expect(page.locator("#queue-items li[data-id='53'] .flag.arrived")).to_be_visible(
        timeout=LIVE
    )


async def test_a_request_changed_by_another_while_open_says_so_without_redrawing(
    page: Page, console: Console
) -> None:
    """On a request's page, another's change is said (a notice and the polite status) within
    seconds, while the form she is filling in stays as it is; her own actions say nothing."""
    await sign_in(page, console, "maria")
    await page.goto(f"{console.url}/console/#/request/1")
    await expect(page.locator("#request-title")).to_be_focused()
    await page.locator("form[data-action='acknowledge'] button").click()
    await expect(page.locator(".request .tags .status")).to_have_text("acknowledged")
    worker = page.locator("form[data-action='assign']").get_by_label("Worker")
    await worker.fill("@jor")  # half typed when city hall acts
    await page.wait_for_timeout(2_500)  # her own change came by the stream too: no notice
    await expect(page.locator("#changed")).to_be_hidden()
    assign = await console.api.post("/api/v1/requests/1/actions/assign", json={"worker": "@pere"})
    assert assign.status_code == 200, assign.text
    changed = page.locator("#changed")
    await expect(changed).to_contain_text("changed this request while you were reading it")
    await expect(changed).to_be_visible(timeout=LIVE)
    await expect(page.locator("#announce")).to_contain_text("changed this request")
    await expect(worker).to_be_focused()
    await expect(worker).to_have_value("@jor")
    await changed.get_by_role("button", name="Show it as it is now").click()
    await expect(page.locator(".request .tags .status")).to_have_text("assigned")
    await expect(page.locator("#changed")).to_be_hidden()


async def test_the_live_updates_fall_back_to_polling_and_reconnect(
    page: Page, console: Console
) -> None:
    await page.route("**/queue/events", lambda route: route.abort())
    await sign_in(page, console, "maria")
    await expect(page.locator("#queue-meta")).to_contain_text("refreshes every 30 s")
    await page.unroute("**/queue/events")  # the stream is back: tried again within seconds
    await live(page)
    await open_request(console.sessions, "later", latlon=(41.41, 2.16))  # request 3
    await expect(page.locator("#queue-items li[data-id='3']")).to_be_visible(timeout=LIVE)
    # a hidden tab holds no stream open; back in view, it goes live again
    hide = """hidden => {
        Object.defineProperty(document, 'hidden', {value: hidden, configurable: true});
        document.dispatchEvent(new Event('visibilitychange'));
    }"""
    await page.evaluate(hide, True)
    await expect(page.locator("#queue-meta")).to_contain_text("refreshes every 30 s")
    await page.evaluate(hide, False)
    await live(page)


async def test_a_key_revoked_while_the_stream_is_open_signs_out_cleanly(
    page: Page, console: Console
) -> None:
    key = await new_key(console.sessions, Role.MANAGER, scopes=["06"], name="gracia-tablet")
    await page.goto(f"{console.url}/console/")
    await page.get_by_text("Use an API key instead").click()
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in with the key").click()
    await live(page)
    admin = await new_key(console.sessions, Role.ADMIN)
    headers = {"Authorization": f"Bearer {admin}"}
    keys = (await console.api.get("/api/v1/admin/keys", headers=headers)).json()
    (tablet,) = [k["id"] for k in keys if k["name"] == "gracia-tablet"]
    revoked = await console.api.delete(f"/api/v1/admin/keys/{tablet}", headers=headers)
    assert revoked.status_code == 204, revoked.text
    message = page.locator("#sign-in-message")
    await expect(message).to_contain_text("Your session has ended", timeout=LIVE)
    await expect(message).to_contain_text("revoked")
    assert await page.evaluate("sessionStorage.length") == 0
    await expect(page.locator("#session")).to_be_hidden()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_focused()


async def test_bulk_actions_on_the_selected_requests_say_what_each_one_got(
    page: Page, console: Console
) -> None:
    await open_request(console.sessions, "p3", latlon=(41.41, 2.16))  # request 3, in Gràcia
    assert (await console.api.post("/api/v1/requests/3/actions/acknowledge")).status_code == 200
    await sign_in(page, console, "maria")
    await page.get_by_label("Select request #1").check()
    await page.get_by_label("Select request #3").check()
    await expect(page.locator("#bulk-count")).to_have_text("2 selected")
    await page.get_by_role("button", name="Acknowledge selected").click()
    result = page.locator("#bulk-result")
    await expect(result).to_contain_text("1 done, 1 refused.")
    # the button was disabled while the call ran: the focus comes back to it, not the page's top
    await expect(page.get_by_role("button", name="Acknowledge selected")).to_be_focused()
    await expect(result).to_contain_text("#3: cannot acknowledge a request that is acknowledged")
    assert (await console.request("1"))["status"] == "acknowledged"
    await expect(page.locator("#bulk-count")).to_have_text("None selected")
    await page.get_by_label("Select request #1").check()
    await page.locator("#bulk").get_by_label("Worker").fill("jordi")
    await page.get_by_role("button", name="Assign selected").click()
    await expect(result).to_contain_text("1 done, 0 refused.")
    assert (await console.request("1"))["assigned_worker"] == "@jordi"


async def test_a_failed_reply_of_her_district_is_retried_from_the_console(
    page: Page, console: Console
) -> None:
    async with console.sessions.begin() as session:
        for rid in (1, 2):  # Gràcia's and Horta's
            session.add(
                ReplyDelivery(
                    reply_id=f"r{rid}",
                    service_request_id=rid,
                    kind="acknowledged",
                    language="ca",
                    platform="mastodon",
                    in_reply_to_post_id=f"p{rid}",
                    author_handle="@marta@bcn.social",
                    body=f"Rebut! Petició #{rid}",
                    correlation_id="c",
                    state="failed",
                    attempts=5,
                    next_attempt_at=datetime.now(UTC),
                    last_error="<b>503</b> from the instance",
                )
            )
    await sign_in(page, console, "maria")
    await page.get_by_role("link", name="Replies").click()
    items = page.locator("#delivery-items > li")
    await expect(items).to_have_count(1)  # Horta's is not hers
    await expect(items.first).to_contain_text("Last error: <b>503</b> from the instance")
    await items.first.get_by_role("button", name="Retry").click()
    await expect(items.first.locator(".status")).to_have_text("pending")
    await expect(items.first.locator("h2")).to_be_focused()  # its button is gone
    async with console.sessions() as session:
        assert (await session.get(ReplyDelivery, "r1")).state == "pending"  # type: ignore[union-attr]
        assert (await session.get(ReplyDelivery, "r2")).state == "failed"  # type: ignore[union-attr]


async def test_a_wrong_merge_is_split_from_the_request_page(page: Page, console: Console) -> None:
    await open_request(console.sessions, "neighbour", text="El fanal de Verdi fa pampallugues")
    assert (await console.request("1"))["reporters_count"] == 2  # merged into request 1
    await sign_in(page, console, "maria")
    await page.goto(f"{console.url}/console/#/request/1")
    posts = page.locator(".post.citizen")
    await expect(posts).to_have_count(2)
    await posts.nth(1).get_by_role("button", name="Split into its own request").click()
    await expect(page.locator("#request-title")).to_have_text("#3 Street lighting")
    await expect(page.locator(".post.citizen")).to_contain_text("fa pampallugues")
    assert (await console.request("1"))["reporters_count"] == 1


async def test_a_citizens_html_is_shown_as_text_and_runs_nothing(
    page: Page, console: Console
) -> None:
    await open_request(console.sessions, "evil", text=XSS, latlon=(41.41, 2.16))
    photo = f"{console.url}/console/photo.jpg"  # this origin: the test reaches no other host
    async with console.sessions.begin() as session:
        await session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == 3)
            .values(media_urls=["javascript:window.__pwned=3", photo])
        )
    await sign_in(page, console, "maria")
    item = page.locator("#queue-items li[data-id='3']")
    await expect(item.locator(".desc")).to_have_text(XSS)
    await page.locator("#queue-items li[data-id='3'] a").click()
    await expect(page.locator(".post.citizen .text")).to_have_text(XSS)
    assert await page.locator("main img, main script").count() == 0
    photos = page.locator(".photos a")
    await expect(photos).to_have_count(1)  # javascript: is no link, and no image is made of it
    await expect(page.locator(".photos li").first).to_contain_text("is not a web address")
    assert await photos.get_attribute("href") == photo
    assert await page.get_by_role("button", name="Show photo 1").count() == 0
    await page.get_by_role("button", name="Show photo 2").click()
    await expect(page.locator(".photo img")).to_have_attribute("src", photo)
    await expect(photos).to_be_focused()  # the button is gone: its photo's link, not the top
    await expect(page.locator(".photo img")).to_have_attribute("referrerpolicy", "no-referrer")
    assert await page.evaluate("window.__pwned") is None


async def test_a_worker_sees_their_assignments_and_only_a_workers_actions(
    page: Page, console: Console
) -> None:
    """Her assignments live, as a manager's queue (they polled every 30 s): a request assigned
    to her while she looks shows up at once; polling while the stream is down."""
    for action, body in (("acknowledge", None), ("assign", {"worker": "@jordi"})):
        done = await console.api.post(f"/api/v1/requests/1/actions/{action}", json=body)
        assert done.status_code == 200, done.text
    streams: list[dict[str, str]] = []
    page.on(
        "request",
        lambda r: streams.append(r.headers) if r.url.endswith("/assignments/events") else None,
    )
    await page.route("**/assignments/events", lambda route: route.abort())
    await sign_in(page, console, "jordi")
    await expect(page.get_by_role("heading", name="Your assignments")).to_be_visible()
    await expect(page.get_by_role("link", name="Replies")).to_be_hidden()  # not a worker's
    await expect(page.get_by_role("link", name="Map")).to_be_hidden()  # nor a queue's map
    await expect(page.locator("#queue-items > li")).to_have_count(1)
    await expect(page.locator("#queue-meta")).to_contain_text("refreshes every 30 s")
    await page.unroute("**/assignments/events")  # the stream is back: tried again within seconds
    await live(page)
    assert streams and streams[-1]["authorization"].startswith("Bearer ")  # not in the URL
    for action, body in (("acknowledge", None), ("assign", {"worker": "@jordi"})):
        done = await console.api.post(f"/api/v1/requests/2/actions/{action}", json=body)
        assert done.status_code == 200, done.text
    arrived = page.locator("#queue-items li[data-id='2']")
    await expect(arrived.locator(".flag.arrived")).to_have_text("Just in", timeout=LIVE)
    await expect(page.locator("#announce")).to_contain_text("new request in the queue: #2")
    await page.locator("#queue-items li[data-id='1'] a").click()
    await expect(page.locator("form[data-action='start']")).to_be_visible()
    actions = await page.locator("form[data-action]").evaluate_all(
        "forms => forms.map(f => f.dataset.action)"
    )
    assert sorted(actions) == ["resolve", "start"]  # not transfer, close, assign...
    await page.locator("form[data-action='start'] button").click()
    await expect(page.locator(".request .tags .status")).to_have_text("in progress")


async def test_the_queue_on_a_map_places_its_requests_and_lists_the_rest(
    page: Page, console: Console
) -> None:
    """A manager's queue on Gràcia's own outlines: requests with a point as markers, overdue and
    urgent told by shape as well as colour, two on one corner both reachable; those placed by an
    address alone, or by neither, listed beside it with their counts; the queue's filters kept;
    each marker a link from the keyboard, named by service, place and age."""
    corner = (41.40365, 2.15705)  # by request 1, on Verdi street
    # other services than request 1's, or they would be its duplicates
    await open_request(
        console.sessions, "corner", latlon=corner, urgent=True, service_code="graffiti"
    )  # request 3
    await open_request(console.sessions, "address", latlon=None, service_code="cleaning")  # 4
    await open_request(console.sessions, "nowhere", latlon=None, service_code="noise")  # 5
    async with console.sessions.begin() as session:
        await session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == 4)
            .values(address="Carrer de Verdi 20")
        )
        await session.execute(  # request 1 is overdue
            update(ServiceRequest)
            .where(ServiceRequest.id == 1)
            .values(expected_datetime=datetime(2026, 1, 1, tzinfo=UTC))
        )
    await sign_in(page, console, "maria")
    await page.get_by_role("link", name="Map").click()
    await expect(page.locator("#map-title")).to_have_text("Map: Gràcia")
    markers = page.locator("#map a.marker")
    await expect(markers).to_have_count(2)
    assert await page.locator("#map path.area.barri").count() == 5  # Gràcia's barris
    overdue = page.locator("#map a.marker[data-id='1']")
    urgent = page.locator("#map a.marker[data-id='3']")
    await expect(overdue).to_have_class(re.compile(r"\boverdue\b"))
    await expect(overdue).to_have_attribute(
        "aria-label",
        re.compile(r"^#1 Street lighting, la Vila de Gràcia, Gràcia, reported .+ ago, Overdue"),
    )
    await expect(urgent).to_have_attribute(
        "aria-label", re.compile(r"^#3 Graffiti and vandalism, .*, urgent, new$")
    )
    shapes = [await m.locator("path").get_attribute("d") for m in (overdue, urgent)]
    assert shapes[0] != shapes[1]  # a diamond and a triangle: not told by colour alone
    # 10 m apart, drawn side by side: each 24 px or more, and each clicked where it is drawn
    for marker in (overdue, urgent):
        box = await marker.bounding_box()
        assert box and min(box["width"], box["height"]) >= 24, box
        hit = await marker.evaluate(
            """a => { a.scrollIntoView({block: 'center'}); const r = a.getBoundingClientRect();
                return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2)
                    .closest('a.marker') === a; }"""
        )
        assert hit, await marker.get_attribute("data-id")
    await expect(page.locator("#by-address h2")).to_have_text("At an address, without a point (1)")
    await expect(page.locator("#by-address li[data-id='4']")).to_contain_text("Carrer de Verdi 20")
    await expect(page.locator("#no-place h2")).to_have_text("No point or address (1)")
    await expect(page.locator("#no-place li[data-id='5']")).to_contain_text("la Vila de Gràcia")
    # live, as the list is: a request just in is a marker, said politely, the focus kept
    await expect(page.locator("#map-meta")).to_contain_text("live", timeout=LIVE)
    await urgent.focus()
    await open_request(console.sessions, "later", latlon=(41.41, 2.16), service_code="pavement")
    await expect(page.locator("#map a.marker[data-id='6']")).to_be_visible(timeout=LIVE)
    await expect(page.locator("#announce")).to_contain_text("new request in the queue: #6")
    await expect(urgent).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#request-title")).to_have_text("#3 Graffiti and vandalism")
    await page.get_by_role("link", name="Back to the queue").click()  # to the map it came from
    await expect(markers).to_have_count(3)
    await page.goto(f"{console.url}/console/#/map/06?overdue=true")  # the queue's filters
    await expect(markers).to_have_count(1)
    await expect(page.locator("#by-address h2")).to_have_text("At an address, without a point (0)")
    await page.get_by_role("link", name="List").click()
    await expect(page).to_have_url(re.compile(r"#/queue/06\?overdue=true$"))
    await expect(page.locator("#queue-items > li")).to_have_count(1)


async def test_packaged_barcelonas_map_draws_the_outlines_packaged_with_it(
    browser: Browser, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A deployment of packaged Barcelona (no PLAZA_CITY_DATA_DIR): Gràcia's map draws its
    outline and its five barris' from the packaged outlines, the request on Verdi street inside
    them, and no "the city has no outlines" note."""
    await new_user(sessions, "maria", Role.MANAGER, scopes=["06"])
    await open_request(sessions, "p1")  # on Verdi street, in la Vila de Gràcia
    app = create_app(
        sessions, httpx.AsyncClient(base_url="http://ingest.invalid"), City.barcelona()
    )
    async with Server(app) as server, httpx.AsyncClient(base_url=server.url) as api:
        console = Console(server.url, sessions, api)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        await in_english(context)
        page = await context.new_page()
        watch(page, console)
        await sign_in(page, console, "maria")
        await page.goto(f"{console.url}/console/#/map/06")
        await expect(page.locator("#map-title")).to_have_text("Map: Gràcia")
        await expect(page.locator("#map a.marker")).to_have_count(1)
        assert await page.locator("#map path.area.district").count() == 1
        assert await page.locator("#map path.area.barri").count() == 5
        await expect(page.locator("#map-frame")).not_to_contain_text("has no outlines")
        # the marker is drawn inside Gràcia's outline, as the SVG itself says
        inside = await page.locator("#map a.marker").evaluate(
            """a => { const r = a.getBoundingClientRect(); const svg = a.ownerSVGElement;
                const point = new DOMPoint(r.x + r.width / 2, r.y + r.height / 2)
                    .matrixTransform(svg.getScreenCTM().inverse());
                return svg.querySelector('path.area.district').isPointInFill(point); }"""
        )
        assert inside is True
        await context.close()
    assert console.errors == [], console.errors


async def test_the_map_polls_while_its_stream_is_down_and_goes_live_when_it_is_back(
    page: Page, console: Console
) -> None:
    """The map had no polling ("Refresh" stood in): with its queue's stream refused, a request
    just in is a marker within the list's 30 s, said politely; the stream, back, is tried again
    and the map is live."""
    await page.clock.install()
    refused: list[str] = []

    async def refuse(route: Route) -> None:
        refused.append(route.request.url)
        await route.abort()

    await page.route("**/queue/events", refuse)
    await sign_in(page, console, "maria")
    await page.get_by_role("link", name="Map").click()
    markers = page.locator("#map a.marker")
    await expect(markers).to_have_count(1)  # request 1
    await expect(page.locator("#map-meta")).to_contain_text("refreshes every 30 s")
    assert refused  # the map asked for its stream, and was refused
    await open_request(console.sessions, "later", latlon=(41.41, 2.16))  # request 3
    await page.clock.run_for(31_000)  # the 30 s refresh
    await expect(page.locator("#map a.marker[data-id='3']")).to_be_visible()
    await expect(page.locator("#announce")).to_contain_text("new request in the queue: #3")
    await expect(page.locator("#map-meta")).to_contain_text("refreshes every 30 s")

    await page.unroute("**/queue/events")  # the stream is back: tried again after its backoff
    await page.clock.run_for(31_000)
    await expect(page.locator("#map-meta")).to_contain_text("live", timeout=LIVE)
    await open_request(console.sessions, "live", latlon=(41.405, 2.155), service_code="noise")
    await expect(page.locator("#map a.marker[data-id='4']")).to_be_visible(timeout=LIVE)
    await expect(markers).to_have_count(3)


async def test_the_console_is_served_with_a_strict_csp(page: Page, console: Console) -> None:
    answer = await page.goto(f"{console.url}/console/")
    assert answer is not None
    headers = answer.headers
    csp = headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    # an inline script is refused by the browser itself
    blocked = await page.evaluate(
        """() => new Promise(done => {
            document.addEventListener('securitypolicyviolation', e => done(e.violatedDirective));
            const s = document.createElement('script'); s.textContent = 'window.__inline = 1';
            document.body.append(s);
            setTimeout(() => done(window.__inline ? 'ran' : 'silent'), 500);
        })"""
    )
    assert blocked.startswith("script-src")
    console.errors.clear()  # the violation just provoked is logged as an error


async def test_the_console_works_from_the_keyboard(page: Page, console: Console) -> None:
    await page.goto(f"{console.url}/console/")
    await expect(page.get_by_label("Username")).to_be_focused()  # the form takes the focus
    await page.keyboard.type("maria")
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Password", exact=True)).to_be_focused()
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.locator("#who")).to_contain_text("maria")
    # the sign-in form is gone: the focus goes on from the queue's title, not the page's top
    await expect(page.locator("#queue-title")).to_be_focused()
    await page.get_by_role("link", name="Skip to content").focus()
    await page.keyboard.press("Enter")  # moves the focus, and leaves the queue as it is
    await expect(page.locator("#main")).to_be_focused()
    await expect(page.locator("#queue-title")).to_have_text("Queue: Gràcia")
    await expect(page.locator("#queue-error")).to_be_empty()
    link = page.locator("#queue-items li[data-id='1'] a")
    await link.focus()
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Tab")  # a focus the keyboard moved is drawn
    outline = await link.evaluate("a => getComputedStyle(a).outlineStyle")
    assert outline == "solid"
    # and seen: 3:1 against the page's white and the top bar's ink (WCAG 1.4.11)
    colour = await link.evaluate("a => getComputedStyle(a).outlineColor")
    for background in ((255, 255, 255), (0x1B, 0x1F, 0x24)):
        assert contrast(colour, background) >= 3, (colour, background)
    await page.keyboard.press("Enter")
    await expect(page.locator("#request-title")).to_be_focused()
    for form in ("acknowledge", "assign"):
        await expect(page.locator(f"form[data-action='{form}'] button")).to_be_enabled()
    await page.locator("form[data-action='acknowledge'] button").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(".request .tags .status")).to_have_text("acknowledged")
    # the focus stays by the actions, the next one (assign) a Tab away, not at the page's top
    await expect(page.get_by_role("heading", name="Actions")).to_be_focused()
    await expect(page.locator("#announce")).to_contain_text("acknowledged")
    await page.keyboard.press("Tab")
    await expect(page.locator("form[data-action='assign']").get_by_label("Worker")).to_be_focused()


async def test_the_console_fits_a_phones_width(browser: Browser, console: Console) -> None:
    """At 390 px (a common phone) and 320 px (a small one, WCAG's reflow width, 568 px high):
    no sideways scroll, the first request and what it is about on the first screen (at 320 px the
    top bar and the bulk form pushed it to 538 px, below a small phone's fold), and what a worker
    taps at least 24 px high."""
    for width, height in ((390, 844), (320, 568)):
        context = await browser.new_context(
            viewport={"width": width, "height": height}, is_mobile=True, has_touch=True
        )
        await in_english(context)
        page = await context.new_page()
        watch(page, console)
        try:
            await sign_in(page, console, "maria")
            item = page.locator("#queue-items li[data-id='1']")
            await expect(item).to_be_visible()
            scroll_width = "document.documentElement.scrollWidth"
            assert await page.evaluate(scroll_width) <= width
            await expect(item.locator(".desc")).to_be_in_viewport(ratio=1)
            for target in (
                item.locator("a"),
                item.locator(".pick"),
                page.get_by_role("link", name="Queue"),
                page.get_by_role("link", name="Replies"),
            ):
                box = await target.bounding_box()
                assert box and box["height"] >= 24, (width, target, box)
            filters = page.locator(".filter-box")  # folded: the queue comes first on a phone
            assert await filters.evaluate("details => details.open") is False
            bulk = page.locator(".bulk-box")  # so is acting on several: its count says
            assert await bulk.evaluate("details => details.open") is False
            await item.get_by_label("Select request #1").check()
            await expect(bulk.locator("summary")).to_contain_text("1 selected")
            await filters.locator("summary").click()
            await expect(page.get_by_label("Overdue")).to_be_visible()
            assert await page.evaluate(scroll_width) <= width
            await item.locator("a").click()
            await expect(page.locator("form[data-action='assign']")).to_be_visible()
            assert await page.evaluate(scroll_width) <= width
            public = page.get_by_label("Public (Open311 shows it; internal otherwise)")
            box = await public.bounding_box()  # not squeezed by its long label
            assert box and box["width"] >= 18, (width, box)
        finally:
            await context.close()
    assert console.errors == [], console.errors


async def test_the_console_speaks_catalan_for_barcelona_and_remembers_a_switch(
    browser: Browser, console: Console
) -> None:
    """The city's language first, over the browser's (an English browser here); the switcher's
    choice over both, after a reload too."""
    context = await browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    watch(page, console)
    try:
        await page.goto(f"{console.url}/console/")
        await expect(page.get_by_role("heading", name="Inicia la sessió")).to_be_visible()
        await expect(page).to_have_title("Inicia la sessió · Plaza")  # the tab's name too
        assert await page.evaluate("document.documentElement.lang") == "ca"
        await expect(page.get_by_role("link", name="Vés al contingut")).to_be_attached()
        switcher = page.get_by_label("Idioma")
        await expect(switcher).to_have_value("ca")
        # readable in the dark top bar: its text is not the bar's white on a white field
        colours = await switcher.evaluate(
            "s => [getComputedStyle(s).color, getComputedStyle(s).backgroundColor]"
        )
        assert colours[0] != colours[1], colours

        await switcher.select_option("es")
        await expect(page.get_by_role("heading", name="Iniciar sesión")).to_be_visible()
        await expect(page.get_by_label("Idioma")).to_be_focused()  # not the username's field
        await page.reload()
        await expect(page.get_by_role("heading", name="Iniciar sesión")).to_be_visible()
        await expect(page.get_by_label("Idioma")).to_have_value("es")
        assert await page.evaluate("document.documentElement.lang") == "es"

        # signed in, a switch redraws the page she is on, service names included
        await page.get_by_label("Usuario").fill("maria")
        await page.get_by_label("Contraseña", exact=True).fill(PASSWORD)
        await page.get_by_role("button", name="Iniciar sesión", exact=True).click()
        await expect(page.locator("#who")).to_contain_text("gerente de Gràcia")
        await expect(page.locator("#queue-items li[data-id='1']")).to_contain_text(
            "Alumbrado público"
        )
        await page.get_by_label("Idioma").select_option("en")
        await expect(page.get_by_role("heading", name="Queue: Gràcia")).to_be_visible()
        await expect(page.locator("#queue-items li[data-id='1']")).to_contain_text(
            "Street lighting"
        )
        await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        await page.reload()
        await expect(page.get_by_role("heading", name="Queue: Gràcia")).to_be_visible()

        # from the keyboard, on a request's page (which takes the focus when drawn): each arrow
        # key is a language, and the focus stays on the switcher to go on to the next one
        await page.locator("#queue-items li[data-id='1'] a").click()
        await expect(page.locator("#request-title")).to_be_focused()
        await page.get_by_label("Language").focus()
        await page.keyboard.press("ArrowUp")
        await expect(page.get_by_role("heading", name="#1 Alumbrado público")).to_be_visible()
        await expect(page.get_by_label("Idioma")).to_be_focused()
        await page.keyboard.press("ArrowUp")
        await expect(page.get_by_role("heading", name="#1 Enllumenat públic")).to_be_visible()
        await expect(page.get_by_label("Idioma")).to_be_focused()
    finally:
        await context.close()
    assert console.errors == [], console.errors


async def test_a_catalan_manager_acknowledges_assigns_and_resolves(
    browser: Browser, console: Console
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    watch(page, console)
    try:
        await page.goto(f"{console.url}/console/")
        await page.get_by_label("Nom d'usuari").fill("maria")
        await page.get_by_label("Contrasenya", exact=True).fill(PASSWORD)
        await page.get_by_role("button", name="Inicia la sessió", exact=True).click()
        await expect(page.locator("#who")).to_contain_text("gerent de Gràcia")
        await expect(page.get_by_role("heading", name="Cua: Gràcia")).to_be_visible()
        item = page.locator("#queue-items li[data-id='1']")
        await expect(item).to_contain_text("Enllumenat públic")  # Open311's Catalan name
        await expect(item.locator(".status")).to_have_text("nova")
        await expect(page.locator("#queue-meta")).to_contain_text("1 sol·licitud")
        await item.locator("a").click()
        await expect(page.get_by_role("heading", name="#1 Enllumenat públic")).to_be_visible()
        await expect(page.get_by_role("heading", name="Accions")).to_be_visible()
        await expect(page.locator(".facts").last).to_contain_text("Català (ca)")  # the post's
        # its words are marked as Catalan for a screen reader in any console language (3.1.2)
        await expect(page.locator(".post.citizen .text")).to_have_attribute("lang", "ca")

        await page.get_by_role("button", name="Confirma", exact=True).click()
        await expect(page.locator(".request .tags .status")).to_have_text("confirmada")
        assign = page.locator("form[data-action='assign']")
        await assign.get_by_label("Identificador públic del treballador").fill("jordi")
        await assign.get_by_role("button", name="Assigna un treballador").click()
        await expect(page.locator(".request .tags .status")).to_have_text("assignada")
        resolve = page.locator("form[data-action='resolve']")
        await resolve.get_by_label("Nota").fill("Fanal canviat")
        await resolve.get_by_role("button", name="Resol").click()
        await expect(page.locator(".request .tags .status")).to_have_text("resolta")
        assert (await console.request("1"))["status"] == "resolved"
        history = page.locator(".history > li")
        await expect(history).to_have_count(4)
        await expect(history.nth(0)).to_contain_text("creada per router")
        await expect(history.nth(3)).to_contain_text("Resol per user:maria")
        # dates in Catalan, on the city's clock
        reported = page.locator("dd time").first
        await expect(reported).to_have_text(re.compile(r"^(dl|dt|dc|dj|dv|ds|dg)\.?,? \d+ de "))
    finally:
        await context.close()
    assert console.errors == [], console.errors


async def test_the_console_speaks_spanish_for_a_spanish_town(
    browser: Browser, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Jun's city file says `language = "es"`: the console opens in Spanish, whatever the
    browser prefers."""
    jun = load_city_config(ROOT / "deploy/cities/jun.toml")
    app = create_app(sessions, httpx.AsyncClient(base_url="http://ingest.invalid"), jun)
    async with Server(app) as server:
        context = await browser.new_context(locale="ca-ES")
        page = await context.new_page()
        try:
            await page.goto(f"{server.url}/console/")
            await expect(page.get_by_role("heading", name="Iniciar sesión")).to_be_visible()
            await expect(
                page.get_by_text("Gerentes de distrito, trabajadores y el ayuntamiento de Jun.")
            ).to_be_visible()
            await expect(page.get_by_label("Idioma")).to_have_value("es")
        finally:
            await context.close()


async def test_a_spanish_towns_mayor_is_told_why_she_is_not_signed_in_in_spanish(
    browser: Browser, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A wrong password, then too many of them, then a session that ended: Jun's console says
    each in Spanish (the gateway's English details were shown in the middle of its page)."""
    jun = load_city_config(ROOT / "deploy/cities/jun.toml")
    await new_user(sessions, "alcaldesa", Role.CITY_HALL)
    app = create_app(sessions, httpx.AsyncClient(base_url="http://ingest.invalid"), jun)
    async with Server(app) as server:
        context = await browser.new_context(locale="es-ES")
        page = await context.new_page()
        message = page.locator("#sign-in-message")
        try:
            await page.goto(f"{server.url}/console/")
            await page.get_by_label("Usuario").fill("alcaldesa")
            await page.get_by_label("Contraseña", exact=True).fill("no es la suya")
            await page.get_by_role("button", name="Iniciar sesión", exact=True).click()
            await expect(message).to_have_text("Usuario o contraseña incorrectos.")

            await page.get_by_label("Contraseña", exact=True).fill(PASSWORD)
            await page.get_by_role("button", name="Iniciar sesión", exact=True).click()
            await expect(page.locator("#who")).to_contain_text("alcaldesa")
            # Her queue drawn and its stream opened with the good token: the refresh is what
            # finds the bad one (before, the page's own first requests did, under load, and
            # took the sign-in back before the refresh button could be clicked).
            await expect(page.locator("#queue-meta")).to_contain_text("en directo", timeout=LIVE)
            await page.evaluate("sessionStorage.setItem('plaza.console.token', 'caducado')")
            await page.get_by_role("button", name="Actualizar").click()
            await expect(message).to_have_text(
                "La sesión ha terminado (la clave o la sesión no se ha aceptado: incorrecta, "
                "caducada o revocada). Vuelva a iniciar sesión."
            )

            async with httpx.AsyncClient(base_url=server.url) as guesser:
                for _ in range(10):  # PLAZA_FAILED_LOGINS_PER_USER's 10
                    await guesser.post(
                        "/api/v1/auth/token", data={"username": "alcaldesa", "password": "1234"}
                    )
            await page.get_by_label("Usuario").fill("alcaldesa")
            await page.get_by_label("Contraseña", exact=True).fill(PASSWORD)
            await page.get_by_role("button", name="Iniciar sesión", exact=True).click()
            await expect(message).to_contain_text(
                "demasiados intentos: vuelva a intentarlo dentro de "
            )
            assert "failed logins" not in await message.inner_text()
        finally:
            await context.close()


async def test_without_a_language_of_the_city_the_browsers_is_used(
    browser: Browser, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A city whose council speaks a language the console lacks: the browser's, else English."""
    city = load_city_config(ROOT / "deploy/cities/jun.toml")
    city.council = replace(city.council, language="fr")
    app = create_app(sessions, httpx.AsyncClient(base_url="http://ingest.invalid"), city)
    async with Server(app) as server:
        for browser_locale, heading in (("ca-ES", "Inicia la sessió"), ("fr-FR", "Sign in")):
            context = await browser.new_context(locale=browser_locale)
            page = await context.new_page()
            try:
                await page.goto(f"{server.url}/console/")
                await expect(page.get_by_role("heading", name=heading)).to_be_visible()
            finally:
                await context.close()


async def test_every_screen_passes_axe_wcag_2_1_aa(
    browser: Browser, console: Console, axe: str
) -> None:
    """Each screen a manager or a worker meets, at a desk and on a phone, in the city's language
    and in English: no WCAG 2.1 A or AA violation (nor a missing landmark or a skipped heading
    level) that axe-core finds."""
    await open_request(console.sessions, "neighbour", text="El fanal de Verdi fa pampallugues")
    note = await console.api.post("/api/v1/requests/1/notes", json={"note": "Cal una grua"})
    assert note.status_code in (200, 201), note.text
    async with console.sessions.begin() as session:
        session.add(
            ReplyDelivery(
                reply_id="r1",
                service_request_id=1,
                kind="acknowledged",
                language="ca",
                platform="mastodon",
                in_reply_to_post_id="p1",
                author_handle="@marta@bcn.social",
                body="Rebut! Petició #1",
                correlation_id="c",
                state="failed",
                attempts=5,
                next_attempt_at=datetime.now(UTC),
                last_error="503 from the instance",
            )
        )
    found: list[str] = []
    contexts = ((1280, "ca"), (1280, "en"), (390, "en"), (320, "es"))
    for n, (width, language) in enumerate(contexts):
        context = await browser.new_context(
            viewport={"width": width, "height": 844}, is_mobile=width < 400
        )
        await context.add_init_script(
            f"localStorage.setItem('plaza.console.language', '{language}')"
        )
        page = await context.new_page()
        watch(page, console)
        at = f"{width}px {language}"
        try:
            await page.goto(f"{console.url}/console/")
            await expect(page.locator("#main h1")).to_be_visible()
            assert await page.evaluate("document.documentElement.lang") == language
            found += await audit(page, axe, f"{at} sign-in")
            if not found:  # the audit itself: an unlabelled field is found
                await page.evaluate(
                    "document.querySelector('main').append(document.createElement('input'))"
                )
                assert " label " in " ".join(await audit(page, axe, "probe"))
                await page.evaluate("document.querySelector('main > input').remove()")
            await page.locator("input[name=username]").fill("maria")
            await page.locator("input[name=password]").fill("not her password")
            await page.locator("form button[type=submit]").click()
            await expect(page.locator("#sign-in-message")).not_to_be_empty()
            found += await audit(page, axe, f"{at} sign-in refused")
            await page.locator("input[name=password]").fill(PASSWORD)
            await page.locator("form button[type=submit]").click()
            await expect(page.locator("#queue-items li[data-id='1']")).to_be_visible()
            for folded in (".filter-box", ".bulk-box"):  # folded on a phone
                await page.locator(folded).evaluate("details => { details.open = true; }")
            found += await audit(page, axe, f"{at} queue")
            await open_request(console.sessions, f"live{n}", latlon=(41.40 + n * 0.003, 2.17))
            await expect(page.locator("#queue-items .flag.arrived").first).to_be_visible(
                timeout=LIVE
            )
            found += await audit(page, axe, f"{at} queue, a request just in")
            await page.locator("#bulk button").first.click()  # nothing selected: an error
            await expect(page.locator("#bulk-result")).not_to_be_empty()
            found += await audit(page, axe, f"{at} queue, a bulk action refused")
            # the queue on a map: its markers, and the requests it cannot place listed
            await page.locator("#to-map").click()
            await expect(page.locator("#map a.marker").first).to_be_visible()
            await page.locator(".filter-box").evaluate("details => { details.open = true; }")
            found += await audit(page, axe, f"{at} queue on a map")
            wide = "document.documentElement.scrollWidth - window.innerWidth"
            assert await page.evaluate(wide) <= 0, f"{at}: the map widens the page"
            await page.goto(f"{console.url}/console/#/queue/07")
            await expect(page.locator("#queue-error")).not_to_be_empty()
            found += await audit(page, axe, f"{at} another's queue")
            await page.goto(f"{console.url}/console/#/request/1")
            await expect(page.locator(".post.note")).to_be_visible()
            found += await audit(page, axe, f"{at} request")
            transfer = page.locator("form[data-action='transfer']")
            await transfer.locator("button").click()  # without a reason: a 422 by the form
            await expect(transfer.locator("[role=alert]")).not_to_be_empty()
            found += await audit(page, axe, f"{at} request, an action refused")
            assign = page.locator("form[data-action='assign']")
            await assign.locator("input[name=worker]").fill("not a handle")
            await assign.locator("button").click()  # a 422 naming its field
            await expect(assign.locator("[aria-invalid=true]")).to_have_count(1)
            found += await audit(page, axe, f"{at} request, a field refused")
            await page.goto(f"{console.url}/console/#/request/2")
            await expect(page.locator("#main .error")).not_to_be_empty()
            found += await audit(page, axe, f"{at} another's request")
            await page.goto(f"{console.url}/console/#/replies?state=")
            await expect(page.locator("#delivery-items > li")).to_have_count(1)
            found += await audit(page, axe, f"{at} replies")
            if n == 0:  # someone else acts on the request she reads (before or after its
                # stream opens: opening, it checks the version it drew)
                await page.goto(f"{console.url}/console/#/request/1")
                await expect(page.locator(".post.note")).to_be_visible()
                await expect(page.locator("#changed")).to_be_hidden()
                acted = await console.api.post("/api/v1/requests/1/actions/acknowledge")
                assert acted.status_code == 200, acted.text
                await expect(page.locator("#changed")).to_be_visible(timeout=LIVE)
                found += await audit(page, axe, f"{at} request, changed by another")
            # city hall's monthly report, read and refused
            await page.locator("#sign-out").click()
            await page.locator("input[name=username]").fill("alba")
            await page.locator("input[name=password]").fill(PASSWORD)
            await page.locator("form button[type=submit]").click()
            await page.locator("#nav-report").click()
            await expect(page.locator("#report-table tr[data-district='all']")).to_be_visible()
            found += await audit(page, axe, f"{at} monthly report")
            # its wide table scrolls in its own box: the page itself never sideways
            wide = "document.documentElement.scrollWidth - window.innerWidth"
            assert await page.evaluate(wide) <= 0, f"{at}: the report widens the page"
            await page.goto(f"{console.url}/console/#/report?month=2099-01")
            await expect(page.locator("#report-error")).not_to_be_empty()
            found += await audit(page, axe, f"{at} monthly report, a month refused")
        finally:
            await context.close()
    assert found == [], "\n".join(found)
    assert console.errors == [], console.errors


def test_a_missing_chromium_fails_rather_than_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        chromium()


async def test_a_post_its_author_deleted_shows_as_withdrawn_not_as_its_words(
    page: Page, console: Console
) -> None:
    words = "El fanal del carrer de Verdi fa pampallugues"
    await open_request(console.sessions, "gone", text=words, author_id="42", latlon=(41.41, 2.16))
    withdrawal = PostWithdrawn(platform="mastodon", post_id="gone", author_id="42")
    await WithdrawPost(console.sessions)(
        envelope(withdrawal, key="mastodon:gone", event_id="w-gone", correlation_id="c").envelope
    )
    await sign_in(page, console, "maria")
    item = page.locator("#queue-items li[data-id='3']")
    await expect(item.locator(".desc")).to_have_text(re.compile("^Withdrawn by its author"))
    await expect(item).to_contain_text("withdrawn by its author")
    await expect(item).not_to_contain_text(words)
    await page.locator("#queue-items li[data-id='3'] a").click()
    await expect(page.locator(".post.citizen .text")).to_contain_text("the post was deleted")
    await expect(page.locator(".post.citizen .byline strong")).to_have_text("Its author")


def city_month(back: int = 0) -> str:
    """YYYY-MM on Barcelona's calendar, `back` months before the current one."""
    today = datetime.now(ZoneInfo("Europe/Madrid")).date()
    index = today.year * 12 + today.month - 1 - back
    return f"{index // 12:04}-{index % 12 + 1:02}"


async def test_city_hall_reads_the_monthly_report_and_saves_the_apis_csv(
    page: Page, console: Console
) -> None:
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    await sign_in(page, console, "alba")
    await page.locator("#nav-report").click()
    await expect(page.get_by_role("heading", name="Monthly report")).to_be_visible()
    month = page.get_by_label("Month", exact=True)
    await expect(month).to_have_value(city_month(1))  # last month, on the city's calendar
    await expect(month).to_have_attribute("max", city_month(0))  # no month still to come
    await expect(page.locator("#report-table")).to_be_visible()

    now = city_month(0)  # requests 1 (Gràcia) and 2 (Horta) came in this month
    await month.fill(now)
    await page.get_by_role("button", name="Show").click()
    table = page.get_by_role("table", name=re.compile("Requests reported in"))
    city = table.locator("tr[data-district='all']")
    await expect(city.locator("th")).to_have_text("Barcelona")
    await expect(city.locator("td").first).to_have_text("2")  # received
    gracia = table.locator("tr[data-district='06']")
    await expect(gracia.locator("th")).to_have_text("Gràcia")
    await expect(gracia.locator("td").first).to_have_text("1")
    await expect(table.locator("tr[data-district='05'] td").first).to_have_text("0")
    await expect(table.get_by_role("columnheader", name="Resolved in time")).to_be_visible()
    await expect(table.locator("thead th")).to_have_count(12)
    assert f"month={now}" in page.url

    async with page.expect_download() as downloading:
        await page.locator("#report-download").click()
    download = await downloading.value
    assert download.suggested_filename == f"plaza-sla-{now}.csv"
    saved = await asyncio.to_thread(Path(await download.path()).read_bytes)
    answer = await console.api.get("/api/v1/reports/monthly", params={"month": now})
    assert answer.status_code == 200, answer.text
    assert saved == answer.content  # byte for byte: CRLF line ends, the names' UTF-8
    assert saved.startswith(b"month,district_code,district,service_code,")
    assert "Gràcia".encode() in saved
    token = await page.evaluate("sessionStorage.getItem('plaza.console.token')")
    asked = [(u, a) for u, a in sent if "/reports/monthly" in u]
    assert asked and all(a == f"Bearer {token}" for _, a in asked)
    assert not any(token in u for u, _ in sent)


async def test_a_month_the_report_has_not_is_said_in_the_consoles_language_by_its_field(
    page: Page, console: Console
) -> None:
    await sign_in(page, console, "alba")
    await page.locator("#language").select_option("ca")  # as a Catalan-speaking user does
    await page.goto(f"{console.url}/console/#/report?month=2099-01")
    month = page.get_by_label("Mes", exact=True)
    await expect(page.locator("#report-error")).to_have_text(
        "No hi ha informe de 2099-01: trieu un mes des del 1970 fins a l'actual, com AAAA-MM."
    )
    await expect(month).to_have_attribute("aria-invalid", "true")
    await expect(month).to_have_accessible_description(re.compile("No hi ha informe de 2099-01"))
    await expect(page.locator("#report-table")).to_have_count(0)
    await page.goto(f"{console.url}/console/#/report?month=2026-13")
    await expect(page.locator("#report-error")).to_contain_text("No hi ha informe de 2026-13")
    # the database away: the gateway's 503, said in Catalan too, and no month marked
    await page.route(
        "**/api/v1/reports/monthly*",
        lambda route: route.fulfill(
            status=503,
            headers={"Retry-After": "7", "Content-Type": "application/problem+json"},
            body='{"status": 503, "detail": "the database is unavailable for now"}',
        ),
    )
    await page.goto(f"{console.url}/console/#/report?month=2026-01")
    await expect(page.locator("#report-error")).to_contain_text("7 s")
    await expect(page.locator("#report-error")).not_to_contain_text("database is unavailable")
    await expect(page.get_by_label("Mes", exact=True)).not_to_have_attribute("aria-invalid", "true")


async def test_a_manager_has_no_monthly_report(page: Page, console: Console) -> None:
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url))
    await sign_in(page, console, "maria")
    await expect(page.locator("#queue-items li[data-id='1']")).to_be_visible()
    await expect(page.locator("#nav-report")).to_be_hidden()
    await page.goto(f"{console.url}/console/#/report")
    await expect(page.locator("#main h1")).to_contain_text("Gràcia")  # her queue instead
    assert page.url.endswith("/console/#/")
    assert not any("/reports/" in u for u in sent)
    token = await page.evaluate("sessionStorage.getItem('plaza.console.token')")
    refused = await console.api.get(
        "/api/v1/reports/monthly", headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 403, refused.text  # the API's rule the console follows


async def test_a_refusal_naming_a_field_marks_it_invalid_and_ties_its_message(
    page: Page, console: Console
) -> None:
    await sign_in(page, console, "maria")
    await page.goto(f"{console.url}/console/#/request/1")
    assign = page.locator("form[data-action='assign']")
    worker = assign.get_by_label("Worker")
    await worker.fill("not a handle")
    await assign.get_by_role("button").click()
    await expect(assign.locator("[role=alert]")).to_contain_text("(422)")
    await expect(worker).to_have_attribute("aria-invalid", "true")
    await expect(worker).to_have_accessible_description(
        re.compile("^'not a handle' is not a public handle")  # its own message first
    )
    await expect(assign.get_by_role("button")).not_to_have_attribute("aria-invalid", "true")
    transfer = page.locator("form[data-action='transfer']")
    agency = transfer.get_by_label("Agency")
    await agency.fill("x" * 200)  # longer than an agency's name may be
    await transfer.get_by_role("button").click()
    await expect(agency).to_have_attribute("aria-invalid", "true")
    await expect(transfer.locator(".field-error")).to_have_count(1)
    # a refusal of Plaza's own names its field too (transfer needs a reason: the note), which
    # is marked instead, and the field put right loses its mark and its message
    await agency.fill("")
    await transfer.get_by_label("To district").select_option("05")
    await transfer.get_by_role("button").click()
    await expect(transfer.locator("[role=alert]")).to_contain_text("reason")
    await expect(transfer.locator("[aria-invalid]")).to_have_count(1)
    await expect(transfer.get_by_label("Note")).to_have_attribute("aria-invalid", "true")
    await expect(transfer.locator(".field-error")).to_have_count(1)
    await expect(agency).not_to_have_accessible_description(re.compile("128"))
    # put right, the mark and its message go
    await worker.fill("@jordi")
    await assign.get_by_role("button").click()
    await expect(page.get_by_role("heading", name="Actions")).to_be_focused()
    assert (await console.request("1"))["status"] == "assigned"
