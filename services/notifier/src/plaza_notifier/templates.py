"""Reply templates in Catalan, Spanish and English (templates.toml), rendered for one reply."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources

from plaza.city import of_district
from plaza.contracts import ReplyKind

LANGUAGES = ("ca", "es", "en")
DEFAULT_LANGUAGE = "ca"  # Barcelona's own language, for posts in any other


class TemplateError(LookupError):
    """No template for a reply: its kind is not supported yet or a parameter is missing."""


@cache
def templates() -> Mapping[str, Mapping[str, str]]:
    text = resources.files("plaza_notifier").joinpath("templates.toml").read_text("utf-8")
    return tomllib.loads(text)


def kind_name(kind: ReplyKind.ValueType) -> str:
    return ReplyKind.Name(kind).removeprefix("REPLY_KIND_").lower()


def render(kind: ReplyKind.ValueType, language: str, params: Mapping[str, str]) -> tuple[str, str]:
    """The reply text and the language it is in (falls back to Catalan)."""
    lang = language if language in LANGUAGES else DEFAULT_LANGUAGE
    by_language = templates().get(kind_name(kind), {})
    district = params.get("district_name")
    template = by_language.get(lang if district else f"{lang}_no_district") or by_language.get(lang)
    if template is None:
        raise TemplateError(f"no {lang} template for reply kind {ReplyKind.Name(kind)}")
    values = dict(params)
    if district:
        values["district_name_ca"] = of_district("ca", district)
        values["district_name_es"] = of_district("es", district)
    try:
        text = template.format_map(values)
    except KeyError as exc:
        raise TemplateError(f"reply kind {ReplyKind.Name(kind)} needs parameter {exc}") from None
    if params.get("photo_url"):
        text = f"{text} {params['photo_url']}"
    return text, lang
