"""Reply templates in Catalan, Spanish and English, keyed by reply kind."""

from __future__ import annotations

from collections.abc import Mapping

from plaza.city import of_district
from plaza.contracts import ReplyKind

LANGUAGES = ("ca", "es", "en")
DEFAULT_LANGUAGE = "ca"  # Barcelona's own language, for posts in any other

# A district request and a triage request differ only in where it went.
TEMPLATES: Mapping[tuple[ReplyKind.ValueType, str, bool], str] = {
    (
        ReplyKind.REPLY_KIND_ACKNOWLEDGED,
        "ca",
        True,
    ): "Rebut! Petició #{service_request_id}, districte {district_name_ca}.",
    (
        ReplyKind.REPLY_KIND_ACKNOWLEDGED,
        "es",
        True,
    ): "¡Recibido! Petición #{service_request_id}, distrito {district_name_es}.",
    (
        ReplyKind.REPLY_KIND_ACKNOWLEDGED,
        "en",
        True,
    ): "Received! Request #{service_request_id}, {district_name} district.",
    (
        ReplyKind.REPLY_KIND_ACKNOWLEDGED,
        "ca",
        False,
    ): "Rebut! Petició #{service_request_id}. L'assignem al districte que correspon.",
    (
        ReplyKind.REPLY_KIND_ACKNOWLEDGED,
        "es",
        False,
    ): "¡Recibido! Petición #{service_request_id}. La asignamos al distrito que corresponde.",
    (
        ReplyKind.REPLY_KIND_ACKNOWLEDGED,
        "en",
        False,
    ): "Received! Request #{service_request_id}. We are passing it to the right district.",
    (
        ReplyKind.REPLY_KIND_NOT_ACTIONABLE,
        "ca",
        False,
    ): "Gràcies pel missatge! Si vols avisar d'una incidència a la via pública, explica'ns què passa i on, i l'enviarem al districte.",
    (
        ReplyKind.REPLY_KIND_NOT_ACTIONABLE,
        "es",
        False,
    ): "¡Gracias por el mensaje! Si quieres avisar de una incidencia en la vía pública, cuéntanos qué pasa y dónde, y la enviaremos al distrito.",
    (
        ReplyKind.REPLY_KIND_NOT_ACTIONABLE,
        "en",
        False,
    ): "Thanks for your message! To report a problem in the street, tell us what is wrong and where, and we will send it to the district.",
}


class TemplateError(LookupError):
    """No template for a reply: its kind is not supported yet or a parameter is missing."""


def render(kind: ReplyKind.ValueType, language: str, params: Mapping[str, str]) -> tuple[str, str]:
    """The reply text and the language it is in (falls back to Catalan)."""
    lang = language if language in LANGUAGES else DEFAULT_LANGUAGE
    in_district = bool(params.get("district_name"))
    template = TEMPLATES.get((kind, lang, in_district))
    if template is None:
        raise TemplateError(f"no {lang} template for reply kind {ReplyKind.Name(kind)}")
    values = dict(params)
    if in_district:
        values["district_name_ca"] = of_district("ca", params["district_name"])
        values["district_name_es"] = of_district("es", params["district_name"])
    try:
        return template.format_map(values), lang
    except KeyError as exc:
        raise TemplateError(f"reply kind {ReplyKind.Name(kind)} needs parameter {exc}") from None
