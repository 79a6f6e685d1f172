"""Social channels without I/O: replies fitted to each platform's length (never cutting the
request number or a mention), editable templates, secret credentials, Mastodon statuses as posts."""

from __future__ import annotations

from pathlib import Path

import pytest
from plaza.contracts import ReplyKind
from plaza.settings import SettingsError, load
from plaza.social import SocialSettings, html_to_text
from plaza_ingest.connectors.mastodon import newer, status_to_post
from plaza_notifier.delivery import DeliveryPolicy
from plaza_notifier.length import LIMITS, LengthLimit, graphemes, shorten
from plaza_notifier.templates import TemplateError, compose, load_templates, render

RESOLVED = ReplyKind.REPLY_KIND_RESOLVED
LONG_NOTE = "Hem canviat la làmpara, el cablejat i el quadre elèctric del carrer. " * 12


def test_each_platform_counts_its_own_way() -> None:
    assert graphemes("e\u0301") == 1 and graphemes("👩‍👩‍👧") == 1 and graphemes("👍🏽") == 1
    assert LIMITS["bluesky"].length("👩‍👩‍👧" * 300) == 300
    # ... and Bluesky's record holds 3,000 bytes at most: 300 graphemes of 18 bytes do not fit
    assert not LIMITS["bluesky"].fits("👩‍👩‍👧" * 300) and LIMITS["bluesky"].fits("👩‍👩‍👧" * 166)
    assert LIMITS["mastodon"].length("👩‍👩‍👧") == 5  # Mastodon counts characters
    x = LIMITS["x"]
    assert x.length("mira https://example.org/" + "a" * 200) == len("mira ") + 23


@pytest.mark.parametrize("platform", ["mastodon", "bluesky", "x"])
@pytest.mark.parametrize("language", ["ca", "es", "en"])
def test_a_long_resolution_fits_and_keeps_the_request_number_and_the_mention(
    platform: str, language: str
) -> None:
    params = {
        "service_request_id": "12345",
        "note": LONG_NOTE,
        "photo_url": "https://p.example/a.jpg",
    }
    text, _ = compose(
        RESOLVED,
        language,
        params,
        platform=platform,
        mention="@marta@bcn.social",
        photo_attached=True,
    )
    assert LIMITS[platform].fits(text)
    assert text.startswith("@marta@bcn.social ") and "#12345" in text and text.endswith("…")
    assert "https://p.example" not in text  # attached as media, not linked
    unlimited, _ = compose(RESOLVED, language, params, platform="log")
    assert unlimited.endswith("https://p.example/a.jpg") and LONG_NOTE.strip() in unlimited


def test_shortening_never_cuts_what_must_stay() -> None:
    limit = LengthLimit(60)
    text = (
        "Hem enviat @electricista_de_guardia_del_districte a " + "molt " * 20 + "la petició #987."
    )
    short = shorten(text, limit, ["#987", "@electricista_de_guardia_del_districte"])
    assert (
        limit.fits(short) and "#987" in short and "@electricista_de_guardia_del_districte" in short
    )
    with pytest.raises(ValueError, match="cannot fit"):
        shorten("#1 " + "@x" * 40, LengthLimit(10), ["#1", "@x" * 40])


def test_every_kind_including_the_sla_delay_renders_in_every_language() -> None:
    params = {
        "service_request_id": "7",
        "district_name": "Gràcia",
        "worker": "@jordi",
        "note": "Fet",
        "reporters_count": "3",
        "expected_datetime": "2036-05-12T16:30:00+00:00",  # ahead: a past one is left out
    }
    for kind in (1, 2, 3, 4, 5, 6, 7):
        for language in ("ca", "es", "en"):
            text, lang = render(kind, language, params)  # type: ignore[arg-type]
            assert lang == language and text
    ack, _ = render(ReplyKind.REPLY_KIND_ACKNOWLEDGED, "ca", params)
    assert ack == "Rebut! Petició #7, districte de Gràcia. Previsió: 12/05 18:30."  # city time
    late, _ = render(ReplyKind.REPLY_KIND_DELAYED, "es", params)
    assert "#7" in late


def test_templates_are_configuration(tmp_path: Path) -> None:
    custom = tmp_path / "replies.toml"
    custom.write_text('[assigned]\nca = "{worker} ja va cap a la petició #{service_request_id}!"\n')
    table = load_templates(custom)
    text, _ = render(
        ReplyKind.REPLY_KIND_ASSIGNED, "ca", {"service_request_id": "4", "worker": "@jordi"}, table
    )
    assert text == "@jordi ja va cap a la petició #4!"
    other, _ = render(
        ReplyKind.REPLY_KIND_ASSIGNED, "es", {"service_request_id": "4", "worker": "@jordi"}, table
    )
    assert other.startswith("Hemos enviado a @jordi")  # what the file leaves out stays packaged
    custom.write_text("[assigned]\nca = [1]\n")
    with pytest.raises(TemplateError, match="must map"):
        load_templates(custom)


def test_credentials_come_from_a_secret_file_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-token\n")
    monkeypatch.setenv("PLAZA_MASTODON_BASE_URL", "https://bcn.social")
    monkeypatch.setenv("PLAZA_MASTODON_TOKEN_FILE", str(secret))
    monkeypatch.setenv("PLAZA_MASTODON_HASHTAGS", "#BCNincidencies, civisme")
    settings = load(SocialSettings)
    account = settings.mastodon
    assert account is not None and account.token.get_secret_value() == "s3cr3t-token"
    assert account.streaming_url == "wss://bcn.social" and account.hashtags == (
        "BCNincidencies",
        "civisme",
    )
    assert "s3cr3t" not in repr(settings) + repr(account) + str(settings.model_dump())
    monkeypatch.delenv("PLAZA_MASTODON_TOKEN_FILE")
    with pytest.raises(SettingsError, match="PLAZA_MASTODON_TOKEN"):
        load(SocialSettings)


def test_a_mastodon_status_becomes_a_post() -> None:
    status = {
        "id": "109",
        "created_at": "2026-05-04T08:00:00.000Z",
        "content": '<p><span class="h-card"><a href="https://bcn.social/@bcn" class="u-url mention">'
        "@<span>bcn</span></a></span> Fanal apagat &amp; fosc</p><p>Carrer de Verdi<br />Gràcia</p>",
        "language": "ca",
        "url": "https://veins.cat/@marta/109",
        "in_reply_to_id": None,
        "account": {"id": "5", "acct": "marta@veins.cat"},
        "media_attachments": [{"type": "image", "url": "https://veins.cat/m/1.jpg"}],
    }
    post = status_to_post(status, "bcn.social")
    assert post is not None
    assert post.text == "@bcn Fanal apagat & fosc\n\nCarrer de Verdi\nGràcia"
    assert (post.platform, post.post_id, post.author_handle) == (
        "mastodon",
        "109",
        "@marta@veins.cat",
    )
    assert [str(u) for u in post.media_urls] == ["https://veins.cat/m/1.jpg"]
    assert post.lat is None and post.created_at is not None
    local = status_to_post({**status, "account": {"id": "6", "acct": "pere"}}, "bcn.social")
    assert local is not None and local.author_handle == "@pere@bcn.social"
    assert html_to_text("<p>a</p><p>b</p>") == "a\n\nb"
    assert newer("110", "99") and newer("01HB", "01HA") and not newer("5", "5")


def test_retries_back_off_exponentially_with_jitter() -> None:
    policy = DeliveryPolicy(base_delay=2, max_delay=60)
    for attempt, top in ((1, 2), (2, 4), (3, 8), (10, 60)):
        delays = [policy.backoff(attempt) for _ in range(50)]
        assert all(top / 2 <= d <= top for d in delays) and len(set(delays)) > 1
