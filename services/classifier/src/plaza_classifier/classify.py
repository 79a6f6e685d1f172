"""A post's service code, place, language, urgency and whether to act on it.

Two sources are combined. The trained service model (plaza_classifier.model) knows the services
Madrid's and Bengaluru's reports are labelled with, in Spanish and English, and whether a post
is a request at all. The keyword lexicon (keywords.py) knows every service, noise and
public_space included, in Catalan too, and the cues of urgency, complaint and chatter.

The combination rule, its thresholds chosen on the validation split (MODEL_CARD.md):
- service: a citizen's valid service_code_hint wins. A strong lexicon cue for a service the
  model was never trained on (noise, public_space) wins, and so do the lexicon's cues for one
  service when they weigh at least `lexicon_wins` and twice any other service's (a place word
  such as "park" weighs half, so "broken benches in the park" stays street_furniture). Otherwise the model wins when its
  probability reaches `model_wins`. Otherwise the two are blended, `blend` * model probability
  + (1 - `blend`) * the lexicon's share of cues; when the lexicon found nothing, the model's
  guess stands if it reaches `no_service_below`, and the post is "other" below it. These four
  thresholds are chosen per detected language: the model learnt from Spanish (Madrid) and
  English (Bengaluru) reports, so on Catalan or on a Barcelona post unlike those it deserves
  less trust than the lexicon.
- actionable: a complaint cue (request, broken, danger) makes a post actionable; a chatter cue
  (thanks, praise, politics) without one makes it not actionable. Otherwise it is actionable
  when the model's probability reaches `actionable_at` or the lexicon names a service.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Final, Literal

from plaza.city import City, Location, fold
from plaza.taxonomy import OTHER, load_taxonomy

from plaza_classifier import keywords
from plaza_classifier.language import detect_language
from plaza_classifier.model import Prediction, ServiceModel

MODEL_VERSION: Final = "keywords-1"  # the lexicon alone, when no model is loaded
CONFIDENCE_CAP: Final = 0.95  # only a citizen's own choice of service is certain

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
# One alternation per service finds the services with any cue; only their patterns are then
# counted one by one. Same scores as counting every pattern, at a fifth of the cost.
_SERVICE_ANY: Final[dict[str, re.Pattern[str]]] = {
    code: _compile(dict.fromkeys(p for patterns in by_language.values() for p in patterns))
    for code, by_language in keywords.SERVICE_KEYWORDS.items()
}
_URGENT: Final = _all_languages(keywords.URGENT)
_TRAFFIC_LIGHT: Final = _compile([keywords.TRAFFIC_LIGHT])
_BROKEN: Final = _all_languages(keywords.BROKEN)
_REQUEST: Final = _all_languages(keywords.REQUEST)
_CHATTER: Final = _all_languages(keywords.CHATTER)


@dataclass(frozen=True, slots=True)
class Signals:
    """What the lexicon, the cues and the model say about one post, before any rule."""

    lexicon_scores: dict[str, float]
    urgent: bool
    complaint: bool
    chatter: bool
    prediction: Prediction | None
    language: str = "other"


class Classifier:
    """Classifies posts with a loaded service model (or the lexicon alone, model=None)."""

    def __init__(self, model: ServiceModel | None) -> None:
        self.model = model
        self.model_version = model.version if model is not None else MODEL_VERSION
        self._settings: Mapping[str, float] = model.settings if model is not None else {}

    def signals(self, text: str, language_hint: str = "") -> Signals:
        folded = fold(text)
        urgent = bool(_URGENT.search(folded)) or bool(
            _TRAFFIC_LIGHT.search(folded) and _BROKEN.search(folded)
        )
        return Signals(
            lexicon_scores=_lexicon_scores(folded),
            urgent=urgent,
            complaint=urgent or bool(_REQUEST.search(folded) or _BROKEN.search(folded)),
            chatter=bool(_CHATTER.search(folded)),
            prediction=self.model.predict(folded) if self.model is not None else None,
            language=detect_language(text, language_hint),
        )

    def classify(
        self,
        text: str,
        city: City,
        *,
        lat: float | None = None,
        lon: float | None = None,
        language_hint: str = "",
        service_code_hint: str = "",
    ) -> Classification:
        """Classifies one post. A valid service_code_hint (the citizen chose it) wins; a point
        inside the city beats a place named in the text."""
        signals = self.signals(text, language_hint)
        if service_code_hint in load_taxonomy():
            service_code, confidence, actionable = service_code_hint, 1.0, True
        else:
            service_code, confidence = self.service_of(signals, self._settings)
            actionable = self.actionable_of(signals, self._settings)
            if service_code == OTHER and confidence == 0 and actionable:
                confidence = 0.4
        return Classification(
            service_code=service_code,
            service_confidence=confidence,
            actionable=actionable,
            location=_location(text, city, lat, lon),
            language=signals.language,
            urgency="urgent" if signals.urgent else "normal",
            model_version=self.model_version,
        )

    @staticmethod
    def service_of(signals: Signals, settings: Mapping[str, float]) -> tuple[str, float]:
        """The service code and its confidence by the combination rule (module docstring)."""
        lexicon_code, lexicon_confidence = _lexicon_best(signals.lexicon_scores)
        prediction = signals.prediction
        if prediction is None:
            return lexicon_code, lexicon_confidence
        probabilities = prediction.probabilities
        if (
            lexicon_code not in probabilities
            and lexicon_code != OTHER
            and signals.lexicon_scores[lexicon_code] >= 1
        ):
            return lexicon_code, lexicon_confidence
        total = sum(signals.lexicon_scores.values())
        best_score = signals.lexicon_scores.get(lexicon_code, 0.0)
        runner_up = max(
            (score for code, score in signals.lexicon_scores.items() if code != lexicon_code),
            default=0.0,
        )
        if (
            lexicon_code != OTHER
            and best_score >= 2 * runner_up
            and best_score >= _setting(settings, "lexicon_wins", signals.language)
        ):
            return lexicon_code, lexicon_confidence
        model_code = max(probabilities, key=lambda code: probabilities[code])
        model_confidence = probabilities[model_code]
        capped = round(min(CONFIDENCE_CAP, model_confidence), 2)
        if model_confidence >= _setting(settings, "model_wins", signals.language):
            return model_code, capped
        if total == 0:
            if model_confidence >= _setting(settings, "no_service_below", signals.language):
                return model_code, capped
            return OTHER, 0.0
        blend = _setting(settings, "blend", signals.language)
        combined = {
            code: blend * probabilities.get(code, 0.0) + (1 - blend) * score / total
            for code, score in signals.lexicon_scores.items()
        }
        best = max(combined, key=lambda code: combined[code])  # first of equals: taxonomy order
        # a source that agrees with the blend vouches for it with its own confidence
        vouched = max(
            combined[best],
            lexicon_confidence if best == lexicon_code else 0.0,
            model_confidence if best == model_code else 0.0,
        )
        return best, round(min(CONFIDENCE_CAP, vouched), 2)

    @staticmethod
    def actionable_of(
        signals: Signals, settings: Mapping[str, float], *, cue_only: bool = False
    ) -> bool:
        """Whether the post is a request, by the combination rule (module docstring); cue_only
        is the lexicon's rule alone, kept to measure what the model adds."""
        cued = any(score > 0 for score in signals.lexicon_scores.values())
        if signals.complaint:
            return True
        if signals.chatter:
            return False
        if signals.prediction is None or cue_only:
            return cued
        return signals.prediction.actionable >= settings["actionable_at"] or cued


def _setting(settings: Mapping[str, float], name: str, language: str) -> float:
    """A threshold of the rule for posts in language ("model_wins.ca"), else for all posts."""
    return settings.get(f"{name}.{language}", settings[name])


@cache
def default_classifier() -> Classifier:
    """The classifier with the packaged model, loaded on first use (never at import)."""
    return Classifier(ServiceModel.load())


def classify(
    text: str,
    city: City,
    *,
    lat: float | None = None,
    lon: float | None = None,
    language_hint: str = "",
    service_code_hint: str = "",
) -> Classification:
    """Classifies one post with the packaged model (see Classifier.classify)."""
    return default_classifier().classify(
        text,
        city,
        lat=lat,
        lon=lon,
        language_hint=language_hint,
        service_code_hint=service_code_hint,
    )


def _lexicon_scores(folded: str) -> dict[str, float]:
    """Weighted count of the lexicon's cues per service code, in taxonomy order."""
    return {
        code: sum(weight for pattern, weight in patterns if pattern.search(folded))
        if _SERVICE_ANY[code].search(folded)
        else 0.0
        for code, patterns in _SERVICE_PATTERNS.items()
    }


def _lexicon_best(scores: Mapping[str, float]) -> tuple[str, float]:
    """The best-scoring service and a confidence; ("other", 0.0) when nothing matched."""
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
