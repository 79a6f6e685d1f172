"""The trained service model: the committed artifact, the featurizer, and training end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from plaza.city import City, fold
from plaza.contracts import Post, PostReceived, envelope
from plaza.taxonomy import load_taxonomy
from plaza.worker import Rejected
from plaza_classifier import features
from plaza_classifier.classify import Classifier, PostInput, classify, default_classifier
from plaza_classifier.handler import ClassifyPost
from plaza_classifier.model import ServiceModel, packaged_artifact
from plaza_classifier.train import (
    NOT_ACTIONABLE,
    Matrix,
    fit_actionable,
    fit_services,
    tfidf_matrix,
)

# The service codes Madrid's and Bengaluru's labels map to: what the model was trained on.
TRAINED_CODES = {
    "streetlight",
    "pavement",
    "cleaning",
    "graffiti",
    "parks_trees",
    "water_sewer",
    "traffic",
    "mobility",
    "animals",
    "street_furniture",
    "other",
}


@pytest.fixture(scope="module")
def model() -> ServiceModel:
    return ServiceModel.load()


# --- the committed artifact -----------------------------------------------------------------


def test_the_committed_artifact_is_under_10_mb() -> None:
    assert packaged_artifact().stat().st_size < 10_000_000


def test_the_artifact_loads_with_the_trained_service_codes(model: ServiceModel) -> None:
    assert set(model.classes) == TRAINED_CODES
    assert set(model.classes) <= set(load_taxonomy())
    assert model.weights.shape == (features.BUCKETS, len(model.classes) + 1)
    assert model.version.startswith("tfidf-linear-")
    assert {"lexicon_weight", "untrained_floor", "no_service_below", "actionable_at"} <= set(
        model.settings
    )
    assert model.temperature > 0


def test_the_service_uses_the_committed_artifact(model: ServiceModel) -> None:
    assert default_classifier().model_version == model.version


def test_a_missing_artifact_is_a_loud_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make train"):
        ServiceModel.load(tmp_path / "nothing.npz")


# --- the featurizer -------------------------------------------------------------------------


def test_feature_buckets_are_a_stable_crc32_hash() -> None:
    assert features.bucket("w:farola") == 237097
    assert features.bucket("c:<fa") == 90974
    assert features.bucket("b:farola rota") == 213471


def test_features_are_char_ngrams_words_and_bigrams() -> None:
    strings = features.feature_strings("farola rota")
    assert {"w:farola", "c:<f", "c:<fa", "c:ola>", "c:<rota", "b:farola rota"} <= set(strings)
    assert "c:<farol" not in strings  # n-grams stop at 5 characters
    assert features.feature_strings("nº 23") == features.feature_strings("nº 41")


def test_hashed_features_are_the_same_in_another_process() -> None:
    script = (
        "from plaza_classifier import features;"
        "i, c = features.hashed('el fanal del carrer de mallorca no funciona');"
        "print(i.tolist(), c.tolist())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    indices, counts = features.hashed("el fanal del carrer de mallorca no funciona")
    assert outputs == {f"{indices.tolist()} {counts.tolist()}\n"}


def test_hashed_rows_are_each_texts_hashed_features() -> None:
    texts = ["farola rota", "", "bache en la calzada", "rota rota rota farola", "", "0 0"] * 400
    indptr, indices, counts = features.hashed_rows(texts)  # more than one chunk of rows
    assert len(indptr) == len(texts) + 1
    for row, text in enumerate(texts):
        expected_indices, expected_counts = features.hashed(text)
        assert indices[indptr[row] : indptr[row + 1]].tolist() == expected_indices.tolist()
        assert counts[indptr[row] : indptr[row + 1]].tolist() == expected_counts.tolist()
    empty = features.hashed_rows([])
    assert [a.tolist() for a in empty] == [[0], [], []]


def test_tfidf_rows_have_unit_norm() -> None:
    indptr, indices, counts = features.hashed_rows(["farola rota", "", "bache en la calzada"])
    idf = np.ones(features.BUCKETS, dtype=np.float32)
    values = features.tfidf(indptr, indices, counts, idf)
    norms = [float(np.linalg.norm(values[a:b])) for a, b in pairwise(indptr)]
    assert norms == pytest.approx([1.0, 0.0, 1.0], abs=1e-5)


# --- realistic posts through classify() -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Contenedor de vidrio desbordado desde hace tres días", "cleaning"),
        ("Farola apagada en la esquina con la calle Provença", "streetlight"),
        ("Socavón en la calzada frente al número 12", "pavement"),
        ("El parquímetro se ha tragado las monedas y no da tique", "mobility"),
        ("Han dejado un sofá y un colchón junto a los contenedores", "cleaning"),
        ("Paneroles a l'escala del metro de Fontana", "animals"),
        ("La font de beure del parc no raja", "water_sewer"),
        ("Hi ha una rajola aixecada a la vorera, algú caurà", "pavement"),
        ("Garbage has not been collected for a week on our road", "cleaning"),
        ("Huge potholes on the main road, two-wheelers are falling", "pavement"),
        ("The street lights on 5th cross have not worked for days", "streetlight"),
        ("Sewage overflowing onto the road from a blocked drain", "water_sewer"),
    ],
)
def test_realistic_posts_get_their_service(city: City, text: str, code: str) -> None:
    result = classify(text, city)
    assert (result.service_code, result.actionable) == (code, True)


@pytest.mark.parametrize(
    "text",
    [
        "I wish I could go back to bed, so tired today",
        "Quina pel·lícula més bona vam veure ahir al cinema",
    ],
)
def test_everyday_chatter_is_not_actionable(city: City, text: str) -> None:
    assert not classify(text, city).actionable


def test_the_model_and_the_lexicon_alone_differ_only_in_their_source(city: City) -> None:
    text = "La farola de la calle está apagada"
    with_model = classify(text, city)
    lexicon_alone = Classifier(None).classify(text, city)
    assert with_model.service_code == lexicon_alone.service_code == "streetlight"
    assert with_model.model_version != lexicon_alone.model_version


def test_batch_scores_equal_one_post_at_a_time(model: ServiceModel) -> None:
    texts = [fold(t) for t in ("Farola apagada", "", "Bins overflowing", "Bache enorme")]
    batch = model.scores_batch(texts)
    single = np.stack([model.scores(t) for t in texts])
    assert np.allclose(batch, single, atol=1e-4)


# --- training end to end --------------------------------------------------------------------

SYNTHETIC = [
    ("farola apagada en la calle", "streetlight"),
    ("la farola no se enciende", "streetlight"),
    ("street light is out", "streetlight"),
    ("bache enorme en la calzada", "pavement"),
    ("un bache en el asfalto", "pavement"),
    ("pothole on the road", "pavement"),
    ("contenedor lleno de basura", "cleaning"),
    ("basura en la acera", "cleaning"),
    ("garbage dumped on the road", "cleaning"),
    ("what a lovely day today", NOT_ACTIONABLE),
    ("I miss my friends so much", NOT_ACTIONABLE),
    ("qué bonito día hace hoy", NOT_ACTIONABLE),
]


def test_a_tiny_training_runs_end_to_end(tmp_path: Path, city: City) -> None:
    texts = [fold(t) for t, _ in SYNTHETIC]
    hashed = Matrix.of(texts)
    idf = features.document_frequency_idf(hashed.indptr, hashed.indices, hashed.rows())
    x = tfidf_matrix(hashed, idf)
    civic = [i for i, (_, label) in enumerate(SYNTHETIC) if label != NOT_ACTIONABLE]
    services = fit_services(
        x[civic],  # type: ignore[index]
        [SYNTHETIC[i][1] for i in civic],
        c=1.0,
    )
    head = fit_actionable(
        x, [label != NOT_ACTIONABLE for _, label in SYNTHETIC], [1.0] * len(SYNTHETIC), c=10.0
    )
    trained = ServiceModel(
        classes=services.classes,
        weights=np.hstack([services.coef, head.coef]),
        intercepts=np.concatenate([services.intercept, head.intercept]),
        idf=idf,
        temperature=0.3,
        settings={
            "lexicon_weight": 0.0,
            "untrained_floor": 0.01,
            "no_service_below": 0.3,
            "actionable_at": 0.5,
        },
    )
    path = tmp_path / "model.npz"
    version = trained.save(path)
    loaded = ServiceModel.load(path)

    assert loaded.version == version and version.startswith("tfidf-linear-")
    assert loaded.classes == ("cleaning", "pavement", "streetlight")
    assert (
        max(loaded.predict(fold("farola apagada")).probabilities.items(), key=lambda kv: kv[1])[0]
        == "streetlight"
    )
    assert loaded.predict(fold("bache en la calzada")).actionable > 0.5
    assert loaded.predict(fold("lovely day")).actionable < 0.5
    result = Classifier(loaded).classify("Un bache en la calle Mallorca", city)
    assert (result.service_code, result.actionable, result.model_version) == (
        "pavement",
        True,
        version,
    )
    assert trained.save(tmp_path / "again.npz") == version  # the same model, the same version


def test_classify_batch_answers_as_classify_one_post_at_a_time(city: City) -> None:
    classifier = default_classifier()
    posts = [
        PostInput("Farola apagada en el carrer de Sants", 41.3755, 2.1340),
        PostInput("Farola apagada a Gràcia", 40.4168, -3.7038),  # a point far away: the text
        PostInput("La font de beure del parc no raja", language_hint="ca"),
        PostInput("Bins overflowing near the Sagrada Familia"),
        PostInput("Quina pel·lícula més bona vam veure ahir"),
        PostInput("Me han dejado un sofá en la acera", service_code_hint="cleaning"),
        PostInput(""),
    ]
    batch = classifier.classify_batch(posts, city)
    one_by_one = [
        classifier.classify(
            p.text,
            city,
            lat=p.lat,
            lon=p.lon,
            language_hint=p.language_hint,
            service_code_hint=p.service_code_hint,
        )
        for p in posts
    ]
    assert len(batch) == len(posts)
    assert [c.location.source for c in batch[:2]] == ["geo", "text"]
    for got, expected in zip(batch, one_by_one, strict=True):
        assert got.service_code == expected.service_code
        assert got.service_confidence == pytest.approx(expected.service_confidence, abs=0.011)
        assert (got.actionable, got.location, got.language, got.urgency) == (
            expected.actionable,
            expected.location,
            expected.language,
            expected.urgency,
        )
    assert classifier.classify_batch([], city) == []


async def test_the_services_batch_handler_classifies_as_its_one_by_one_handler(city: City) -> None:
    """The classifier service's batch handler (classify_batch) sends the same events as its
    per-record handler; a post it cannot take fails the batch, for the worker to go one by one."""
    handler = ClassifyPost(city, default_classifier())
    texts = [
        ("Farola apagada en el carrer de Sants", (41.3755, 2.1340)),
        ("La font de beure del parc no raja", None),
        ("Bins overflowing near the Sagrada Familia", None),
        ("Quina pel·lícula més bona vam veure ahir", None),
        ("Contenedor desbordado en c/ Aragó, 250", None),
    ]
    events = []
    for n, (text, point) in enumerate(texts):
        post = Post(platform="mastodon", post_id=f"p{n}", author_handle="@a", text=text)
        if point is not None:
            post.latitude, post.longitude = point
        events.append(
            envelope(PostReceived(post=post), key=f"k{n}", event_id=f"e{n}", correlation_id="c")
        )
    batch = await handler.batch([e.envelope for e in events])
    one_by_one = [out for e in events for out in await handler(e.envelope)]
    assert [o.envelope.event_id for o in batch] == [o.envelope.event_id for o in one_by_one]
    for got, expected in zip(batch, one_by_one, strict=True):
        a, b = got.envelope.post_classified, expected.envelope.post_classified
        assert a.service_confidence == pytest.approx(b.service_confidence, abs=0.011)
        a.service_confidence = b.service_confidence
        assert a == b
    streets = [o.envelope.post_classified.street_address for o in batch]
    assert streets == ["Carrer de Sants", "", "", "", "Carrer d'Aragó 250"]
    silent = Post(platform="mastodon", post_id="empty", author_handle="@a", text="  ")
    bad = envelope(PostReceived(post=silent), key="k", event_id="e", correlation_id="c")
    with pytest.raises(Rejected, match="has no text"):
        await handler.batch([events[0].envelope, bad.envelope])
