"""Reply templates: the citizen's language, and Catalan and Spanish grammar around district names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from plaza.city import of_district
from plaza.contracts import ReplyKind
from plaza.settings import SettingsError, load
from plaza_notifier.__main__ import NotifierSettings
from plaza_notifier.templates import (
    TemplateError,
    compose,
    kind_name,
    load_templates,
    render,
    templates,
)

from tests.infra import ROOT

ACK = ReplyKind.REPLY_KIND_ACKNOWLEDGED


@pytest.mark.parametrize(
    ("language", "name", "expected"),
    [
        ("ca", "Gràcia", "de Gràcia"),
        ("ca", "Horta-Guinardó", "d'Horta-Guinardó"),
        ("ca", "Eixample", "de l'Eixample"),
        ("ca", "Les Corts", "de les Corts"),
        ("ca", "Sant Martí", "de Sant Martí"),
        ("es", "Eixample", "del Eixample"),
        ("es", "Horta-Guinardó", "de Horta-Guinardó"),
    ],
)
def test_district_names_take_the_right_preposition(language: str, name: str, expected: str) -> None:
    assert of_district(language, name) == expected


def test_a_reply_is_in_the_citizens_language_or_else_in_catalan() -> None:
    params = {"service_request_id": "7", "district_name": "Eixample"}
    assert render(ACK, "ca", params) == ("Rebut! Petició #7, districte de l'Eixample.", "ca")
    assert render(ACK, "es", params) == ("¡Recibido! Petición #7, distrito del Eixample.", "es")
    assert render(ACK, "en", params) == ("Received! Request #7, Eixample district.", "en")
    assert render(ACK, "fr", params)[1] == "ca"


def test_a_request_without_district_says_where_it_goes() -> None:
    text, _ = render(ACK, "es", {"service_request_id": "8"})
    assert text == "¡Recibido! Petición #8. La asignamos al distrito que corresponde."


def test_a_city_wide_request_names_its_team_not_a_district() -> None:
    params = {"service_request_id": "9", "team": "Barcelona de Serveis Municipals (BSM)"}
    assert render(ACK, "ca", params)[0] == (
        "Rebut! Petició #9, en mans de Barcelona de Serveis Municipals (BSM)."
    )
    assert "distrito" not in render(ACK, "es", params)[0]
    transferred = render(ReplyKind.REPLY_KIND_TRANSFERRED, "en", params)[0]
    assert transferred == "Request #9 is now with Barcelona de Serveis Municipals (BSM)."
    # a kind with no team variant says what it says without a district
    table = {"transferred": {"en": "With {district_name}.", "en_no_district": "Passed on."}}
    assert render(ReplyKind.REPLY_KIND_TRANSFERRED, "en", params, table)[0] == "Passed on."


def test_a_reply_promises_a_due_time_only_while_it_is_ahead() -> None:
    ahead = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    gone = (datetime.now(UTC) - timedelta(days=2)).isoformat()  # a post that came in late
    params = {"service_request_id": "5", "district_name": "Gràcia"}
    assert " Previsió: " in render(ACK, "ca", {**params, "expected_datetime": ahead})[0]
    late = render(ACK, "ca", {**params, "expected_datetime": gone})[0]
    assert late == "Rebut! Petició #5, districte de Gràcia."


def test_missing_parameters_and_unknown_kinds_are_errors() -> None:
    with pytest.raises(TemplateError, match="worker"):
        render(ReplyKind.REPLY_KIND_ASSIGNED, "ca", {"service_request_id": "1"})
    with pytest.raises(TemplateError, match="service_request_id"):
        render(ACK, "ca", {"district_name": "Gràcia"})
    with pytest.raises(TemplateError, match="UNSPECIFIED"):
        render(ReplyKind.REPLY_KIND_UNSPECIFIED, "ca", {"service_request_id": "1"})
    with pytest.raises(ValueError, match="999"):  # a kind newer than this code
        render(999, "ca", {"service_request_id": "1"})  # type: ignore[arg-type]
    assert kind_name(ACK) == "acknowledged"


def test_the_lifecycle_replies_mention_the_worker_the_photo_and_the_neighbours() -> None:
    assigned, _ = render(
        ReplyKind.REPLY_KIND_ASSIGNED,
        "ca",
        {"service_request_id": "5", "worker": "@electricista_jun"},
    )
    assert assigned == "Hem enviat @electricista_jun a resoldre la petició #5."
    resolved, _ = render(
        ReplyKind.REPLY_KIND_RESOLVED,
        "es",
        {
            "service_request_id": "5",
            "note": "Farola reparada.",
            "photo_url": "https://x.example/p.jpg",
        },
    )
    assert resolved == "Petición #5 resuelta: Farola reparada. https://x.example/p.jpg"
    dup, _ = render(
        ReplyKind.REPLY_KIND_DUPLICATE, "en", {"service_request_id": "5", "reporters_count": "12"}
    )
    assert dup == "We're on it! It is request #5: 12 neighbours reported it."
    moved, _ = render(
        ReplyKind.REPLY_KIND_TRANSFERRED,
        "ca",
        {"service_request_id": "5", "district_name": "Horta-Guinardó"},
    )
    assert moved == "La petició #5 ara la porta el districte d'Horta-Guinardó."


def test_every_kind_has_every_language() -> None:
    for kind, texts in templates().items():
        assert {"ca", "es", "en"} <= set(texts), kind


def test_chatter_is_thanked_without_a_request_number() -> None:
    for language in ("ca", "es", "en"):
        text, lang = render(ReplyKind.REPLY_KIND_NOT_ACTIONABLE, language, {})
        assert lang == language and "#" not in text and len(text) <= 280


def test_a_post_in_another_language_is_answered_in_the_city_s() -> None:
    params = {"service_request_id": "7", "district_name": "Casco Urbano"}
    spanish = load_templates(language="es")
    assert render(ACK, "fr", params, spanish) == (
        "¡Recibido! Petición #7, distrito de Casco Urbano.",
        "es",
    )
    assert render(ACK, "ca", params, spanish)[1] == "ca"  # a language Plaza speaks is kept
    assert render(ACK, "fr", params, templates())[1] == "ca"  # Barcelona's, as ever
    text, lang = compose(ACK, "de", params, platform="mastodon", table=spanish)
    assert lang == "es" and text.startswith("¡Recibido!")


@pytest.mark.parametrize(
    "handle",
    [
        "@a @alcaldessa@bcn.social",
        "@a https://estafa.example/pagament",
        "@a\nRebut! Paga la multa a https://estafa.example",
        "@a@b@c.social",
        "marta",
    ],
)
def test_a_reply_mentions_one_handle_and_nothing_else(handle: str) -> None:
    """A bridge writes the post's author handle, which heads the city's Mastodon reply: words,
    links and other people's names in it were posted on the city's account as they were."""
    params = {"service_request_id": "7", "district_name": "Gràcia"}
    with pytest.raises(ValueError, match="is not one handle"):
        compose(ACK, "ca", params, platform="mastodon", mention=handle)


def test_a_reply_mentions_a_local_or_a_remote_account() -> None:
    params = {"service_request_id": "7", "district_name": "Gràcia"}
    for handle in (
        "@marta",
        "@marta_92@bcn.social",
        "@joan.pi@mastodont.cat",
        "@núria@xn--p1ai.cat",
        "@pau@127.0.0.1:8443",
    ):
        text, _ = compose(ACK, "ca", params, platform="mastodon", mention=handle)
        assert text.startswith(f"{handle} Rebut!")


def test_the_city_s_language_needs_a_template_for_every_reply(tmp_path: Path) -> None:
    with pytest.raises(
        TemplateError,
        match=r"the city's language 'fr' .* no template for "
        r"acknowledged, duplicate, .*not_actionable; add \[kind\] fr = ",
    ):
        load_templates(language="fr")
    override = tmp_path / "fr.toml"
    override.write_text(
        "\n".join(f'[{kind}]\nfr = "Demande #{{service_request_id}}."' for kind in templates()),
        encoding="utf-8",
    )
    french = load_templates(override, language="fr")
    assert render(ACK, "fr", {"service_request_id": "3"}, french) == ("Demande #3.", "fr")
    assert render(ACK, "it", {"service_request_id": "3"}, french) == ("Demande #3.", "fr")


def test_the_notifier_answers_in_the_language_of_its_city_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("PLAZA_CITY_CONFIG", "PLAZA_REPLY_TEMPLATES"):
        monkeypatch.delenv(name, raising=False)
    assert load(NotifierSettings).templates().language == "ca"
    monkeypatch.setenv("PLAZA_CITY_CONFIG", str(ROOT / "deploy" / "cities" / "jun.toml"))
    assert load(NotifierSettings).templates().language == "es"
    french = tmp_path / "city.toml"
    french.write_text(
        'name = "Lyon"\nlanguage = "fr"\n[districts]\ngeojson = "x.geojson"\n'
        'name_property = "nom"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("PLAZA_CITY_CONFIG", str(french))
    with pytest.raises(SettingsError, match=r"the city's language 'fr' .*PLAZA_REPLY_TEMPLATES"):
        load(NotifierSettings)


@pytest.mark.parametrize(
    ("language", "says"),
    [
        ("ca", "ja ens havies avisat"),
        ("es", "ya nos habías avisado"),
        ("en", "you reported already"),
    ],
)
def test_the_one_reporter_reporting_again_is_not_told_1_neighbours(
    language: str, says: str
) -> None:
    """Reporters are people: a citizen's second post about their own request leaves the count at
    1, and "1 veïns ho han avisat" would be both wrong and ungrammatical."""
    once = {"service_request_id": "12", "reporters_count": "1"}
    text, _ = render(ReplyKind.REPLY_KIND_DUPLICATE, language, once)
    assert says in text and "#12" in text and " 1 " not in text
    many, _ = render(ReplyKind.REPLY_KIND_DUPLICATE, language, {**once, "reporters_count": "3"})
    assert " 3 " in many


def test_due_times_are_on_the_clock_of_the_city_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A city outside Spain reads "before 18:30" on its own clock, not Madrid's."""
    monkeypatch.delenv("PLAZA_REPLY_TEMPLATES", raising=False)
    due = datetime(2099, 5, 12, 16, 30, tzinfo=UTC).isoformat()
    params = {"service_request_id": "5", "district_name": "Centro", "expected_datetime": due}
    monkeypatch.delenv("PLAZA_CITY_CONFIG", raising=False)
    assert "12/05 18:30" in render(ACK, "es", params, load(NotifierSettings).templates())[0]
    city = tmp_path / "city.toml"
    head = 'name = "Ciudad de México"\nlanguage = "es"\n'
    tail = '[districts]\ngeojson = "x.geojson"\nname_property = "nom"\n'
    city.write_text(head + 'time_zone = "America/Mexico_City"\n' + tail, encoding="utf-8")
    monkeypatch.setenv("PLAZA_CITY_CONFIG", str(city))
    mexico = load(NotifierSettings).templates()
    assert "12/05 10:30" in render(ACK, "es", params, mexico)[0]
    city.write_text(head + 'time_zone = "Mexico/Ciudad"\n' + tail, encoding="utf-8")
    with pytest.raises(SettingsError, match=r"time_zone 'Mexico/Ciudad' is not an IANA time zone"):
        load(NotifierSettings)
