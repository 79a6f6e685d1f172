"""Reply templates in Catalan, Spanish and English (templates.toml, or a file given by
PLAZA_REPLY_TEMPLATES that overrides any of them), rendered for one reply and fitted to the
platform's length limit. A post in another language is answered in the city's (its council's
language: Barcelona's Catalan, Jun's Spanish)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from plaza.city import DEFAULT_TIME_ZONE, of_district
from plaza.contracts import ReplyKind

from plaza_notifier.length import LIMITS, shorten

LANGUAGES = ("ca", "es", "en")
DEFAULT_LANGUAGE = "ca"  # Barcelona's own language: the fallback of a table that names none
CITY_TIME = ZoneInfo(DEFAULT_TIME_ZONE)  # a table's clock when it names none


class TemplateError(LookupError):
    """No template for a reply: its kind is not supported yet or a parameter is missing."""


@dataclass(frozen=True, slots=True)
class Templates(Mapping[str, Mapping[str, str]]):
    """Reply kind -> template key ("es", "es_no_district", ...) -> text, `language`, the one
    a post in a language without templates is answered in, and `zone`, the city's clock (due
    times in replies)."""

    by_kind: Mapping[str, Mapping[str, str]]
    language: str = DEFAULT_LANGUAGE
    zone: ZoneInfo = CITY_TIME

    def __getitem__(self, kind: str) -> Mapping[str, str]:
        return self.by_kind[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_kind)

    def __len__(self) -> int:
        return len(self.by_kind)


@cache
def templates() -> Templates:
    """The packaged templates."""
    text = resources.files("plaza_notifier").joinpath("templates.toml").read_text("utf-8")
    return Templates(tomllib.loads(text))


def load_templates(
    override: Path | None = None, language: str = DEFAULT_LANGUAGE, zone: ZoneInfo = CITY_TIME
) -> Templates:
    """The packaged templates, with every entry of `override` (same format) replacing its own;
    `language` (the city's) answers posts in other languages, so every kind needs a template
    in it; `zone` is the city's clock."""
    merged = {kind: dict(texts) for kind, texts in templates().items()}
    source = "the packaged templates"
    if override is not None:
        source = f"PLAZA_REPLY_TEMPLATES={override}"
        try:
            extra = tomllib.loads(override.read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise TemplateError(f"{source}: {exc}") from exc
        for kind, texts in extra.items():
            if not isinstance(texts, dict) or not all(isinstance(t, str) for t in texts.values()):
                raise TemplateError(f"{source}: [{kind}] must map keys to text")
            merged.setdefault(kind, {}).update(texts)
    missing = [kind for kind, texts in merged.items() if language not in texts]
    if missing:
        raise TemplateError(
            f"{source}: the city's language {language!r} (its replies to posts in other "
            f"languages) has no template for {', '.join(missing)}; add [kind] {language} = "
            '"..." entries with PLAZA_REPLY_TEMPLATES'
        )
    return Templates(merged, language, zone)


_KIND_NAMES: dict[int, str] = {
    value: name.removeprefix("REPLY_KIND_").lower() for name, value in ReplyKind.items()
}


def kind_name(kind: ReplyKind.ValueType) -> str:
    """ "acknowledged" for REPLY_KIND_ACKNOWLEDGED; ValueError for a kind this code lacks."""
    name = _KIND_NAMES.get(kind)
    if name is None:
        ReplyKind.Name(kind)  # raises ValueError, naming the unknown value
        raise ValueError(f"unknown reply kind {kind}")
    return name


def _due(expected: str, zone: ZoneInfo = CITY_TIME, now: datetime | None = None) -> str:
    """An ISO due time as the city reads it on its clock (12/05 18:30); empty when it has passed
    already (a post that reached Plaza late): a reply does not promise a date gone by."""
    try:
        due = datetime.fromisoformat(expected)
    except ValueError:
        return ""
    if due.tzinfo is None or due <= (now or datetime.now(UTC)):
        return ""
    return due.astimezone(zone).strftime("%d/%m %H:%M")


def render(
    kind: ReplyKind.ValueType,
    language: str,
    params: Mapping[str, str],
    table: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[str, str]:
    """The reply text and the language it is in: the post's, else the table's (the city's)."""
    table = table or templates()
    fallback = table.language if isinstance(table, Templates) else DEFAULT_LANGUAGE
    zone = table.zone if isinstance(table, Templates) else CITY_TIME
    lang = language if language in (*LANGUAGES, fallback) else fallback
    by_language = table.get(kind_name(kind), {})
    district = params.get("district_name")
    variants = [lang] if district else [f"{lang}_no_district", lang]
    if not district and params.get("team"):
        variants.insert(0, f"{lang}_team")
    if params.get("reporters_count") == "1":
        # the one reporter, reporting again: no "1 neighbours reported it"
        variants.insert(0, f"{lang}_one")
    template = next((by_language[v] for v in variants if v in by_language), None)
    if template is None:
        raise TemplateError(f"no {lang} template for reply kind {ReplyKind.Name(kind)}")
    values = dict(params)
    if district:
        values["district_name_ca"] = of_district("ca", district)
        values["district_name_es"] = of_district("es", district)
    if params.get("expected_datetime") and (due := _due(params["expected_datetime"], zone)):
        values["due"] = due
        template += by_language.get(f"{lang}_due", "")
    try:
        text = template.format_map(values)
    except KeyError as exc:
        raise TemplateError(f"reply kind {ReplyKind.Name(kind)} needs parameter {exc}") from None
    if params.get("photo_url"):
        text = f"{text} {params['photo_url']}"
    return text, lang


# One account as a reply mentions it: @name, or @name@server (Mastodon's remote accounts; a
# server may have a port).
_MENTION: Final = re.compile(r"@[\w.-]+(?:@[\w-]+(?:\.[\w-]+)+(?::\d{1,5})?)?")


def compose(
    kind: ReplyKind.ValueType,
    language: str,
    params: Mapping[str, str],
    *,
    platform: str,
    mention: str = "",
    photo_attached: bool = False,
    table: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[str, str]:
    """The reply as posted on `platform`: after `mention` (the citizen's handle, where the
    platform needs it to notify them), within the platform's length limit. A long note is
    shortened first; the request number, the mention and the worker's handle are never cut.
    With `photo_attached` the photo goes as media, not as a link in the text."""
    if mention and not _MENTION.fullmatch(mention):
        # The handle comes with the post (a bridge writes it): more than one handle would put
        # its words, links and other people's names at the head of the city's reply.
        raise ValueError(
            f"the author's handle {mention[:80]!r} is not one handle (@name or @name@server): "
            "a reply mentions its author alone"
        )
    values = dict(params)
    if photo_attached:
        values.pop("photo_url", None)
    prefix = f"{mention} " if mention else ""
    text, lang = render(kind, language, values, table)
    limit = LIMITS.get(platform)
    if limit is None or limit.fits(prefix + text):
        return prefix + text, lang
    note = values.get("note", "")
    if note:
        # The longest start of the note (cut between words) that lets the reply fit.
        words = note.split(" ")
        for n in range(len(words) - 1, 0, -1):
            values["note"] = " ".join(words[:n]).rstrip(" ,;:.") + "…"
            text, lang = render(kind, language, values, table)
            if limit.fits(prefix + text):
                return prefix + text, lang
    keep = [f"#{values.get('service_request_id', '')}", mention, values.get("worker", "")]
    return shorten(prefix + text, limit, [k for k in keep if k.strip("#")]), lang
