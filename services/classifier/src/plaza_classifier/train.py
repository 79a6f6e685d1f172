"""Builds the service model artifact from the shared reference data: `make train`.

Data: Madrid's Avisos reports (Spanish, label = the citizen's category mapped to our service
code) and Bengaluru's complaints (English; non-civic tweets are the "not actionable" examples),
plus the hand-written examples in services/classifier/data/actionable_examples.jsonl.
Splits (see MODEL_CARD.md): Madrid by time, Bengaluru by a seeded shuffle, the examples by a
seeded shuffle of their translation groups (a post and its translations fall on one side).
Every choice (regularisation, temperature, the thresholds of the combination rule) is made on
the validation split; the test split is read only by `make eval`.

scikit-learn is imported here only; the service itself runs on numpy (plaza_classifier.model).
"""

from __future__ import annotations

import argparse
import csv
import functools
import gzip
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
from plaza.city import fold
from plaza.taxonomy import OTHER, load_taxonomy
from tqdm import tqdm

from plaza_classifier import features
from plaza_classifier.features import readable_part
from plaza_classifier.model import ServiceModel, packaged_artifact

if TYPE_CHECKING:
    from plaza_classifier.classify import Signals

SEED: Final = 20231231
NOT_ACTIONABLE: Final = "NOT_ACTIONABLE"

# Madrid by time. The last four months are the test (what production meets next); the three
# months before them are the validation split, the closest data to the test that the choices may
# see (three months, ~50k reports, so that a threshold is not chosen for one month's quirks).
# Once everything is chosen, the final model is fitted again on training and validation data.
MADRID_VALIDATION: Final = ("2023-06", "2023-07", "2023-08")
MADRID_TEST: Final = ("2023-09", "2023-10", "2023-11", "2023-12")
# Bengaluru and the hand-written examples have no usable dates: a seeded 80/10/10 shuffle (of
# the examples' translation groups, so that no test post has its translation in training).
SHUFFLED_SPLIT: Final = (0.8, 0.1, 0.1)
# Madrid reports are all requests: a sample of them teaches the actionable head Spanish requests
# without drowning the few Spanish and Catalan non-requests.
MADRID_ACTIONABLE_SAMPLE: Final = 1500
EXAMPLE_WEIGHT: Final = 20.0  # a hand-written example stands for a kind of post, not one tweet

SERVICE_C: Final = (0.5, 1.0)  # LinearSVC regularisation tried on validation
ACTIONABLE_C: Final = (1.0, 4.0)
TEMPERATURES: Final = np.geomspace(0.03, 1.0, 40)
# The combination rule's grid (classify.Classifier.service_of)
LEXICON_WEIGHT: Final = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # 0: the model alone
# The probability the model is taken to give a code it never learnt (UNTRAINED): up to 0.5, so
# that the choice is not pinned to the grid's edge (0.1 was the edge and the choice before).
UNTRAINED_FLOOR: Final = (0.001, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5)
NO_SERVICE_BELOW: Final = (0.0, 0.3, 0.5)  # an unsure model, no cue for its guess: "other"
# The codes neither Madrid nor Bengaluru label (madrid_labels() leaves them out). On their
# reports a noise prediction can only be an error, and a right one shows only in the few
# hand-written examples: a rule chosen on their figures (plus a small share of the examples')
# drives the untrained codes' floor down to whatever keeps them from ever winning (0.001 once
# the examples were split with their translations: Spanish and English noise complaints lost).
UNTRAINED: Final = ("noise", "public_space")
# So the service rule is chosen in two steps, for each language stage (one setting for every
# language, then Catalan's own): the settings whose Madrid macro-F1 and Bengaluru accuracy on
# validation are both within SERVICE_TOLERANCE of the best any setting of the grid reaches are
# admissible (the targets' figures are kept, a rounding's worth given away); among those, the
# one with the best F1 of the untrained codes (mean over UNTRAINED) on the stage's hand-written
# validation requests wins, and ties go to the objective below. F1, not recall: the examples'
# other requests called noise count against it.
SERVICE_TOLERANCE: Final = 0.005
# The tie-breaker: Madrid's macro-F1 plus Bengaluru's accuracy plus a share of the hand-written
# requests' accuracy. For the settings of every language, a small share: the targets are on
# Madrid's and Bengaluru's reports, and the examples are few and written by us (a quarter
# instead moved the held-out Madrid macro-F1 from 0.854 to 0.847 and Bengaluru from 0.872 to
# 0.862, for 0.74 instead of 0.68 of the examples on validation). For Catalan's own settings,
# all there is (Madrid and Bengaluru have no Catalan).
EXAMPLES_SHARE: Final = {None: 0.05, "ca": 1.0}
# The languages with a stage (settings) of their own; the first stage's untrained F1 is measured
# on the examples in the other languages.
OWN_SETTINGS: Final = ("ca",)
# The actionable rule's grid (classify.Classifier.actionable_of): the threshold, and how far each
# kind of cue moves the model's log-odds (0: the cue is ignored; 8: it all but decides).
ACTIONABLE_AT: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CUE_WEIGHTS: Final = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
# Then, the rest held fixed, how much more a cue of an UNTRAINED code counts (classify.evidence:
# `untrained_cue_weight`), chosen like their floor above. The actionable head never saw a noise
# or public_space request: Bengaluru labels neither, and its non-requests are tweets about loud
# music and sleepless nights (a few of them a neighbour's noise, which a city would call a
# request), so the head gave "The bar downstairs plays loud music until 3am, we cannot sleep"
# 0.28. The validation sets can only punish the weight (their posts with such a cue are tweets)
# and never reward it, so the weights whose balanced F1 is within ACTIONABLE_TOLERANCE of the
# grid's best (weight 0) are admissible, and among those the best recall of the hand-written
# noise and public_space requests wins, each judged by a head that never saw it nor its
# translations (cross_fitted_untrained), ties to the balanced F1 and then the smaller weight.
UNTRAINED_CUE_WEIGHTS: Final = CUE_WEIGHTS
ACTIONABLE_TOLERANCE: Final = 0.005
CROSS_FOLDS: Final = 5  # folds of the training examples' groups, for cross_fitted_untrained
# The rule before this grid, for the report: a complaint cue made a post actionable, a chatter
# cue without one vetoed it, a named service made it actionable (weights large enough to decide).
CHATTER_VETO: Final = {
    "complaint_weight": 100.0,
    "service_cue_weight": 25.0,
    "chatter_weight": 50.0,
}
MODEL_ONLY: Final = {  # the rule that always takes the model's guess
    "lexicon_weight": 0.0,
    "untrained_floor": 0.0,
    "no_service_below": 0.0,
    "actionable_at": 0.5,
    "complaint_weight": 0.0,
    "service_cue_weight": 0.0,
    "chatter_weight": 0.0,
    "untrained_cue_weight": 0.0,
}

DEFAULT_DATA: Final = Path(__file__).resolve().parents[4].parent / "shared" / "data"
EXAMPLES: Final = Path(__file__).resolve().parents[2] / "data" / "actionable_examples.jsonl"

Labels = npt.NDArray[np.str_]


@dataclass(frozen=True)
class Posts:
    """Texts (raw, as citizens wrote them) and their labels: a service code, or NOT_ACTIONABLE."""

    texts: list[str]
    labels: list[str]
    source: str
    groups: tuple[int, ...] = ()  # the hand-written examples' translation groups, one per post

    def __len__(self) -> int:
        return len(self.texts)

    def __add__(self, other: Posts) -> Posts:
        groups = self.groups + other.groups if self.groups and other.groups else ()
        return Posts(self.texts + other.texts, self.labels + other.labels, self.source, groups)

    def folded(self) -> list[str]:
        return [fold(readable_part(t)) for t in self.texts]

    def subset(self, keep: Iterable[bool]) -> Posts:
        rows = [i for i, k in enumerate(keep) if k]
        return Posts(
            [self.texts[i] for i in rows],
            [self.labels[i] for i in rows],
            self.source,
            tuple(self.groups[i] for i in rows) if self.groups else (),
        )


@dataclass(frozen=True)
class Splits:
    train: Posts
    validation: Posts
    test: Posts


@dataclass(frozen=True)
class Corpus:
    madrid: Splits
    bengaluru: Splits
    examples: Splits


def _read_map(path: Path, key: str) -> dict[str, str]:
    with path.open(encoding="utf-8") as f:
        return {row[key]: row["service_code"] for row in csv.DictReader(f)}


def _checked_code(code: str, where: str, taxonomy: Iterable[str]) -> str:
    if code != NOT_ACTIONABLE and code not in set(taxonomy):
        raise ValueError(f"{where}: service code {code!r} is not in the taxonomy")
    return code


def load_madrid(data: Path) -> Splits:
    """Madrid's reports split by month (see MADRID_VALIDATION and MADRID_TEST)."""
    mapping = _read_map(data / "madrid" / "category_map.csv", "service_name")
    taxonomy = list(load_taxonomy())
    split: dict[str, tuple[list[str], list[str]]] = {k: ([], []) for k in ("train", "val", "test")}
    with gzip.open(data / "madrid" / "avisos_2021-2023.csv.gz", "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = row["service_name"]
            if name not in mapping:
                raise ValueError(f"madrid/category_map.csv has no service code for {name!r}")
            code = _checked_code(mapping[name], "madrid/category_map.csv", taxonomy)
            month = row["requested_datetime"][:7]
            part = (
                "test" if month in MADRID_TEST else "val" if month in MADRID_VALIDATION else "train"
            )
            split[part][0].append(row["description"])
            split[part][1].append(code)
    return Splits(*(Posts(*split[k], source="madrid") for k in ("train", "val", "test")))


def _shuffled(posts: Posts, seed: int, groups: Sequence[int] | None = None) -> Splits:
    """A seeded 80/10/10 split (SHUFFLED_SPLIT); with groups (one per post), whole groups are
    shuffled and cut, so the posts of a group land in one part."""
    group_of = list(range(len(posts))) if groups is None else list(groups)
    members: dict[int, list[int]] = {}
    for i, group in enumerate(group_of):
        members.setdefault(group, []).append(i)
    keys = sorted(members)
    order = [
        i for g in np.random.default_rng(seed).permutation(len(keys)) for i in members[keys[g]]
    ]
    cut1 = _group_cut(order, group_of, SHUFFLED_SPLIT[0] * len(posts))
    cut2 = _group_cut(order, group_of, (SHUFFLED_SPLIT[0] + SHUFFLED_SPLIT[1]) * len(posts))
    parts = (order[:cut1], order[cut1:cut2], order[cut2:])
    return Splits(
        *(
            Posts(
                [posts.texts[i] for i in p],
                [posts.labels[i] for i in p],
                posts.source,
                tuple(group_of[i] for i in p) if groups is not None else (),
            )
            for p in parts
        )
    )


def _group_cut(order: Sequence[int], group_of: Sequence[int], at: float) -> int:
    """The first position at or after `at` (rounded down) where a new group starts."""
    cut = int(at)
    while 0 < cut < len(order) and group_of[order[cut]] == group_of[order[cut - 1]]:
        cut += 1
    return cut


def load_bengaluru(data: Path) -> Splits:
    """Bengaluru's complaints (and non-civic tweets), seeded 80/10/10."""
    mapping = _read_map(data / "bengaluru" / "category_map.csv", "category")
    taxonomy = list(load_taxonomy())
    texts: list[str] = []
    labels: list[str] = []
    with (data / "bengaluru" / "complaints_train.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            category = row["category"] if row["civic_issue"] == "1" else ""
            if category not in mapping:
                raise ValueError(f"bengaluru/category_map.csv has no service code for {category!r}")
            texts.append(row["description"])
            labels.append(_checked_code(mapping[category], "bengaluru/category_map.csv", taxonomy))
    return _shuffled(Posts(texts, labels, "bengaluru"), SEED)


def load_examples(path: Path = EXAMPLES) -> Splits:
    """The hand-written examples: a request is labelled with its service code, anything else
    NOT_ACTIONABLE. They are Barcelona's kind of post (Catalan, noise, public_space), which
    Madrid and Bengaluru lack: the combination rule is tuned on them too. Most are written in
    ca, es and en; an example's `group` is shared by its translations, which are split together
    (a test post whose translation is in training would measure recall of that translation)."""
    texts: list[str] = []
    labels: list[str] = []
    groups: list[int] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
            texts.append(str(example["text"]))
            code = str(example["service_code"]) if example["actionable"] else NOT_ACTIONABLE
            labels.append(_checked_code(code, f"{path}:{number}", load_taxonomy()))
            groups.append(int(example["group"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{number}: not an example ({e})") from e
    return _shuffled(Posts(texts, labels, "examples"), SEED + 1, groups)


def load_corpus(data: Path) -> Corpus:
    return Corpus(load_madrid(data), load_bengaluru(data), load_examples())


# --- fitting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matrix:
    """Hashed rows of some posts, before TF-IDF weighting."""

    indptr: npt.NDArray[np.int32]
    indices: npt.NDArray[np.int32]
    counts: npt.NDArray[np.int32]

    @classmethod
    def of(cls, folded: Sequence[str], label: str = "") -> Matrix:
        progress = tqdm(folded, desc=f"features {label}".strip(), unit="post", leave=False)
        return cls(*features.hashed_rows(progress))

    def rows(self) -> int:
        return len(self.indptr) - 1


def tfidf_matrix(matrix: Matrix, idf: npt.NDArray[np.float32]) -> object:
    from scipy.sparse import csr_matrix  # type: ignore[import-untyped]

    values = features.tfidf(matrix.indptr, matrix.indices, matrix.counts, idf)
    return csr_matrix(
        (values, matrix.indices, matrix.indptr), shape=(matrix.rows(), features.BUCKETS)
    )


def _stack(matrices: Sequence[Matrix]) -> Matrix:
    offsets = np.cumsum([0] + [len(m.indices) for m in matrices[:-1]])
    indptr = np.concatenate(
        [matrices[0].indptr[:1]]
        + [m.indptr[1:] + o for m, o in zip(matrices, offsets, strict=True)]
    )
    return Matrix(
        indptr.astype(np.int32),
        np.concatenate([m.indices for m in matrices]),
        np.concatenate([m.counts for m in matrices]),
    )


@dataclass(frozen=True)
class LinearFit:
    classes: tuple[str, ...]
    coef: npt.NDArray[np.float32]  # (BUCKETS, outputs)
    intercept: npt.NDArray[np.float32]


def fit_services(
    x: object, labels: Sequence[str], c: float, weights: Sequence[float] | None = None
) -> LinearFit:
    """One-vs-rest linear SVM over the service codes present in labels."""
    from sklearn.svm import LinearSVC  # type: ignore[import-untyped]

    svm = LinearSVC(C=c, random_state=SEED, max_iter=2000)
    svm.fit(x, np.asarray(labels), sample_weight=None if weights is None else np.asarray(weights))
    coef = np.asarray(svm.coef_, dtype=np.float32)
    intercept = np.asarray(svm.intercept_, dtype=np.float32)
    if coef.shape[0] == 1:  # two classes: sklearn keeps one row, for the second class
        coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
    return LinearFit(tuple(str(c) for c in svm.classes_), coef.T.copy(), intercept)


def fit_actionable(
    x: object, actionable: Sequence[bool], weights: Sequence[float], c: float
) -> LinearFit:
    """Logistic regression: the log-odds that a post is a request at all."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    model = LogisticRegression(C=c, solver="liblinear", random_state=SEED, max_iter=1000)
    model.fit(x, np.asarray(actionable, dtype=int), sample_weight=np.asarray(weights))
    return LinearFit(
        ("actionable",),
        np.asarray(model.coef_, dtype=np.float32).T.copy(),
        np.asarray(model.intercept_, dtype=np.float32),
    )


def _scores(x: object, fit: LinearFit) -> npt.NDArray[np.float32]:
    product = x @ fit.coef  # type: ignore[operator]
    return np.asarray(product, dtype=np.float32) + fit.intercept


def macro_f1(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> float:
    """Mean F1 over labels (predictions outside labels count as misses)."""
    scores = []
    t = np.asarray(truth)
    p = np.asarray(predicted)
    for label in labels:
        tp = float(np.sum((t == label) & (p == label)))
        fp = float(np.sum((t != label) & (p == label)))
        fn = float(np.sum((t == label) & (p != label)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def binary_f1(truth: Sequence[bool], predicted: Sequence[bool]) -> float:
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    tp = float(np.sum(t & p))
    denominator = 2 * tp + float(np.sum(~t & p)) + float(np.sum(t & ~p))
    return 0.0 if denominator == 0 else 2 * tp / denominator


def balanced_f1(truth: Sequence[bool], predicted: Sequence[bool]) -> float:
    """F1 of "request" as if requests and non-requests were equally many: precision from the
    recall and the false-alarm rate. The validation and test sets are 50 to 100% requests
    (Madrid has only requests), so a plain F1 rewards calling everything a request (that scores
    0.67 here, against up to 0.95 on the pooled sets); a city's mentions hold plenty of thanks,
    chatter and spam, and their real share is unknown."""
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    if not t.any() or t.all():
        raise ValueError("balanced_f1 needs both requests and non-requests")
    recall = float(np.mean(p[t]))
    false_alarms = float(np.mean(p[~t]))
    if recall == 0:
        return 0.0
    precision = recall / (recall + false_alarms)
    return 2 * precision * recall / (precision + recall)


def madrid_labels() -> list[str]:
    """The codes the Madrid targets are measured on: those Madrid has, except "other"."""
    return [c for c in load_taxonomy() if c not in {OTHER, "noise", "public_space"}]


def _temperature(
    scores: npt.NDArray[np.float32], truth: Sequence[str], classes: Sequence[str]
) -> float:
    index = {c: i for i, c in enumerate(classes)}
    rows = np.array([index[t] for t in truth])
    best, best_loss = 1.0, np.inf
    for t in TEMPERATURES:
        z = scores / t
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -float(log_p[np.arange(len(rows)), rows].mean())
        if loss < best_loss:
            best, best_loss = float(t), loss
    return best


@dataclass(frozen=True)
class Trained:
    model: ServiceModel
    report: Mapping[str, object]


def train(corpus: Corpus, log: Callable[[str], None] = print) -> Trained:
    """Fits, chooses on validation, and returns the model with the validation figures."""
    started = time.perf_counter()
    m, b, e = corpus.madrid, corpus.bengaluru, corpus.examples
    hashed = {
        name: Matrix.of(posts.folded(), name)
        for name, posts in {
            "madrid train": m.train,
            "madrid validation": m.validation,
            "bengaluru train": b.train,
            "bengaluru validation": b.validation,
            "examples train": e.train,
            "examples validation": e.validation,
        }.items()
    }
    civic_train, civic_val = _civic(b.train), _civic(b.validation)
    train_all = _stack(
        [hashed["madrid train"], hashed["bengaluru train"], hashed["examples train"]]
    )
    idf = features.document_frequency_idf(train_all.indptr, train_all.indices, train_all.rows())

    # the service model: Madrid's earlier months and Bengaluru's civic complaints
    x_train = tfidf_matrix(
        _stack([hashed["madrid train"], _rows(hashed["bengaluru train"], civic_train)]), idf
    )
    y_train = m.train.labels + b.train.subset(civic_train).labels
    x_val = tfidf_matrix(
        _stack([hashed["madrid validation"], _rows(hashed["bengaluru validation"], civic_val)]), idf
    )
    service_val = [m.validation, b.validation.subset(civic_val)]
    y_val = service_val[0].labels + service_val[1].labels
    n_madrid = len(m.validation)
    best: tuple[float, float, LinearFit] | None = None
    for c in SERVICE_C:
        fit = fit_services(x_train, y_train, c)
        predicted = [fit.classes[i] for i in _scores(x_val, fit).argmax(axis=1)]
        f1 = macro_f1(y_val[:n_madrid], predicted[:n_madrid], madrid_labels())
        accuracy = _accuracy(y_val[n_madrid:], predicted[n_madrid:])
        log(
            f"service model C={c}: validation Madrid macro-F1 {f1:.4f}, Bengaluru accuracy {accuracy:.4f}"
        )
        if best is None or f1 + accuracy > best[0]:
            best = (f1 + accuracy, c, fit)
    assert best is not None
    _, service_c, services = best
    temperature = _temperature(_scores(x_val, services), y_val, services.classes)
    log(f"chosen C={service_c}, temperature {temperature:.3f}")

    # the actionable head: Bengaluru civic vs non-civic, a sample of Madrid, the examples
    sample = np.zeros(len(m.train), dtype=bool)
    rng = np.random.default_rng(SEED)
    sample[
        rng.choice(len(m.train), size=min(MADRID_ACTIONABLE_SAMPLE, len(m.train)), replace=False)
    ] = True
    x_act = tfidf_matrix(
        _stack(
            [
                _rows(hashed["madrid train"], sample),
                hashed["bengaluru train"],
                hashed["examples train"],
            ]
        ),
        idf,
    )
    y_act = [True] * int(sample.sum()) + _actionable(b.train) + _actionable(e.train)
    w_act = [1.0] * (int(sample.sum()) + len(b.train)) + [EXAMPLE_WEIGHT] * len(e.train)
    every_eighth = np.arange(len(m.validation)) % 8 == 0
    actionable_val = [b.validation, e.validation, m.validation.subset(every_eighth)]
    x_act_val = tfidf_matrix(
        _stack(
            [
                hashed["bengaluru validation"],
                hashed["examples validation"],
                _rows(hashed["madrid validation"], every_eighth),
            ]
        ),
        idf,
    )
    y_act_val = [a for p in actionable_val for a in _actionable(p)]
    best_head: tuple[float, float, LinearFit] | None = None
    for c in ACTIONABLE_C:
        head = fit_actionable(x_act, y_act, w_act, c)
        f1 = balanced_f1(y_act_val, list(_scores(x_act_val, head)[:, 0] > 0))
        log(f"actionable head C={c}: validation balanced F1 {f1:.4f}")
        if best_head is None or f1 > best_head[0]:
            best_head = (f1, c, head)
    assert best_head is not None
    _, actionable_c, head = best_head

    untuned = ServiceModel(
        classes=services.classes,
        weights=np.hstack([services.coef, head.coef]).astype(np.float16).astype(np.float32),
        intercepts=np.concatenate([services.intercept, head.intercept]),
        idf=idf.astype(np.float16).astype(np.float32),
        temperature=temperature,
        settings=dict(MODEL_ONLY),
    )
    requests = _requests(e.train) + _requests(e.validation)
    untrained_requests = cross_fitted_untrained(
        untuned,
        _stack([_rows(hashed["madrid train"], sample), hashed["bengaluru train"]]),
        [True] * int(sample.sum()) + _actionable(b.train),
        e.train,
        hashed["examples train"],
        idf,
        actionable_c,
    )
    from plaza_classifier.classify import Classifier

    probe = Classifier(untuned)  # the validation examples: the head never saw them
    untrained_requests += [
        probe.signals(t)
        for t, label in zip(e.validation.texts, e.validation.labels, strict=True)
        if label in UNTRAINED
    ]
    log(f"{len(untrained_requests)} hand-written noise and public_space requests, held out")
    settings, rule_report = tune_rule(
        untuned, [*service_val, requests], actionable_val, log, untrained_requests
    )
    meta: dict[str, object] = {
        "trained_on": {
            "madrid_train_posts": len(m.train),
            "bengaluru_train_civic_posts": int(civic_train.sum()),
            "bengaluru_train_posts": len(b.train),
            "examples_train": len(e.train),
            "madrid_actionable_sample": int(sample.sum()),
        },
        "validation": {
            "service_c": service_c,
            "actionable_c": actionable_c,
            "temperature": round(temperature, 4),
            **rule_report,
        },
        "seed": SEED,
    }
    # Everything chosen: the final service model learns from the validation months too, and
    # from the hand-written requests of the services it knows (Barcelona's way of putting
    # things: "marquesina", "bancs", "contenidor"), weighted as in the actionable head. The
    # rule was tuned with a model that never saw them, so it does not over-trust the model.
    known = set(services.classes)
    written = [
        (part, [label in known for label in posts.labels])
        for part, posts in (("examples train", e.train), ("examples validation", e.validation))
    ]
    y_written = [
        label for posts in (e.train, e.validation) for label in posts.labels if label in known
    ]
    x_all = tfidf_matrix(
        _stack(
            [
                hashed["madrid train"],
                _rows(hashed["bengaluru train"], civic_train),
                hashed["madrid validation"],
                _rows(hashed["bengaluru validation"], civic_val),
                *(_rows(hashed[part], np.array(keep, dtype=bool)) for part, keep in written),
            ]
        ),
        idf,
    )  # in the order of y_train + y_val + y_written
    reports = len(y_train) + len(y_val)
    final = fit_services(
        x_all,
        y_train + y_val + y_written,
        service_c,
        weights=[1.0] * reports + [EXAMPLE_WEIGHT] * len(y_written),
    )
    if final.classes != services.classes:
        raise RuntimeError(f"refit learnt {final.classes}, not {services.classes}")
    log(
        f"final service model fitted on {reports} reports (training and validation) and "
        f"{len(y_written)} hand-written requests"
    )
    weights = np.hstack([final.coef, head.coef]).astype(np.float16).astype(np.float32)
    model = replace(
        untuned,
        weights=weights,
        intercepts=np.concatenate([final.intercept, head.intercept]),
        settings=settings,
        meta=meta,
    )
    log(f"trained in {time.perf_counter() - started:.0f} s")
    return Trained(model, meta)


def _actionable_figures(truth: Sequence[bool], decided: Sequence[bool]) -> dict[str, float]:
    """Balanced F1 (see balanced_f1), plain F1, recall and false-alarm rate of a rule."""
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(decided, dtype=bool)
    return {
        "balanced_f1": round(balanced_f1(truth, decided), 4),
        "f1": round(binary_f1(truth, decided), 4),
        "recall": round(float(np.mean(p[t])), 4),
        "false_alarms": round(float(np.mean(p[~t])), 4),
    }


def _civic(posts: Posts) -> npt.NDArray[np.bool_]:
    return np.array([label != NOT_ACTIONABLE for label in posts.labels], dtype=bool)


def _actionable(posts: Posts) -> list[bool]:
    return [label != NOT_ACTIONABLE for label in posts.labels]


def _accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    return float(np.mean(np.asarray(truth) == np.asarray(predicted))) if truth else 0.0


def _rows(matrix: Matrix, keep: npt.NDArray[np.bool_]) -> Matrix:
    """The rows of matrix where keep is true."""
    starts, ends = matrix.indptr[:-1][keep], matrix.indptr[1:][keep]
    take = np.concatenate(
        [np.arange(s, t) for s, t in zip(starts, ends, strict=True)]
        or [np.zeros(0, dtype=np.int64)]
    )
    indptr = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int32)
    return Matrix(indptr, matrix.indices[take], matrix.counts[take])


def _requests(posts: Posts) -> Posts:
    return posts.subset(label != NOT_ACTIONABLE for label in posts.labels)


Figures = Mapping[str, float]


def choose_service_rule(
    trials: Sequence[tuple[Mapping[str, float], Figures]],
    objective: Callable[[Figures], float],
    suffix: str = "",
) -> tuple[dict[str, float], dict[str, object]]:
    """The settings of one stage of the service rule among trials (settings, their validation
    figures): admissible when Madrid's macro-F1 and Bengaluru's accuracy are within
    SERVICE_TOLERANCE of the best of any trial, the best untrained_f1 among those, ties to the
    objective, then to the first (the grid lists smaller weights and floors first). Also a report:
    the best figures, how many were admissible, the choice and what the objective alone picks."""
    best_madrid = max(figures["madrid_macro_f1"] for _, figures in trials)
    best_bengaluru = max(figures["bengaluru_accuracy"] for _, figures in trials)
    admissible = [
        (trial, figures)
        for trial, figures in trials
        if figures["madrid_macro_f1"] >= best_madrid - SERVICE_TOLERANCE - 1e-9
        and figures["bengaluru_accuracy"] >= best_bengaluru - SERVICE_TOLERANCE - 1e-9
    ]
    chosen_trial, chosen = max(  # max() keeps the first of equals
        admissible,
        key=lambda pair: (pair[1]["untrained_f1"], round(objective(pair[1]), 9)),
    )
    alone_trial, alone = max(trials, key=lambda pair: round(objective(pair[1]), 9))

    def rule_of(trial: Mapping[str, float]) -> dict[str, float]:
        return {
            name: trial[f"{name}{suffix}"]
            for name in ("lexicon_weight", "untrained_floor", "no_service_below")
        }

    return dict(chosen_trial), {
        "best_madrid_macro_f1": best_madrid,
        "best_bengaluru_accuracy": best_bengaluru,
        "admissible": len(admissible),
        "chosen": {**rule_of(chosen_trial), **chosen},
        "objective_alone": {**rule_of(alone_trial), **alone},
    }


def tune_rule(
    model: ServiceModel,
    service_val: Sequence[Posts],
    actionable_val: Sequence[Posts],
    log: Callable[[str], None] = print,
    untrained_requests: Sequence[Signals] = (),
) -> tuple[dict[str, float], dict[str, object]]:
    """Chooses the combination rule's thresholds on validation posts. The service rule: among
    the settings that keep Madrid's macro-F1 and Bengaluru's accuracy within SERVICE_TOLERANCE
    of their best, the best F1 of the codes they do not label (UNTRAINED) on the hand-written
    requests, then Madrid's macro-F1 plus Bengaluru's accuracy plus a share of the hand-written
    requests' accuracy (EXAMPLES_SHARE). The actionable rule: its balanced F1 (balanced_f1) over
    Bengaluru's, the examples' and a sample of Madrid's validation posts; then the weight of an
    UNTRAINED code's cue, by the recall of untrained_requests (signals of hand-written noise and
    public_space requests the head never saw) among the weights that keep that balanced F1
    within ACTIONABLE_TOLERANCE (UNTRAINED_CUE_WEIGHTS). Reports the lexicon
    alone, the model alone and the combination, each stage's choice beside the one the
    objective alone would make, and for actionable the rule before the grid (CHATTER_VETO) and
    "always actionable"."""
    from plaza_classifier.classify import Classifier

    probe = Classifier(model)

    def signals_of(posts: Posts) -> list[Signals]:
        progress = tqdm(posts.texts, desc=f"{posts.source} rule", unit="post", leave=False)
        return [probe.signals(t) for t in progress]

    parts = [(posts, signals_of(posts)) for posts in service_val]
    labels = madrid_labels()
    # predictions under the current settings; a language's stage recomputes only its posts
    current: list[list[str]] = [[""] * len(posts) for posts, _ in parts]

    def in_stage(signals: Signals, stage: str | None) -> bool:
        """Whether a post's settings are the stage's: its own language's, or the common ones
        (stage None); every post for stage "all"."""
        if stage == "all":
            return True
        if stage is None:
            return signals.language not in OWN_SETTINGS
        return signals.language == stage

    def service_score(
        settings: Mapping[str, float], language: str | None = None, untrained_of: str | None = "all"
    ) -> dict[str, float]:
        """The figures of settings, recomputing the posts of language (None: all of them); the
        untrained codes' figures on the examples of the stage untrained_of (in_stage)."""
        figures = {}
        for (posts, signals), predicted in zip(parts, current, strict=True):
            trial = [
                Classifier.service_of(s, settings)[0] if language in (None, s.language) else old
                for s, old in zip(signals, predicted, strict=True)
            ]
            if posts.source == "madrid":
                figures["madrid_macro_f1"] = round(macro_f1(posts.labels, trial, labels), 4)
            else:
                figures[f"{posts.source}_accuracy"] = round(_accuracy(posts.labels, trial), 4)
            if posts.source == "examples":
                stage = [in_stage(s, untrained_of) for s in signals]
                truth = [t for t, keep in zip(posts.labels, stage, strict=True) if keep]
                guess = [g for g, keep in zip(trial, stage, strict=True) if keep]
                untrained = [g for t, g in zip(truth, guess, strict=True) if t in UNTRAINED]
                figures["untrained_f1"] = round(macro_f1(truth, guess, UNTRAINED), 4)
                figures["untrained_recall"] = round(
                    _accuracy([t for t in truth if t in UNTRAINED], untrained), 4
                )
        return figures

    settings = dict(model.settings)
    report: dict[str, object] = {
        # a weight this large leaves the model only ties to break
        "lexicon_only": service_score({**MODEL_ONLY, "lexicon_weight": 100.0}),
        "model_only": service_score(MODEL_ONLY),
    }

    def objective(figures: Mapping[str, float], language: str | None) -> float:
        return (
            figures["madrid_macro_f1"]
            + figures["bengaluru_accuracy"]
            + EXAMPLES_SHARE[language] * figures["examples_accuracy"]
        )

    # one setting for all languages, then Catalan's own, holding the others fixed (UNTRAINED and
    # SERVICE_TOLERANCE: the targets' figures within a tolerance of their best, then the
    # untrained codes' F1, then the objective)
    stages: dict[str, object] = {}
    for language in (None, *OWN_SETTINGS):
        suffix = "" if language is None else f".{language}"
        trials: list[tuple[dict[str, float], dict[str, float]]] = []
        for weight, floor, below in itertools.product(
            LEXICON_WEIGHT, UNTRAINED_FLOOR, NO_SERVICE_BELOW
        ):
            trial = {
                **settings,
                f"lexicon_weight{suffix}": weight,
                f"untrained_floor{suffix}": floor,
                f"no_service_below{suffix}": below,
            }
            trials.append((trial, service_score(trial, language, language)))
        chosen_trial, stage = choose_service_rule(
            trials, functools.partial(objective, language=language), suffix
        )
        stages["common" if language is None else language] = stage
        settings = chosen_trial
        for (_, signals), predicted in zip(parts, current, strict=True):
            predicted[:] = [Classifier.service_of(s, settings)[0] for s in signals]
    report["combined"] = service_score(settings)
    report["service_stages"] = stages
    log(
        f"service rule on validation: lexicon alone {report['lexicon_only']}, model alone "
        f"{report['model_only']}, combined {report['combined']} with {settings}"
    )

    act_signals = [s for posts in actionable_val for s in signals_of(posts)]
    act_truth = [a for posts in actionable_val for a in _actionable(posts)]

    def act_figures(trial: Mapping[str, float], *, cue_only: bool = False) -> dict[str, float]:
        rule = {**settings, **trial}
        decided = [Classifier.actionable_of(s, rule, cue_only=cue_only) for s in act_signals]
        return _actionable_figures(act_truth, decided)

    def best_of(trials: Iterable[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
        """The trial with the best balanced F1 (the first of equals: the grid lists smaller
        weights first) and its figures."""
        scored = [(act_figures(trial), dict(trial)) for trial in trials]
        figures, trial = max(scored, key=lambda pair: pair[0]["balanced_f1"])
        return trial, figures

    model_alone = [{**MODEL_ONLY, "actionable_at": at} for at in ACTIONABLE_AT]
    _, model_figures = best_of(model_alone)
    veto = best_of({**CHATTER_VETO, "actionable_at": at} for at in ACTIONABLE_AT)
    rules = itertools.product(ACTIONABLE_AT, CUE_WEIGHTS, CUE_WEIGHTS, CUE_WEIGHTS)
    chosen, chosen_figures = best_of(
        {
            "actionable_at": at,
            "complaint_weight": complaint,
            "service_cue_weight": cue,
            "chatter_weight": chatter,
        }
        for at, complaint, cue, chatter in rules
    )
    settings.update(chosen)
    untrained_weight, untrained_stage = choose_untrained_cue_weight(
        [
            (
                weight,
                act_figures({**chosen, "untrained_cue_weight": weight}),
                _recall(untrained_requests, {**settings, "untrained_cue_weight": weight}),
            )
            for weight in UNTRAINED_CUE_WEIGHTS
        ]
    )
    settings["untrained_cue_weight"] = untrained_weight
    chosen_figures = act_figures(settings)
    report["actionable"] = {
        "posts": len(act_truth),
        "requests": sum(act_truth),
        "always_actionable": _actionable_figures(act_truth, [True] * len(act_truth)),
        "cues_only": act_figures(chosen, cue_only=True),
        "model_only_at_0.5": act_figures(MODEL_ONLY),
        "model_only_best_threshold": model_figures,
        "chatter_veto_rule": {**veto[1], "actionable_at": veto[0]["actionable_at"]},
        "combined": chosen_figures,
        "untrained_cue": {"requests": len(untrained_requests), **untrained_stage},
    }
    log(f"actionable rule on validation: {report['actionable']}")
    return settings, report


def _recall(requests: Sequence[Signals], settings: Mapping[str, float]) -> float:
    """The share of requests (their signals) the actionable rule of settings calls requests."""
    from plaza_classifier.classify import Classifier

    if not requests:
        return 0.0
    return round(sum(Classifier.actionable_of(s, settings) for s in requests) / len(requests), 4)


def choose_untrained_cue_weight(
    trials: Sequence[tuple[float, Figures, float]],
) -> tuple[float, dict[str, object]]:
    """The untrained_cue_weight among trials (weight, actionable figures on validation, recall
    of the hand-written untrained requests), smaller weights first: admissible when the balanced
    F1 is within ACTIONABLE_TOLERANCE of the first's (weight 0, the rule as tuned without it),
    then the best recall, ties to the balanced F1, then to the first. Also a report: the choice,
    how many were admissible, and every trial's two figures."""
    floor = trials[0][1]["balanced_f1"] - ACTIONABLE_TOLERANCE - 1e-9
    admissible = [trial for trial in trials if trial[1]["balanced_f1"] >= floor]
    weight, figures, recall = max(  # max() keeps the first of equals
        admissible, key=lambda trial: (trial[2], trial[1]["balanced_f1"])
    )
    return weight, {
        "admissible": len(admissible),
        "chosen": {"untrained_cue_weight": weight, "untrained_recall": recall, **figures},
        "trials": [
            {"untrained_cue_weight": w, "balanced_f1": f["balanced_f1"], "untrained_recall": r}
            for w, f, r in trials
        ],
    }


def cross_fitted_untrained(
    model: ServiceModel,
    rest: Matrix,
    rest_actionable: Sequence[bool],
    examples: Posts,
    examples_rows: Matrix,
    idf: npt.NDArray[np.float32],
    c: float,
) -> list[Signals]:
    """The signals of the examples' requests of UNTRAINED codes, each read by an actionable head
    that never saw it nor its translations: fitted like the shipped one (on `rest`, Madrid's
    sample and Bengaluru's training posts, and the examples, x EXAMPLE_WEIGHT) without the
    examples of its fold (CROSS_FOLDS seeded folds of their groups). The shipped head has seen
    them and calls them all requests: they would measure nothing."""
    from plaza_classifier.classify import Classifier

    if not examples.groups:
        raise ValueError("cross_fitted_untrained needs the examples' translation groups")
    distinct = sorted(set(examples.groups))
    order = np.random.default_rng(SEED + 2).permutation(len(distinct))
    fold_of = {distinct[g]: i % CROSS_FOLDS for i, g in enumerate(order)}
    folds = np.array([fold_of[g] for g in examples.groups])
    wanted = np.array([label in UNTRAINED for label in examples.labels], dtype=bool)
    found: list[Signals] = []
    for part in range(CROSS_FOLDS):
        keep = folds != part
        judged = wanted & ~keep
        if not judged.any():
            continue
        kept = examples.subset(keep)
        head = fit_actionable(
            tfidf_matrix(_stack([rest, _rows(examples_rows, keep)]), idf),
            [*rest_actionable, *_actionable(kept)],
            [1.0] * len(rest_actionable) + [EXAMPLE_WEIGHT] * len(kept),
            c,
        )
        probe = Classifier(
            replace(
                model,
                weights=np.hstack([model.weights[:, :-1], head.coef])
                .astype(np.float16)
                .astype(np.float32),
                intercepts=np.concatenate([model.intercepts[:-1], head.intercept]),
            )
        )
        found += [probe.signals(t) for t, j in zip(examples.texts, judged, strict=True) if j]
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=packaged_artifact(), help="artifact to write")
    args = parser.parse_args(argv)
    if not (args.data / "madrid").is_dir():
        sys.exit(f"no Madrid data under {args.data}: pass --data ../shared/data")
    corpus = load_corpus(args.data)
    trained = train(corpus, log=lambda line: print(line, file=sys.stderr))
    version = trained.model.save(args.out)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB), version {version}")


if __name__ == "__main__":
    main()
