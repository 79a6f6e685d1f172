"""A post's service code, place, language, urgency and whether to act on it.

Two sources are combined. The trained service model (plaza_classifier.model) knows the services
Madrid's and Bengaluru's reports are labelled with, in Spanish and English, and whether a post
is a request at all. The keyword lexicon (keywords.py) knows every service, noise and
public_space included, in Catalan too, and the cues of urgency, complaint and chatter.

The combination rule, its settings chosen on the validation split (MODEL_CARD.md):
- service: a citizen's valid service_code_hint wins. Otherwise each service scores
  log(model probability) + `lexicon_weight` x (the lexicon's cues for it), and the best wins: a
  confident model needs several cues against it to be overruled, an unsure one gives way to a
  single cue, and cues that agree with the model reinforce it. Services the model never learnt
  (noise, public_space) count with probability `untrained_floor` when the lexicon names them, and
  are not in the running otherwise (train.tune_rule: how the floor is chosen, when Madrid's and
  Bengaluru's reports, which have neither, cannot reward it). The confidence is the winner's
  share of the combined scores (softmax). When the winner has no cue and the model gives it less
  than `no_service_below`, the post is "other": nobody knows what it is about. Catalan posts have
  their own settings ("lexicon_weight.ca"): the model learnt from Spanish (Madrid) and English
  (Bengaluru) reports, so on Catalan the lexicon deserves more weight.
- actionable: danger (an urgency cue) always is: a manager must see it. Otherwise the cues are
  evidence added to the model's log-odds that the post is a request: + `complaint_weight` for a
  complaint cue (request, broken), + `service_cue_weight` when the lexicon names a service,
  and + `untrained_cue_weight` more when one it names is a code the model never learnt (noise,
  public_space), - `chatter_weight` for a chatter cue (thanks, praise, jokes, politics) of the
  post's own language; the post is actionable when the result reaches the log-odds of
  `actionable_at`. A lookalike cue (keywords.LOOKALIKE: a song, headphones, a drill bought) says
  the post's noise and public_space words are no nuisance: they then add nothing, and the model
  alone judges whether the rest of the post asks for something. A cue only moves the model's
  estimate: "Hola, gracias. Hay un bache enorme" is not dropped for its "gracias" when the rest
  of it is plainly a request. The weights are
  chosen on validation against the model alone (weights 0), which the grid includes. The model
  never saw a noise complaint as a request (no data labels one, and Bengaluru's non-requests
  are tweets full of loud music and sleepless nights), so its doubt about one says nothing:
  train.tune_rule says how much the lexicon's word counts for instead.
- a post with nothing readable (emoji, punctuation, only links and @mentions, a script the model
  never learnt) is "other" and not actionable: nobody can tell what it asks, and the model's
  intercept alone would open a request for it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Final, Literal

from plaza.city import City, Location, fold
from plaza.city.streets import fold_address_text, number_ends_clause
from plaza.taxonomy import OTHER, load_taxonomy

from plaza_classifier import keywords
from plaza_classifier.features import readable_part
from plaza_classifier.language import detect_language
from plaza_classifier.lexicon import Lexicon
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
    # The street and number the text names, in the register's official form ("Carrer de Verdi
    # 12"), for a post without an address of its own in a city with a street register; else "".
    street_address: str = ""


# Service and complaint patterns of every language apply to every post: tweets mix languages
# and detection of short ones is unreliable, and a stem like "contenidor" means one thing in any
# of them. Chatter cues are short everyday words that mean something else in another language
# (English "mayor" is Spanish "older" and "calle Mayor"): they count only in the language they
# belong to, or in any when the post's language is unknown. Every pattern goes into one Lexicon,
# which finds all of them in one pass over the post's words (see lexicon.py).
_CUES: Final = (
    "urgent",
    "traffic_light",
    "broken",
    "request",
    "chatter",
    "lookalike",
    "nuisance_source",
)
_ANY_LANGUAGE: Final[frozenset[str]] = frozenset()


def _entries() -> list[tuple[str, str, float, frozenset[str]]]:
    """(pattern, what it is a cue for: a service code or one of _CUES, weight, the languages it
    counts in: empty for all)."""
    entries: list[tuple[str, str, float, frozenset[str]]] = []
    for code, by_language in keywords.SERVICE_KEYWORDS.items():
        for p in dict.fromkeys(p for patterns in by_language.values() for p in patterns):
            entries.append((p, code, 0.5 if p in keywords.WEAK else 1.0, _ANY_LANGUAGE))
    tables = {
        "urgent": keywords.URGENT,
        "broken": keywords.BROKEN,
        "request": keywords.REQUEST,
        "lookalike": keywords.LOOKALIKE,
        "nuisance_source": keywords.NUISANCE_SOURCE,
    }
    for cue, table in tables.items():
        for p in dict.fromkeys(p for patterns in table.values() for p in patterns):
            entries.append((p, cue, 1.0, _ANY_LANGUAGE))
    chatter: dict[str, set[str]] = {}
    for language, patterns in keywords.CHATTER.items():
        for p in patterns:
            chatter.setdefault(p, set()).add(language)
    entries.extend((p, "chatter", 1.0, frozenset(languages)) for p, languages in chatter.items())
    entries.append((keywords.TRAFFIC_LIGHT, "traffic_light", 1.0, _ANY_LANGUAGE))
    return entries


_ENTRIES: Final = _entries()
_LEXICON: Final = Lexicon([pattern for pattern, _, _, _ in _ENTRIES])
_SERVICE_CODES: Final = tuple(keywords.SERVICE_KEYWORDS)
_READABLE: Final = re.compile(r"[a-z]{2}")  # two Latin letters in a row, in folded text


@dataclass(frozen=True, slots=True)
class Signals:
    """What the lexicon, the cues and the model say about one post, before any rule."""

    lexicon_scores: dict[str, float]
    urgent: bool
    complaint: bool
    chatter: bool
    prediction: Prediction | None
    language: str = "other"
    readable: bool = True  # some Latin words, beyond links, @mentions, emoji and punctuation
    # a song, headphones, a podcast...: the post's noise words are no nuisance (keywords.LOOKALIKE)
    lookalike: bool = False


@dataclass(frozen=True, slots=True)
class PostInput:
    """One post for Classifier.classify_batch: the arguments of Classifier.classify."""

    text: str
    lat: float | None = None
    lon: float | None = None
    language_hint: str = ""
    service_code_hint: str = ""
    address: str = ""


def _signals(text: str, folded: str, prediction: Prediction | None, language_hint: str) -> Signals:
    """The signals of a post: `text` as written (for its language), `folded` its readable_part
    folded and lowered."""
    scores = dict.fromkeys(_SERVICE_CODES, 0.0)
    cues: set[str] = set()
    language = detect_language(text, language_hint)
    for number in _LEXICON.matches(folded):
        _, what, weight, languages = _ENTRIES[number]
        if what in scores:
            scores[what] += weight
        elif not languages or language in languages or language == "other":
            cues.add(what)
    urgent = "urgent" in cues or {"traffic_light", "broken"} <= cues
    return Signals(
        lexicon_scores=scores,
        urgent=urgent,
        complaint=urgent or bool(cues & {"request", "broken"}),
        chatter="chatter" in cues,
        prediction=prediction,
        language=language,
        readable=_READABLE.search(folded) is not None,
        # the neighbours' album at full volume is a nuisance (keywords.NUISANCE_SOURCE)
        lookalike="lookalike" in cues and "nuisance_source" not in cues,
    )


class Classifier:
    """Classifies posts with a loaded service model (or the lexicon alone, model=None)."""

    def __init__(self, model: ServiceModel | None) -> None:
        self.model = model
        self.model_version = model.version if model is not None else MODEL_VERSION
        self._settings: Mapping[str, float] = model.settings if model is not None else {}

    def signals(self, text: str, language_hint: str = "") -> Signals:
        return self._signals_of(text, fold(readable_part(text), keep_case=True), language_hint)

    def _signals_of(self, text: str, cased: str, language_hint: str) -> Signals:
        """signals() of a text whose readable_part is already folded with its case kept (the
        model reads it lowered)."""
        folded = cased.lower()
        prediction = self.model.predict(folded) if self.model is not None else None
        return _signals(text, folded, prediction, language_hint)

    def classify(
        self,
        text: str,
        city: City,
        *,
        lat: float | None = None,
        lon: float | None = None,
        language_hint: str = "",
        service_code_hint: str = "",
        address: str = "",
    ) -> Classification:
        """Classifies one post. A valid service_code_hint (the citizen chose it) wins; a point
        inside the city beats a place its address names (an Open311 address_string), which
        beats a place named in the text. A point that is not a pair of finite numbers (NaN,
        infinity) counts as no point."""
        cased = fold(readable_part(text), keep_case=True)  # once, for the model and the places
        signals = self._signals_of(text, cased, language_hint)
        point = _point(lat, lon)
        located = city.locate(*point) if point is not None else None
        return self._decide(signals, cased, city, located, service_code_hint, address, text)

    def classify_batch(self, posts: Sequence[PostInput], city: City) -> list[Classification]:
        """classify() of many posts, with the same answers: the model scores them all in one
        matrix product, which saves the per-post cost of numpy's calls, and their points are
        looked up in the city's polygons together (`plaza classify`, the service's batches)."""
        cased = [fold(readable_part(post.text), keep_case=True) for post in posts]
        folded = [text.lower() for text in cased]
        if self.model is not None:
            predictions: Sequence[Prediction | None] = self.model.predict_batch(folded)
        else:
            predictions = [None] * len(posts)
        geotagged = [
            (i, point)
            for i, post in enumerate(posts)
            if (point := _point(post.lat, post.lon)) is not None
        ]
        located: list[Location | None] = [None] * len(posts)
        found = city.locate_many([point for _, point in geotagged])
        for (i, _), location in zip(geotagged, found, strict=True):
            located[i] = location
        return [
            self._decide(
                _signals(post.text, text, prediction, post.language_hint),
                cased_text,
                city,
                where,
                post.service_code_hint,
                post.address,
                post.text,
            )
            for post, text, cased_text, prediction, where in zip(
                posts, folded, cased, predictions, located, strict=True
            )
        ]

    def _decide(
        self,
        signals: Signals,
        cased: str,
        city: City,
        located: Location | None,
        service_code_hint: str,
        address: str = "",
        text: str = "",
    ) -> Classification:
        """The classification of a post from its signals; `located` is where its point lies
        (None: no point, or one outside the city), else the place its address names, else the
        place its text (`cased`: folded with its case kept) names. A post without an address
        gets the street and number its text names, which place no district (streets cross
        districts: the Diagonal five)."""
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
            location=located
            or (city.find_in_text(address) if address else None)
            or city.find_in_folded(cased)
            or NO_LOCATION,
            language=signals.language,
            urgency="urgent" if signals.urgent else "normal",
            model_version=self.model_version,
            street_address=_street(city, cased, text) if not address else "",
        )

    @staticmethod
    def service_of(signals: Signals, settings: Mapping[str, float]) -> tuple[str, float]:
        """The service code and its confidence by the combination rule (module docstring)."""
        scores = signals.lexicon_scores
        prediction = signals.prediction
        if not signals.readable:
            return OTHER, 0.0
        if prediction is None:
            return _lexicon_best(scores)
        probabilities = prediction.probabilities
        language = signals.language
        weight = _setting(settings, "lexicon_weight", language)
        floor = _setting(settings, "untrained_floor", language)
        # a code the model never learnt is in the running only when the lexicon names it: the
        # floor stands for the model's silence on it, not for a prior that the post is about it
        combined = {
            code: math.log(max(probabilities.get(code, floor), 1e-9)) + weight * score
            for code, score in scores.items()
            if code in probabilities or score > 0
        }
        best = max(combined, key=lambda code: combined[code])  # first of equals: taxonomy order
        top = combined[best]
        confidence = 1.0 / sum(math.exp(value - top) for value in combined.values())
        if scores[best] == 0 and probabilities.get(best, 0.0) < _setting(
            settings, "no_service_below", language
        ):
            return OTHER, 0.0  # an unsure model and no cue for its guess: nobody knows
        return best, round(min(CONFIDENCE_CAP, confidence), 2)

    @staticmethod
    def actionable_of(
        signals: Signals, settings: Mapping[str, float], *, cue_only: bool = False
    ) -> bool:
        """Whether the post is a request, by the combination rule (module docstring); cue_only
        is the lexicon's rule alone, kept to measure what the model adds: a complaint or a named
        service (a chatter cue cannot tell "gracias, hay un bache" from "gracias por arreglar
        el bache", and a request dropped costs more than one a manager closes)."""
        if not signals.readable:
            return False
        if signals.urgent:
            return True
        cued = any(score > 0 for score in signals.lexicon_scores.values())
        if signals.prediction is None or cue_only:
            return signals.complaint or cued
        return evidence(signals, settings) >= _logit(settings["actionable_at"])


def evidence(signals: Signals, settings: Mapping[str, float]) -> float:
    """The log-odds that a post is a request: the model's, moved by the cues' weights (module
    docstring). A post without a model prediction has even odds before its cues."""
    prediction = signals.prediction
    odds = 0.0 if prediction is None else _logit(prediction.actionable)
    if signals.complaint:
        odds += settings.get("complaint_weight", 0.0)
    named = [code for code, score in signals.lexicon_scores.items() if score > 0]
    if signals.lookalike and prediction is not None:
        # "noise-cancelling headphones": the noise word names what is listened to or bought, not
        # a nuisance, and only the model judges whether the rest of the post asks for something
        named = [code for code in named if code in prediction.probabilities]
    if named:
        odds += settings.get("service_cue_weight", 0.0)
        if prediction is not None and any(c not in prediction.probabilities for c in named):
            odds += settings.get("untrained_cue_weight", 0.0)
    if signals.chatter:
        odds -= settings.get("chatter_weight", 0.0)
    return odds


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def _street(city: City, cased: str, text: str) -> str:
    """The street and number a text names, in the official form, or "": read in `cased` (the
    text folded, case kept), unless a number in it ends a clause, which folding loses ("Verdi
    12, contenidors plens": 12 is a house number, not a count of bins)."""
    if city.streets is None:
        return ""
    if number_ends_clause(text):
        found = city.find_street_in_folded(fold_address_text(readable_part(text)))
    else:
        found = city.find_street_in_folded(cased.lower())
    return "" if found is None else str(found)


def _point(lat: float | None, lon: float | None) -> tuple[float, float] | None:
    """(lat, lon) when both are given and finite, else None: a NaN lies in no polygon, and the
    polygon lookup raises on it."""
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    return lat, lon


def _setting(settings: Mapping[str, float], name: str, language: str) -> float:
    """A setting of the rule for posts in language ("lexicon_weight.ca"), else for all posts."""
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
    address: str = "",
) -> Classification:
    """Classifies one post with the packaged model (see Classifier.classify)."""
    return default_classifier().classify(
        text,
        city,
        lat=lat,
        lon=lon,
        language_hint=language_hint,
        service_code_hint=service_code_hint,
        address=address,
    )


def _lexicon_best(scores: Mapping[str, float]) -> tuple[str, float]:
    """The best-scoring service and a confidence; ("other", 0.0) when nothing matched."""
    total = sum(scores.values())
    if total == 0:
        return OTHER, 0.0
    best = max(scores, key=lambda code: scores[code])  # first of equals: taxonomy order
    share = scores[best] / total
    strength = 1 - 0.5 ** scores[best]
    return best, round(min(0.95, 0.35 + 0.6 * share * strength), 2)
