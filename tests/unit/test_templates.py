"""Reply templates: the citizen's language, and Catalan and Spanish grammar around district names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from plaza.city import of_district
from plaza.contracts import ReplyKind
from plaza_notifier.templates import TemplateError, kind_name, render

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
    from plaza_notifier.templates import templates

    for kind, texts in templates().items():
        assert {"ca", "es", "en"} <= set(texts), kind


def test_chatter_is_thanked_without_a_request_number() -> None:
    for language in ("ca", "es", "en"):
        text, lang = render(ReplyKind.REPLY_KIND_NOT_ACTIONABLE, language, {})
        assert lang == language and "#" not in text and len(text) <= 280
