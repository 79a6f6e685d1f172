"""The keyword baseline: a post's service code, place, language, urgency and whether to act on it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from plaza.city import City, Location, fold
from plaza.taxonomy import OTHER, load_taxonomy

from plaza_classifier import keywords
from plaza_classifier.language import detect_language

MODEL_VERSION: Final = "keywords-1"

NO_LOCATION: Final = Location(district=None, barri=None, source="none", confidence=0.0)

Urgency = Literal["normal", "urgent"]


@dataclass(frozen=True, slots=True)
class Classification:
    service_code: str
    service_confidence: float
    actionable: bool
    location: Location
    language: str
    urgency: Urgency
    model_version: str


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(f"(?:{p})" for p in patterns) + ")")


def _all_languages(table: Mapping[str, tuple[str, ...]]) -> re.Pattern[str]:
    return _compile(p for patterns in table.values() for p in patterns)


# Patterns of every language apply to every post: tweets mix languages and detection of short
# ones is unreliable. (pattern, weight) per service, in taxonomy order so ties go to the first.
_SERVICE_PATTERNS: Final[dict[str, list[tuple[re.Pattern[str], float]]]] = {
    code: [
        (re.compile(rf"\b(?:{p})"), 0.5 if p in keywords.WEAK else 1.0)
        for p in dict.fromkeys(p for patterns in by_language.values() for p in patterns)
    ]
    for code, by_language in keywords.SERVICE_KEYWORDS.items()
}
_URGENT: Final = _all_languages(keywords.URGENT)
_TRAFFIC_LIGHT: Final = _compile([keywords.TRAFFIC_LIGHT])
_BROKEN: Final = _all_languages(keywords.BROKEN)
_REQUEST: Final = _all_languages(keywords.REQUEST)
_CHATTER: Final = _all_languages(keywords.CHATTER)


def classify(
    text: str,
    city: City,
    *,
    lat: float | None = None,
    lon: float | None = None,
    language_hint: str = "",
    service_code_hint: str = "",
) -> Classification:
    """Classifies one post. A valid service_code_hint (the citizen chose it) wins; a point inside
    the city beats a place named in the text."""
    folded = fold(text)
    urgent = bool(_URGENT.search(folded)) or bool(
        _TRAFFIC_LIGHT.search(folded) and _BROKEN.search(folded)
    )
    complaint = urgent or bool(_REQUEST.search(folded) or _BROKEN.search(folded))

    if service_code_hint in load_taxonomy():
        service_code, confidence, actionable = service_code_hint, 1.0, True
    else:
        service_code, confidence = _service(folded)
        cued = service_code != OTHER or confidence > 0
        chatter = bool(_CHATTER.search(folded))
        actionable = complaint if chatter else cued or complaint
        if service_code == OTHER and confidence == 0 and actionable:
            confidence = 0.4

    return Classification(
        service_code=service_code,
        service_confidence=confidence,
        actionable=actionable,
        location=_location(text, city, lat, lon),
        language=detect_language(text, language_hint),
        urgency="urgent" if urgent else "normal",
        model_version=MODEL_VERSION,
    )


def _service(folded: str) -> tuple[str, float]:
    """The best-scoring service and a confidence; ("other", 0.0) when nothing matched."""
    scores = {
        code: sum(weight for pattern, weight in patterns if pattern.search(folded))
        for code, patterns in _SERVICE_PATTERNS.items()
    }
    total = sum(scores.values())
    if total == 0:
        return OTHER, 0.0
    best = max(scores, key=lambda code: scores[code])  # first of equals: taxonomy order
    share = scores[best] / total
    strength = 1 - 0.5 ** scores[best]
    return best, round(min(0.95, 0.35 + 0.6 * share * strength), 2)


def _location(text: str, city: City, lat: float | None, lon: float | None) -> Location:
    if lat is not None and lon is not None:
        located = city.locate(lat, lon)
        if located is not None:
            return located
    return city.find_in_text(text) or NO_LOCATION
