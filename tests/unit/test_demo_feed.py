"""The demo feed of `make run` keeps the queues filling: new authors, new problems all over the
city, and only a few percent of reports that repeat an open request."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import httpx
import pytest
from plaza.city import City
from plaza.posts import PostIn
from plaza.settings import SettingsError
from plaza.subjects import different_problems
from plaza_classifier.classify import classify
from plaza_cli.demo import STREETS, DemoPost, feed, fits, posts, wanted
from plaza_router.dedupe import DuplicatePolicy, distance_m, similarity

from tests.infra import ROOT

AN_HOUR = 1200  # posts, at make run's default of one every 3 seconds
DISTRICTS = {f"{n:02}" for n in range(1, 11)}


@pytest.fixture(scope="module")
def an_hour() -> list[DemoPost]:
    return list(itertools.islice(posts(2026), AN_HOUR))


def test_authors_are_many_and_new_ones_keep_coming(an_hour: list[DemoPost]) -> None:
    authors = [p.author for p in an_hour]
    assert len(set(authors)) >= 0.7 * len(authors)
    first_seen = {a: i for i, a in reversed(list(enumerate(authors)))}
    last_200 = range(len(authors) - 200, len(authors))
    assert sum(1 for i in last_200 if first_seen[authors[i]] == i) >= 120
    assert max(Counter(authors).values()) <= 10


def test_texts_and_places_are_varied(an_hour: list[DemoPost]) -> None:
    assert len({p.text for p in an_hour}) >= 0.95 * len(an_hour)
    assert len({(p.text, p.lat, p.long) for p in an_hour}) >= 0.97 * len(an_hour)
    points = {
        (round(p.lat, 3), round(p.long, 3))
        for p in an_hour
        if p.lat is not None and p.long is not None
    }
    assert len(points) >= 600  # about 100 m apart: all over the city, not a few spots
    assert {p.lang for p in an_hour} >= {"ca", "es", "en"}


def test_posts_come_from_every_district(an_hour: list[DemoPost], city: City) -> None:
    where: Counter[str] = Counter()
    for p in an_hour:
        if p.lat is not None and p.long is not None:
            found = city.locate(p.lat, p.long)
        else:
            found = city.find_in_text(p.text)
        if found is not None and found.district is not None:
            where[found.district.code] += 1
    assert set(where) == DISTRICTS
    assert min(where.values()) >= 0.03 * len(an_hour)


def test_every_street_is_where_its_posts_say(city: City) -> None:
    """A street's point is in its district, and so is the barri its posts name with it."""
    for street in STREETS:
        located = city.locate(street.lat, street.long)
        assert located is not None and located.district is not None, street
        assert located.district.code == street.district_code, street
        for lang in ("ca", "es", "en"):
            named = city.find_in_text(f"{street.name(lang)} ({street.barri})")
            assert named is not None and named.district is not None, (street, lang)
            assert named.district.code == street.district_code, (street, lang)


def test_few_reports_repeat_an_open_request(an_hour: list[DemoPost], city: City) -> None:
    """What the router would do with an hour of the feed (its duplicate rule, run on the
    classifier's output): most posts open a request, a few percent join one, reported by
    someone else."""
    policy = DuplicatePolicy()

    def repeats(
        service: str, post: DemoPost, barri: str | None, report: DemoPost, its_barri: str | None
    ) -> bool:
        """Whether `post` (in `barri`) repeats `report` of the same service (in `its_barri`):
        not about another problem of the service, and near its point, or without a point, in
        its barri and alike in words."""
        if different_problems(service, post.text, report.text):
            return False
        if post.lat is not None and post.long is not None:
            return (
                report.lat is not None
                and report.long is not None
                and distance_m(post.lat, post.long, report.lat, report.long) <= policy.radius_m
            )
        return (
            barri is not None
            and its_barri == barri
            and similarity(post.text, report.text) >= policy.text_similarity
        )

    opened: list[tuple[str, DemoPost, str | None]] = []  # service, first report, barri
    joined: list[tuple[DemoPost, DemoPost]] = []
    services: Counter[str] = Counter()
    actionable = 0
    for p in an_hour:
        c = classify(p.text, city, lat=p.lat, lon=p.long, language_hint=p.lang)
        if not c.actionable:
            continue
        actionable += 1
        services[c.service_code] += 1
        barri = c.location.barri.code if c.location.barri else None
        first = next(
            (r for s, r, b in opened if s == c.service_code and repeats(s, p, barri, r, b)), None
        )
        if first is None:
            opened.append((c.service_code, p, barri))
        else:
            joined.append((p, first))
    assert actionable >= 0.9 * len(an_hour)
    assert 0.01 * actionable <= len(joined) <= 0.08 * actionable
    assert sum(1 for p, first in joined if p.author != first.author) >= 0.9 * len(joined)
    assert services["other"] <= 0.02 * actionable
    assert len([s for s, n in services.items() if n >= 0.02 * actionable]) >= 10


def test_the_same_seed_gives_the_same_posts() -> None:
    assert list(itertools.islice(posts(7), 300)) == list(itertools.islice(posts(7), 300))
    assert list(itertools.islice(posts(7), 50)) != list(itertools.islice(posts(8), 50))


async def test_the_feed_posts_through_the_webhook_and_each_run_its_own_posts() -> None:
    async def a_run(run_id: str, count: int) -> list[dict[str, object]]:
        sent: list[dict[str, object]] = []
        enough = asyncio.Event()

        def webhook(request: httpx.Request) -> httpx.Response:
            assert request.url.path == "/api/v1/posts"
            sent.append(PostIn.model_validate_json(request.content).model_dump(mode="json"))
            if len(sent) == count:
                enough.set()
            return httpx.Response(202)

        transport = httpx.MockTransport(webhook)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as ingest:
            task = asyncio.create_task(feed(ingest, interval=0, run_id=run_id))
            await asyncio.wait_for(enough.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return sent[:count]

    first, second = await a_run("1000", 50), await a_run("2000", 50)
    assert [p["post_id"] for p in first] == [f"1000-{n}" for n in range(50)]
    assert {p["platform"] for p in first} == {"demo"}
    assert not {p["text"] for p in first} & {p["text"] for p in second}


def test_the_feed_is_off_by_default_in_a_city_of_a_file_and_refused_where_it_is_not(
    city: City,
) -> None:
    """Its posts are Barcelona's: in Jun's own database they would be made-up requests, all in
    triage with Catalan replies."""
    jun = City.from_config(ROOT / "deploy" / "cities" / "jun.toml")
    assert wanted(None, city, city_file=False)  # make run's Barcelona, as ever
    assert not wanted(None, jun, city_file=True)
    assert not wanted(False, city, city_file=False)
    assert not wanted(False, jun, city_file=True)
    barcelona_file = City.from_config(ROOT / "deploy" / "cities" / "barcelona.toml")
    assert not wanted(None, barcelona_file, city_file=True)
    assert wanted(True, barcelona_file, city_file=True)  # asked for, where its streets are
    with pytest.raises(
        SettingsError,
        match=r"^PLAZA_DEMO: .*Barcelona's streets, which are not "
        r"in Jun; unset PLAZA_DEMO",
    ):
        wanted(True, jun, city_file=True)
    assert fits(city) and fits(barcelona_file) and not fits(jun)
