"""What the classifier's audit found: cues that vetoed requests, posts with nothing to read,
points that are not numbers, examples split apart from their translations, a flattering F1, a
service rule chosen on figures that cannot see noise or public_space, and an actionable head
that never saw a noise complaint as a request."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from plaza.city import City, fold
from plaza.contracts import Post, PostReceived, envelope
from plaza_classifier import features, train
from plaza_classifier.classify import (
    Classifier,
    PostInput,
    Signals,
    classify,
    default_classifier,
    evidence,
)
from plaza_classifier.evaluate import NOISE_CHECK, load_check
from plaza_classifier.features import readable_part
from plaza_classifier.handler import ClassifyPost
from plaza_classifier.model import Prediction, ServiceModel
from plaza_classifier.train import (
    ACTIONABLE_TOLERANCE,
    EXAMPLES,
    SERVICE_TOLERANCE,
    Matrix,
    balanced_f1,
    choose_service_rule,
    choose_untrained_cue_weight,
    load_examples,
)

# --- a chatter cue weighs against a request, it does not veto one ----------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Hola, gracias de antemano. Hay un bache enorme en la calle Mallorca",
        "Hi, there's a huge pothole on Carrer de Sants. Thanks!",
        "Bon dia! Els contenidors del carrer Blai estan plens a vessar",
        "Buenos días, la farola de mi portal lleva una semana apagada",
        "Hay un bache enorme en la calle Mayor de Sarrià",
        "Hay gente mayor que no puede cruzar, el paso de cebra está borrado",
        "Los precios suben y encima el contenedor está lleno de basura",
        pytest.param(
            "Moltes gràcies per endavant: la font de la plaça no raja",
            marks=pytest.mark.xfail(
                strict=True,
                reason="the model learnt 'gràcies' from the few hand-written Catalan thanks: the "
                "cue no longer vetoes, the model's own estimate does (0.1)",
            ),
        ),
    ],
)
def test_politeness_and_a_greeting_do_not_drop_a_request(city: City, text: str) -> None:
    assert classify(text, city).actionable


def _signals(actionable: float, *, chatter: bool = False, complaint: bool = False) -> Signals:
    return Signals(
        lexicon_scores={"pavement": 0.0},
        urgent=False,
        complaint=complaint,
        chatter=chatter,
        prediction=Prediction({"pavement": 1.0}, actionable),
    )


def test_a_chatter_cue_moves_the_models_odds_by_its_weight() -> None:
    rule = {"actionable_at": 0.5, "chatter_weight": 2.0, "complaint_weight": 0.0}
    assert Classifier.actionable_of(_signals(0.95, chatter=True), rule)  # logit 2.9 - 2 > 0
    assert not Classifier.actionable_of(_signals(0.8, chatter=True), rule)  # 1.4 - 2 < 0
    assert Classifier.actionable_of(_signals(0.8), rule)
    assert Classifier.actionable_of(
        _signals(0.3, complaint=True), {**rule, "complaint_weight": 1.0}
    )


def test_chatter_cues_count_only_in_their_own_language() -> None:
    classifier = default_classifier()
    assert not classifier.signals("Hay un bache enorme en la calle Mayor de Sarrià").chatter
    assert classifier.signals("The mayor should resign").chatter
    assert classifier.signals("Gracias por arreglar la farola").chatter
    assert not classifier.signals("Gracias de antemano, la farola no funciona").chatter


# --- nothing readable ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["😡😡😡", "🌳", "!!!", "@bcn_ajuntament", "https://t.co/xyz", "يوجد حفرة كبيرة في الشارع", ""],
)
def test_a_post_with_nothing_readable_is_other_and_not_actionable(city: City, text: str) -> None:
    result = classify(text, city)
    assert (result.service_code, result.service_confidence, result.actionable) == (
        "other",
        0.0,
        False,
    )
    [batched] = default_classifier().classify_batch([PostInput(text)], city)
    assert (batched.service_code, batched.actionable) == ("other", False)


def test_links_and_mentions_are_not_read() -> None:
    assert readable_part("@bcn_ajuntament la farola https://t.co/x1 no va") == (
        "  la farola   no va"
    )
    classifier = default_classifier()
    plain = classifier.signals("la farola no funciona")
    mentioned = classifier.signals("@bcn_ajuntament la farola no funciona https://t.co/x1")
    assert mentioned.prediction == plain.prediction


def test_a_citizens_service_choice_still_wins_over_an_empty_text(city: City) -> None:
    result = classify("📷", city, service_code_hint="graffiti")
    assert (result.service_code, result.actionable) == ("graffiti", True)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Perro suelto sin dueño por el parque de la Espanya Industrial", "animals"),
        ("Un gos solt pel parc de la Ciutadella espantant els nens", "animals"),
        ("Loose dog running around the park in Sant Martí", "animals"),
    ],
)
def test_a_loose_dog_in_a_park_is_about_the_dog(city: City, text: str, code: str) -> None:
    assert classify(text, city).service_code == code


# --- a point that is not a number ------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon"), [(math.nan, math.nan), (math.nan, 2.17), (41.38, math.inf)]
)
def test_a_point_that_is_not_finite_counts_as_no_point(
    exact_city: City, lat: float, lon: float
) -> None:
    result = classify("Fanal apagat a Gràcia", exact_city, lat=lat, lon=lon)
    assert result.location.source == "text"
    assert result.location.district is not None and result.location.district.code == "06"
    [batched] = default_classifier().classify_batch(
        [PostInput("Fanal apagat a Gràcia", lat, lon)], exact_city
    )
    assert batched.location == result.location


async def test_the_service_places_a_post_with_a_nan_point_by_its_text(exact_city: City) -> None:
    handler = ClassifyPost(exact_city, default_classifier())
    post = Post(platform="mastodon", post_id="p", author_handle="@a", text="Fanal apagat a Gràcia")
    post.latitude, post.longitude = math.nan, math.nan
    event = envelope(PostReceived(post=post), key="k", event_id="e", correlation_id="c").envelope
    [one] = await handler(event)
    [batched] = await handler.batch([event])
    for out in (one, batched):
        assert out.envelope.post_classified.placement.district_code == "06"


# --- the examples are split with their translations -----------------------------------------


def test_every_example_has_a_group_and_translations_share_one() -> None:
    rows = [json.loads(line) for line in EXAMPLES.read_text("utf-8").splitlines() if line]
    groups: dict[int, list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault(int(row["group"]), []).append(row)
    for members in groups.values():
        assert len({m["language"] for m in members}) == len(members)  # one per language
        assert len({(m["actionable"], m["service_code"]) for m in members}) == 1
    by_text = {row["text"]: int(row["group"]) for row in rows}
    assert by_text["Tinc ganes de vacances"] == by_text["I need a holiday"]


def test_no_example_in_one_split_has_its_translation_in_another() -> None:
    rows = [json.loads(line) for line in EXAMPLES.read_text("utf-8").splitlines() if line]
    group_of = {row["text"]: row["group"] for row in rows}
    splits = load_examples()
    posts = (splits.train, splits.validation, splits.test)
    parts = [{group_of[t] for t in part.texts} for part in posts]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(len(part) for part in posts) == len(rows)
    assert 0.75 < len(splits.train) / len(rows) < 0.85


# --- the actionable figure -------------------------------------------------------------------


def test_calling_everything_a_request_scores_two_thirds_whatever_the_mix() -> None:
    for requests in (1, 5, 95):
        truth = [True] * requests + [False] * (100 - requests)
        assert balanced_f1(truth, [True] * 100) == pytest.approx(2 / 3)
    assert balanced_f1([True, True, False, False], [True, True, False, False]) == 1.0


# --- the service rule and the codes Madrid and Bengaluru do not label ---------------------------


def _trial(
    floor: float, madrid: float, bengaluru: float, examples: float, untrained: float
) -> tuple[dict[str, float], dict[str, float]]:
    settings = {"lexicon_weight": 1.0, "untrained_floor": floor, "no_service_below": 0.0}
    figures = {
        "madrid_macro_f1": madrid,
        "bengaluru_accuracy": bengaluru,
        "examples_accuracy": examples,
        "untrained_f1": untrained,
    }
    return settings, figures


def _summed(figures: Mapping[str, float]) -> float:
    return (
        figures["madrid_macro_f1"]
        + figures["bengaluru_accuracy"]
        + 0.05 * figures["examples_accuracy"]
    )


def test_the_service_rule_keeps_the_targets_then_serves_the_untrained_codes() -> None:
    # On Madrid and Bengaluru a noise answer can only be wrong: the summed objective prefers
    # the floor that never lets noise win. Within the tolerance, noise's F1 decides instead; a
    # setting that costs Madrid more than the tolerance is not admissible, however good for noise.
    trials = [
        _trial(0.001, 0.8630, 0.868, 0.50, 0.0),
        _trial(0.1, 0.8630 - SERVICE_TOLERANCE + 0.001, 0.866, 0.55, 0.6),
        _trial(0.3, 0.8630 - SERVICE_TOLERANCE + 0.001, 0.866, 0.60, 0.6),
        _trial(0.5, 0.8630 - SERVICE_TOLERANCE - 0.001, 0.860, 0.70, 0.9),
    ]
    chosen, report = choose_service_rule(trials, _summed)
    assert chosen["untrained_floor"] == 0.3  # F1 ties with 0.1: the objective breaks it
    assert report["admissible"] == 3
    alone = report["objective_alone"]
    assert isinstance(alone, dict)
    assert alone["untrained_floor"] == 0.001


def test_the_service_rule_changes_nothing_when_the_untrained_codes_do_not_differ() -> None:
    trials = [_trial(0.001, 0.863, 0.868, 0.50, 0.5), _trial(0.1, 0.861, 0.866, 0.55, 0.5)]
    chosen, _ = choose_service_rule(trials, _summed)
    assert chosen["untrained_floor"] == 0.001


def _noise_signals(noise_cues: float) -> Signals:
    return Signals(
        lexicon_scores={"pavement": 0.0, "cleaning": 0.0, "noise": noise_cues},
        urgent=False,
        complaint=False,
        chatter=False,
        prediction=Prediction({"pavement": 0.9, "cleaning": 0.1}, 0.9),
    )


def test_an_untrained_code_runs_only_when_the_lexicon_names_it() -> None:
    rule = {"lexicon_weight": 1.0, "untrained_floor": 0.3, "no_service_below": 0.0}
    # no cue: noise takes no share of the confidence (the floor is not a prior for noise)
    assert Classifier.service_of(_noise_signals(0.0), rule) == ("pavement", 0.9)
    # a cue: log 0.3 + 1 against log 0.9, the confident model keeps it; two cues overrule it
    assert Classifier.service_of(_noise_signals(1.0), rule)[0] == "pavement"
    assert Classifier.service_of(_noise_signals(2.0), rule)[0] == "noise"


# --- noise and public space: the actionable head never saw them as requests ---------------------


def _untrained_signals(actionable: float, code: str) -> Signals:
    return Signals(
        lexicon_scores={"pavement": 0.0, "noise": 0.0, code: 1.0},
        urgent=False,
        complaint=False,
        chatter=False,
        prediction=Prediction({"pavement": 1.0}, actionable),
    )


def test_a_cue_of_a_code_the_model_never_learnt_adds_its_own_weight() -> None:
    rule = {"actionable_at": 0.5, "service_cue_weight": 0.5, "untrained_cue_weight": 2.0}
    noise = _untrained_signals(0.2, "noise")  # logit -1.39 + 0.5 + 2 > 0
    pavement = _untrained_signals(0.2, "pavement")  # the model learnt pavement: -1.39 + 0.5
    assert evidence(noise, rule) == pytest.approx(evidence(pavement, rule) + 2.0)
    assert Classifier.actionable_of(noise, rule)
    assert not Classifier.actionable_of(pavement, rule)
    assert not Classifier.actionable_of(noise, {**rule, "untrained_cue_weight": 0.0})


def _weight_trial(weight: float, f1: float, recall: float) -> tuple[float, dict[str, float], float]:
    return weight, {"balanced_f1": f1}, recall


def test_the_untrained_cue_weight_keeps_the_actionable_target_then_serves_noise() -> None:
    # Validation can only punish the weight (its posts with a noise cue are tweets): within the
    # tolerance the held-out noise requests' recall decides, ties to the balanced F1; a weight
    # that costs more than the tolerance is not admissible however many requests it finds.
    trials = [
        _weight_trial(0.0, 0.985, 0.6),
        _weight_trial(1.0, 0.985 - 0.001, 0.8),
        _weight_trial(2.0, 0.985 - 0.002, 0.9),
        _weight_trial(4.0, 0.985 - 0.004, 0.9),
        _weight_trial(8.0, 0.985 - ACTIONABLE_TOLERANCE - 0.001, 1.0),
    ]
    weight, report = choose_untrained_cue_weight(trials)
    assert weight == 2.0
    assert report["admissible"] == 4


def test_the_untrained_cue_weight_stays_zero_when_it_finds_no_more_requests() -> None:
    trials = [_weight_trial(0.0, 0.985, 1.0), _weight_trial(2.0, 0.984, 1.0)]
    assert choose_untrained_cue_weight(trials)[0] == 0.0


def test_the_shipped_rule_has_the_weight_its_training_chose() -> None:
    model = default_classifier().model
    assert model is not None
    validation = model.meta["validation"]
    assert isinstance(validation, dict)
    stage = validation["actionable"]["untrained_cue"]
    assert model.settings["untrained_cue_weight"] == stage["chosen"]["untrained_cue_weight"] > 0
    assert stage["requests"] >= 10


def test_the_examples_splits_carry_their_translation_groups() -> None:
    rows = [json.loads(line) for line in EXAMPLES.read_text("utf-8").splitlines() if line]
    group_of = {row["text"]: int(row["group"]) for row in rows}
    for part in (load_examples().train, load_examples().validation):
        assert part.groups == tuple(group_of[t] for t in part.texts)
        kept = part.subset(i % 2 == 0 for i in range(len(part)))
        assert kept.groups == part.groups[::2]


def test_english_mean_is_no_cue_for_public_space() -> None:
    # Spanish "mean" (they urinate) named public_space in "I mean" and "what do you mean": with
    # the weight of an untrained code's cue, every such tweet moved towards a request.
    lexicon = Classifier(None)
    for text in ("I mean, what do you mean by that?", "that was so mean lol"):
        assert lexicon.signals(text).lexicon_scores["public_space"] == 0
    for text in ("Cada noche mean en el portal", "Los perros mean por toda la calle"):
        assert lexicon.signals(text).lexicon_scores["public_space"] > 0


@pytest.mark.parametrize(
    "text",
    [
        # what a citizen reported: a noise complaint in English was not a request
        "The bar downstairs plays loud music until 3am, we cannot sleep",
        "Our neighbours have been blasting music every night this week, nobody in the building can sleep",
        "Jackhammer on the street outside since 7am on a Saturday",
        "El local de abajo pone la música a todo volumen cada noche, no podemos dormir",
        "El bar de sota posa la música molt alta cada nit i no podem dormir",
    ],
)
def test_a_noise_complaint_reaches_a_manager(city: City, text: str) -> None:
    result = classify(text, city)
    assert (result.service_code, result.actionable) == ("noise", True)


@pytest.mark.parametrize(
    "text",
    [
        # a lookalike cue ("this track") takes the noise cue's weight away (test_noise_lookalikes)
        "Turn it up, this track is so loud and so good",
        "Looking for noise cancelling headphones for the flight, any tips?",
        "El concierto de anoche, qué música tan increíble",
        "Quina festa més bona ahir amb la música de la Mercè!",
    ],
)
def test_posts_that_only_sound_like_noise_are_not_requests(city: City, text: str) -> None:
    assert not classify(text, city).actionable


# --- the frozen check set ----------------------------------------------------------------------

# noise_check.jsonl was written before the rule learnt untrained_cue_weight: its figures compare
# the rule before and after only while it stays as it was written.
NOISE_CHECK_SHA256 = "713e17c4692c7e8ac08743c26e3e9093242cb3b9f8cec6136c9ad8c036369b1a"


def test_the_noise_check_set_is_frozen_and_never_trained_on() -> None:
    data = NOISE_CHECK.read_bytes()
    assert hashlib.sha256(data).hexdigest() == NOISE_CHECK_SHA256
    posts, languages = load_check()
    assert len(posts) >= 60 and set(languages) == {"ca", "es", "en"}
    assert {"noise", "public_space", "NOT_ACTIONABLE"} <= set(posts.labels)
    examples = {json.loads(line)["text"] for line in EXAMPLES.read_text("utf-8").splitlines()}
    assert not examples & set(posts.texts)
    assert NOISE_CHECK.name not in Path(train.__file__).read_text("utf-8")


def _tiny_model() -> ServiceModel:
    outputs = 2  # one service ("pavement") and the actionable column
    return ServiceModel(
        classes=("pavement",),
        weights=np.zeros((features.BUCKETS, outputs), dtype=np.float32),
        intercepts=np.zeros(outputs, dtype=np.float32),
        idf=np.ones(features.BUCKETS, dtype=np.float32),
        temperature=1.0,
        settings={},
    )


def test_each_untrained_request_is_judged_by_a_head_that_never_saw_it() -> None:
    # The rest of the data calls "zumzum" chatter; the only requests that say it are hand-written
    # noise complaints in one translation group. A head fitted on them calls them requests; the
    # head that judges them must not have seen the group, or the weight would look unneeded.
    rest_texts = [f"zumzum tweet {i}" for i in range(30)] + [f"pothole road {i}" for i in range(30)]
    rest = Matrix.of([fold(t) for t in rest_texts])
    rest_actionable = [False] * 30 + [True] * 30
    texts = ["zumzum all night noise", "zumzum every night noise"]
    texts += [f"pothole street {i}" for i in range(8)] + [f"nice day {i}" for i in range(8)]
    labels = ["noise", "noise"] + ["pavement"] * 8 + [train.NOT_ACTIONABLE] * 8
    examples = train.Posts(texts, labels, "examples", (1, 1, *range(2, 18)))
    rows = Matrix.of([fold(t) for t in texts])
    idf = np.ones(features.BUCKETS, dtype=np.float32)
    judged = train.cross_fitted_untrained(
        _tiny_model(), rest, rest_actionable, examples, rows, idf, 4.0
    )
    assert len(judged) == 2
    assert all(s.prediction is not None and s.prediction.actionable < 0.5 for s in judged)
    seen = train.fit_actionable(
        train.tfidf_matrix(train._stack([rest, rows]), idf),
        [*rest_actionable, *(label != train.NOT_ACTIONABLE for label in labels)],
        [1.0] * len(rest_texts) + [train.EXAMPLE_WEIGHT] * len(texts),
        4.0,
    )
    x = train.tfidf_matrix(Matrix.of([fold(texts[0])]), idf)
    assert float(train._scores(x, seen)[0, 0]) > 0  # the head that saw it: a request
    with pytest.raises(ValueError, match="groups"):
        train.cross_fitted_untrained(
            _tiny_model(), rest, rest_actionable, replace(examples, groups=()), rows, idf, 4.0
        )
