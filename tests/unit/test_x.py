"""X without I/O: posts (media, geotags, places, languages, long posts) as Plaza's posts, the
documented reconnect delays, snowflake ids, X's weighted length, how a reply is recognised
when X gives it back, and the settings (secret tokens, the notifier's user token)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from plaza.contracts import ReplyKind
from plaza.settings import SettingsError, load
from plaza.x import XSettings, newer, posted_at, snowflake_at
from plaza_ingest.connectors.x import Backoff, Includes, tweet_to_post
from plaza_notifier.__main__ import NotifierSettings
from plaza_notifier.length import LIMITS, x_weighted
from plaza_notifier.templates import compose
from plaza_notifier.x import words

INCLUDES = Includes.of(
    {
        "includes": {
            "users": [{"id": "42", "username": "marta_bcn", "name": "Marta"}],
            "media": [
                {"media_key": "3_1", "type": "photo", "url": "https://pbs.twimg.com/media/a.jpg"},
                {
                    "media_key": "7_2",
                    "type": "video",
                    "preview_image_url": "https://pbs.twimg.com/v/b.jpg",
                },
            ],
            "places": [
                {
                    "id": "poi1",
                    "full_name": "Plaça del Sol, Barcelona",
                    "geo": {"type": "Feature", "bbox": [2.1571, 41.4007, 2.1581, 41.4013]},
                },
                {
                    "id": "bcn",
                    "full_name": "Barcelona, Spain",
                    "geo": {"type": "Feature", "bbox": [2.0524, 41.317, 2.2283, 41.4682]},
                },
            ],
        }
    }
)


def tweet(**extra: object) -> dict[str, object]:
    return {
        "id": "1790000000000000001",
        "text": "@bcn El fanal &amp; la font de la plaça no funcionen",
        "author_id": "42",
        "created_at": "2026-05-12T09:30:00.000Z",
        "lang": "ca",
        **extra,
    }


def test_a_post_keeps_its_text_media_language_and_exact_geotag() -> None:
    post = tweet_to_post(
        tweet(
            attachments={"media_keys": ["3_1", "7_2"]},
            geo={
                "place_id": "bcn",
                "coordinates": {"type": "Point", "coordinates": [2.1577, 41.4036]},
            },
            referenced_tweets=[{"type": "replied_to", "id": "1789"}],
        ),
        INCLUDES,
    )
    assert post is not None
    assert post.text == "@bcn El fanal & la font de la plaça no funcionen"  # X escapes &
    assert [str(u) for u in post.media_urls] == [
        "https://pbs.twimg.com/media/a.jpg",
        "https://pbs.twimg.com/v/b.jpg",  # a video's preview
    ]
    assert (post.lat, post.long) == (41.4036, 2.1577)  # GeoJSON gives [long, lat]
    assert post.address == "Barcelona, Spain"
    assert post.author_handle == "@marta_bcn" and post.author_id == "42"
    assert post.lang == "ca" and post.reply_to == "1789"
    assert str(post.url) == "https://x.com/marta_bcn/status/1790000000000000001"


def test_a_small_place_locates_the_post_and_a_city_only_names_it() -> None:
    small = tweet_to_post(tweet(geo={"place_id": "poi1"}), INCLUDES)
    assert small is not None and small.address == "Plaça del Sol, Barcelona"
    assert small.lat == pytest.approx(41.401) and small.long == pytest.approx(2.1576)
    city = tweet_to_post(tweet(geo={"place_id": "bcn"}), INCLUDES)
    assert city is not None and city.lat is None and city.address == "Barcelona, Spain"


def test_undetermined_language_long_posts_and_media_only_posts() -> None:
    und = tweet_to_post(tweet(lang="und"), INCLUDES)
    assert und is not None and und.lang == ""
    long = tweet_to_post(tweet(note_tweet={"text": "Una queixa llarga " * 30}), INCLUDES)
    assert long is not None and long.text.startswith("Una queixa llarga") and len(long.text) > 280
    photo = tweet_to_post(tweet(text="", attachments={"media_keys": ["3_1"]}), INCLUDES)
    assert photo is not None and photo.text == "[media]"
    assert tweet_to_post(tweet(text=""), INCLUDES) is None  # nothing to read


def test_reconnect_delays_follow_the_documented_rules() -> None:
    b = Backoff()
    assert [b.network(n) for n in (1, 2, 4, 64, 100)] == [0.25, 0.5, 1.0, 16.0, 16.0]
    assert [b.http(n) for n in (1, 2, 3, 7, 8)] == [5, 10, 20, 320, 320]
    assert [b.rate_limited(n) for n in (1, 2, 3)] == [60, 120, 240]


def test_snowflakes_order_by_time() -> None:
    at = datetime(2026, 5, 12, 9, 30, tzinfo=UTC)
    since = snowflake_at(at)
    assert posted_at(since) == at
    assert newer("1790000000000000002", "1790000000000000001")
    assert newer("10000000000000000000", "9999999999999999999")  # numbers, not text


def test_x_counts_weighted_characters_and_links_as_23() -> None:
    x = LIMITS["x"]
    assert x_weighted("plaça") == 5 and x_weighted("🚦") == 2 and x_weighted("市") == 2
    assert x.length("mira https://example.org/" + "a" * 200) == len("mira ") + 23
    assert x.fits("🚦" * 140) and not x.fits("🚦" * 141)
    # X links a bare domain too: 23, however short it is written
    assert x.length("a bcn.cat") == 2 + 23 and x.length("vegeu barcelona.cat/obres.") == 6 + 23
    assert x.length("truqueu-nos. Gràcies") == len("truqueu-nos. Gràcies")  # no domain
    assert x.length("marta@example.org") == len("marta@example.org")  # masked anyway
    assert x.length("3.5 m") == 5
    assert not x.fits("x" * 260 + " bcn.cat")  # 268 written, 284 as X counts it
    text, _ = compose(
        ReplyKind.REPLY_KIND_RESOLVED,
        "ca",
        {"service_request_id": "12345", "note": "Semàfor arreglat 🚦 " * 40},
        platform="x",
    )
    assert x.fits(text) and "#12345" in text


def test_a_reply_is_recognised_as_x_gives_it_back() -> None:
    sent = "Hem enviat @jordi a resoldre la petició #12 & ja hi és. https://bcn.cat/p/12"
    back = "@marta_bcn Hem enviat @jordi a resoldre la petició #12 &amp; ja hi és. https://t.co/x1"
    assert words(sent) == words(back)
    assert words(sent) != words(back.replace("#12", "#13"))


def test_tokens_come_from_secret_files_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bearer, user = tmp_path / "bearer", tmp_path / "user"
    bearer.write_text("app-s3cr3t\n")
    user.write_text("user-s3cr3t\n")
    monkeypatch.setenv("PLAZA_X_USER_ID", "1234")
    monkeypatch.setenv("PLAZA_X_USERNAME", "@bcn")
    monkeypatch.setenv("PLAZA_X_BEARER_TOKEN_FILE", str(bearer))
    monkeypatch.setenv("PLAZA_X_USER_TOKEN_FILE", str(user))
    settings = load(NotifierSettings)
    account = settings.x
    assert account is not None and account.username == "bcn"
    assert account.api_url == "https://api.x.com" and account.user_id == "1234"
    assert account.bearer_token.get_secret_value() == "app-s3cr3t"
    token = account.user_token()
    assert token is not None and token.get_secret_value() == "user-s3cr3t"
    user.write_text("rotated\n")  # a refresher rotates the user token: read again
    token = account.user_token()
    assert token is not None and token.get_secret_value() == "rotated"
    shown = repr(settings) + repr(account) + str(settings.model_dump())
    assert "s3cr3t" not in shown
    monkeypatch.delenv("PLAZA_X_USER_TOKEN_FILE")
    assert load(XSettings).x is not None  # ingest reads with the bearer token alone
    with pytest.raises(SettingsError, match="PLAZA_X_USER_TOKEN"):
        load(NotifierSettings)
    monkeypatch.delenv("PLAZA_X_BEARER_TOKEN_FILE")
    with pytest.raises(SettingsError, match="PLAZA_X_BEARER_TOKEN"):
        load(XSettings)
    monkeypatch.setenv("PLAZA_X_BEARER_TOKEN", "t")
    monkeypatch.setenv("PLAZA_X_USERNAME", "not a handle")
    with pytest.raises(SettingsError, match="PLAZA_X_USERNAME"):
        load(XSettings)
