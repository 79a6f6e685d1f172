"""Posts that only sound like a noise complaint: headphones, a song, an album, sleepless nights
before an exam. A noise cue weighs untrained_cue_weight towards a request, and such posts were
requests for its sake."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from plaza.city import City
from plaza_classifier import train
from plaza_classifier.classify import Classifier, Signals, classify, default_classifier, evidence
from plaza_classifier.evaluate import NOISE_CHECK, load_check
from plaza_classifier.model import Prediction
from plaza_classifier.train import EXAMPLES, NOT_ACTIONABLE

# Written before the lookalike cues, frozen since: 26 posts that only sound like noise and 23
# noise and public_space complaints in ca/es/en. Its figures compare the rule before and after
# only while it stays as it was written.
LOOKALIKES = Path(__file__).with_name("data") / "noise_lookalikes.jsonl"
LOOKALIKES_SHA256 = "2e01246c9f96c125d05529b1b7768b6c3b624b71e5bc5d2197fedf32452dc14f"


def _decisions(path: Path) -> tuple[list[bool], list[bool]]:
    """Each post's truth (a request?) and the shipped rule's answer."""
    posts, _ = load_check(path)
    classifier = default_classifier()
    assert classifier.model is not None
    settings = classifier.model.settings
    truth = [label != NOT_ACTIONABLE for label in posts.labels]
    decided = [Classifier.actionable_of(classifier.signals(t), settings) for t in posts.texts]
    return truth, decided


def _false_alarms_and_found(path: Path) -> tuple[int, int]:
    truth, decided = _decisions(path)
    false_alarms = sum(d and not t for t, d in zip(truth, decided, strict=True))
    found = sum(d and t for t, d in zip(truth, decided, strict=True))
    return false_alarms, found


def test_the_lookalike_set_is_frozen_and_nobody_trains_on_it() -> None:
    assert hashlib.sha256(LOOKALIKES.read_bytes()).hexdigest() == LOOKALIKES_SHA256
    posts, languages = load_check(LOOKALIKES)
    assert len(posts) >= 40 and set(languages) == {"ca", "es", "en"}
    assert posts.labels.count(NOT_ACTIONABLE) >= 20
    examples = {json.loads(line)["text"] for line in EXAMPLES.read_text("utf-8").splitlines()}
    old_check, _ = load_check(NOISE_CHECK)
    assert not (examples | set(old_check.texts)) & set(posts.texts)
    assert LOOKALIKES.name not in Path(train.__file__).read_text("utf-8")


def test_the_lookalike_set_has_fewer_false_alarms_and_every_request_it_had() -> None:
    # before the lookalike cues: 17 of 26 false alarms, 22 of 23 requests found
    false_alarms, found = _false_alarms_and_found(LOOKALIKES)
    assert false_alarms <= 9
    assert found >= 22


def test_the_first_check_set_has_fewer_false_alarms_and_every_request_it_had() -> None:
    # before: 8 of 28 false alarms ("No puedo dormir, mañana tengo examen", the headphones the
    # Spanish post asks for), all 36 requests found
    false_alarms, found = _false_alarms_and_found(NOISE_CHECK)
    assert false_alarms <= 7
    assert found == 36


@pytest.mark.parametrize(
    "text",
    [
        "Turn it up, this track is so loud and so good",
        "Me encantan mis auriculares nuevos con cancelación de ruido",
        "Just bought earplugs and headphones for the plane, so noisy in there",
        "Can't sleep, the exam is tomorrow",
        "I can't sleep, big interview in the morning",
        "No puedo dormir, mañana me caso y estoy hecha un flan",
    ],
)
def test_a_post_that_only_sounds_like_noise_is_not_a_request(city: City, text: str) -> None:
    assert not classify(text, city).actionable


@pytest.mark.parametrize(
    "text",
    [
        # a song is the writer's ("this song") to be a lookalike: the neighbours' is a nuisance
        "The neighbours play the same song at full volume all night",
        "Los vecinos ponen la misma canción a todo volumen toda la noche",
        "Els veïns posen la mateixa cançó a tot volum tota la nit",
        # one's own sleepless night with its cause, or somebody else's
        "I can't sleep because of the bar downstairs",
        "No puedo dormir con la música del bar de abajo",
        "No puc dormir pel soroll de la discoteca",
        "we can't sleep",
        # an album or a song somebody else plays (a bar, a club, the neighbours) at night
        "Ruido de la discoteca: ponen el último disco de Bad Bunny a todo volumen hasta las 5",
        "El bar de abajo pone el nuevo disco de Rosalía a todo volumen hasta las 3",
        "El bar de baix posa el nou disc de la Rosalía a tot volum fins a les 3",
        "Els veïns fan festa cada nit amb música a tot volum, sempre el mateix àlbum",
        "Even with noise cancelling headphones I can hear the bar on Verdi street until 4am",
    ],
)
def test_a_noise_complaint_near_a_lookalike_still_reaches_a_manager(city: City, text: str) -> None:
    result = classify(text, city)
    assert (result.service_code, result.actionable) == ("noise", True)


@pytest.mark.parametrize(
    ("text", "cued"),
    [
        ("No puedo dormir, mañana tengo examen", False),
        ("No puc dormir pensant en les vacances", False),
        ("I can't sleep, too much coffee", False),
        ("Can't sleep, too excited", False),
        ("No puedo dormir con los camiones de la basura", True),
        ("No puc dormir amb els camions de la brossa", True),
        ("I can't sleep with the bins being emptied at 4am", True),
        ("the kids can't sleep", True),
        ("no nos dejan dormir", True),
        ("no ens deixen dormir", True),
    ],
)
def test_ones_own_sleepless_night_is_a_noise_cue_only_with_its_cause(text: str, cued: bool) -> None:
    assert (Classifier(None).signals(text).lexicon_scores["noise"] > 0) is cued


@pytest.mark.parametrize(
    ("text", "lookalike"),
    [
        ("noise-cancelling headphones", True),
        ("auriculars amb cancel·lació de soroll", True),
        ("ruido blanco para dormir al bebé", True),
        ("Escucha mi canción nueva", True),
        ("He comprat un trepant", True),
        ("the same song all night", False),
        ("la música del bar a todo volumen", False),
        ("el bar posa el nou disc a tot volum", False),  # somebody else's album
        ("los vecinos ponen su nuevo disco", False),
        ("my neighbours' new album, all night", False),
    ],
)
def test_the_lexicon_knows_what_only_sounds_like_noise(text: str, lookalike: bool) -> None:
    assert Classifier(None).signals(text).lookalike is lookalike


def _noise(actionable: float, *, lookalike: bool, also: str = "") -> Signals:
    scores = {"pavement": 0.0, "cleaning": 0.0, "noise": 1.0}
    if also:
        scores[also] = 1.0
    return Signals(
        lexicon_scores=scores,
        urgent=False,
        complaint=False,
        chatter=False,
        prediction=Prediction({"pavement": 0.5, "cleaning": 0.5}, actionable),
        lookalike=lookalike,
    )


def test_a_lookalike_cue_leaves_the_model_alone_with_a_noise_word() -> None:
    rule = {"actionable_at": 0.6, "service_cue_weight": 0.5, "untrained_cue_weight": 2.0}
    heard = _noise(0.3, lookalike=False)
    bought = _noise(0.3, lookalike=True)
    assert evidence(heard, rule) == pytest.approx(evidence(bought, rule) + 2.5)
    assert evidence(bought, rule) == pytest.approx(
        evidence(replace(bought, lexicon_scores={}), rule)
    )
    assert Classifier.actionable_of(heard, rule)
    assert not Classifier.actionable_of(bought, rule)
    # a cue of a service the model knows still counts: "he comprat un trepant" does not hide
    # "i el contenidor és ple"
    both = _noise(0.3, lookalike=True, also="cleaning")
    assert evidence(both, rule) == pytest.approx(evidence(bought, rule) + 0.5)
