"""Measures the committed service model on the held-out test splits: `make eval`.

Prints per-class precision, recall and F1, the Madrid macro-F1 and confusion matrix, the
Bengaluru accuracy, the actionable precision and recall per set beside "always actionable",
language sanity figures, Madrid's district from coordinates and from text, and throughput of the
full classify() path, and writes them into model/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

import numpy as np
from plaza.city import City, fold
from plaza.taxonomy import OTHER
from tqdm import tqdm

from plaza_classifier.classify import Classifier, PostInput, Signals
from plaza_classifier.language import detect_language
from plaza_classifier.model import ServiceModel, packaged_artifact
from plaza_classifier.train import (
    DEFAULT_DATA,
    EXAMPLE_WEIGHT,
    EXAMPLES,
    MADRID_ACTIONABLE_SAMPLE,
    MADRID_TEST,
    MADRID_VALIDATION,
    MODEL_ONLY,
    NOT_ACTIONABLE,
    UNTRAINED,
    Posts,
    balanced_f1,
    binary_f1,
    load_corpus,
    macro_f1,
    madrid_labels,
)

TIMED_POSTS: Final = 5000
# Hand-written noise and public_space posts, and posts that only look like them ("this song is so
# loud I love it"), written and frozen before the rule had untrained_cue_weight; `make train`
# never reads them (tests/unit/test_classifier_audit.py checks both). More such sets are passed
# with --check (`make eval` passes tests/unit/data/noise_lookalikes.jsonl, frozen before the
# lookalike cues: tests/unit/test_noise_lookalikes.py).
NOISE_CHECK: Final = EXAMPLES.with_name("noise_check.jsonl")
BARCELONA_BOX: Final = (41.36, 41.44, 2.11, 2.21)  # lat min, lat max, lon min, lon max


def per_class(
    truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> list[tuple[str, float, float, float, int]]:
    """(label, precision, recall, F1, support) per label."""
    t, p = np.asarray(truth), np.asarray(predicted)
    rows = []
    for label in labels:
        tp = float(np.sum((t == label) & (p == label)))
        predicted_n = float(np.sum(p == label))
        support = int(np.sum(t == label))
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append((label, precision, recall, f1, support))
    return rows


def confusion(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> str:
    counts = Counter(zip(truth, predicted, strict=True))
    short = [label[:7] for label in labels]
    lines = ["truth \\ predicted".ljust(17) + "".join(s.rjust(8) for s in short)]
    for label in labels:
        lines.append(
            label.ljust(17) + "".join(str(counts[(label, other)]).rjust(8) for other in labels)
        )
    return "\n".join(lines)


def _signals(classifier: Classifier, posts: Posts, label: str) -> list[Signals]:
    return [classifier.signals(t) for t in tqdm(posts.texts, desc=label, unit="post", leave=False)]


def timed_posts(texts: Sequence[str]) -> list[PostInput]:
    """The posts the throughput figures time: every other one with a point inside Barcelona."""
    rng = random.Random(7)
    lat0, lat1, lon0, lon1 = BARCELONA_BOX
    return [
        PostInput(text, rng.uniform(lat0, lat1), rng.uniform(lon0, lon1))
        if i % 2
        else PostInput(text)
        for i, text in enumerate(texts)
    ]


def throughput(classifier: Classifier, texts: Sequence[str], city: City) -> dict[str, float]:
    """Single-thread posts/s and per-post latency of the full classify() path, location
    included (timed_posts)."""
    posts = timed_posts(texts)
    for text in texts[:200]:  # warm caches as a running service has them
        classifier.classify(text, city)
    latencies = []
    started = time.perf_counter()
    for post in posts:
        t0 = time.perf_counter()
        classifier.classify(post.text, city, lat=post.lat, lon=post.lon)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "posts_per_s": len(texts) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "max_ms": 1000 * latencies[-1],
    }


BATCH: Final = 500  # posts per classify_batch call, as `plaza classify` reads them


def batch_throughput(classifier: Classifier, texts: Sequence[str], city: City) -> float:
    """Single-thread posts/s of classify_batch (the batch path of `plaza classify`), the same
    posts and points as throughput()."""
    posts = timed_posts(texts)
    classifier.classify_batch(posts[:BATCH], city)  # warm caches as a running service has them
    started = time.perf_counter()
    for at in range(0, len(posts), BATCH):
        classifier.classify_batch(posts[at : at + BATCH], city)
    return len(posts) / (time.perf_counter() - started)


def district_agreement(data: Path, city_file: Path) -> tuple[int, int]:
    """How many Madrid reports our point-in-polygon puts in the district Madrid gave them."""
    city = City.from_config(city_file)
    agree = placed = 0
    with gzip.open(data / "madrid" / "avisos_2021-2023.csv.gz", "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if not (row["district_from_latlon"] and row["lat"] and row["long"]):
                continue
            placed += 1
            found = city.locate(float(row["lat"]), float(row["long"]))
            if (
                found
                and found.district
                and fold(found.district.name) == fold(row["district_from_latlon"])
            ):
                agree += 1
    return agree, placed


def text_placement(data: Path, city_file: Path, field: str) -> tuple[int, int, int]:
    """(reports, placed, placed in Madrid's district) when the held-out months' reports are
    placed by their text `field` alone ("address": a street and number; "description"), against
    the district Madrid computed from their point. The only labelled check of placing by text
    here: Madrid's city file names districts and landmarks, not streets."""
    city = City.from_config(city_file)
    reports = placed = agree = 0
    with gzip.open(data / "madrid" / "avisos_2021-2023.csv.gz", "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["requested_datetime"][:7] not in MADRID_TEST or not row["district_from_latlon"]:
                continue
            reports += 1
            found = city.find_in_text(row[field])
            if found is None or found.district is None:
                continue
            placed += 1
            agree += fold(found.district.name) == fold(row["district_from_latlon"])
    return reports, placed, agree


def actionable_figures(truth: Sequence[bool], decided: Sequence[bool]) -> str:
    """Precision, recall, F1 and, with non-requests present, their false-alarm rate and the
    balanced F1 (train.balanced_f1), as one row of the actionable table."""
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(decided, dtype=bool)
    precision = float(np.mean(t[p])) if p.any() else 0.0
    recall = float(np.mean(p[t])) if t.any() else 0.0
    row = f"{precision:>9.3f} {recall:>7.3f} {binary_f1(truth, decided):>7.4f}"
    if t.all():
        return row + f" {'-':>7} {'-':>8}"
    return row + f" {float(np.mean(p[~t])):>7.3f} {balanced_f1(truth, decided):>8.4f}"


def load_check(path: Path = NOISE_CHECK) -> tuple[Posts, list[str]]:
    """The frozen check set: its posts (labelled as the examples are: a service code, or
    NOT_ACTIONABLE) and each one's language."""
    import json

    texts: list[str] = []
    labels: list[str] = []
    languages: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            post = json.loads(line)
            texts.append(str(post["text"]))
            labels.append(str(post["service_code"]) if post["actionable"] else NOT_ACTIONABLE)
            languages.append(str(post["language"]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{number}: not a check post ({e})") from e
    return Posts(texts, labels, "noise check"), languages


def check_figures(
    classifier: Classifier, settings: Mapping[str, float], path: Path = NOISE_CHECK
) -> list[str]:
    """The actionable and service figures on a frozen check set, per language and in all, for
    the shipped rule, the same rule deaf to the lookalike cues (keywords.LOOKALIKE), the rule
    without untrained_cue_weight, and the model alone."""
    posts, languages = load_check(path)
    signals = [classifier.signals(t) for t in posts.texts]
    truth = [label != NOT_ACTIONABLE for label in posts.labels]
    rules = (
        ("shipped rule", settings),
        ("without lookalike cues", settings),
        ("without untrained_cue_weight", {**settings, "untrained_cue_weight": 0.0}),
        ("model alone at 0.5", MODEL_ONLY),
    )
    lines = [
        "set / rule                        posts  requests  precision  recall      F1  f.alarm  bal.F1"
    ]
    for language in (None, "ca", "es", "en"):
        rows = [i for i, lang in enumerate(languages) if language in (None, lang)]
        lines.append(
            f"{language or 'all of them':<32} {len(rows):>6} {sum(truth[i] for i in rows):>9}"
        )
        for name, rule in rules:
            deaf = name == "without lookalike cues"
            decided = [
                Classifier.actionable_of(
                    replace(signals[i], lookalike=False) if deaf else signals[i], rule
                )
                for i in rows
            ]
            lines.append(f"  {name:<42} {actionable_figures([truth[i] for i in rows], decided)}")
    requests = [
        (s, label) for s, label in zip(signals, posts.labels, strict=True) if label in UNTRAINED
    ]
    right = sum(Classifier.service_of(s, settings)[0] == label for s, label in requests)
    lines.append(f"service of the requests (shipped rule): {right}/{len(requests)} right")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument(
        "--model", type=Path, default=packaged_artifact(), help="artifact to evaluate"
    )
    parser.add_argument("--card", type=Path, default=packaged_artifact().with_name("MODEL_CARD.md"))
    parser.add_argument(
        "--check",
        type=Path,
        action="append",
        default=[],
        help="another frozen check set (noise_check.jsonl's format) to report; repeatable",
    )
    parser.add_argument(
        "--madrid-city",
        type=Path,
        default=Path("deploy/cities/madrid.toml"),
        help="Madrid's city file, for the district check",
    )
    args = parser.parse_args(argv)
    if not (args.data / "madrid").is_dir():
        sys.exit(f"no Madrid data under {args.data}: pass --data ../shared/data")

    model = ServiceModel.load(args.model)
    classifier = Classifier(model)
    lexicon = Classifier(None)
    settings = model.settings
    corpus = load_corpus(args.data)
    out: list[str] = []

    def say(line: str = "") -> None:
        print(line)
        out.append(line)

    say(f"model {model.version} ({args.model.stat().st_size / 1e6:.2f} MB), rule {dict(settings)}")

    madrid = corpus.madrid.test
    signals = _signals(classifier, madrid, "Madrid test")
    predicted = [Classifier.service_of(s, settings)[0] for s in signals]
    lexicon_only = [
        Classifier.service_of(replace(s, prediction=None), settings)[0] for s in signals
    ]
    model_only = [Classifier.service_of(s, MODEL_ONLY)[0] for s in signals]
    labels = madrid_labels()
    shown = [*labels, OTHER, *sorted({*predicted} - {*labels, OTHER})]
    say()
    say(f"## Madrid, held-out months {MADRID_TEST[0]}..{MADRID_TEST[-1]} ({len(madrid)} reports)")
    say()
    say("service_code       precision  recall      F1  support")
    for label, precision, recall, f1, support in per_class(madrid.labels, predicted, shown):
        say(f"{label:<17} {precision:>9.3f} {recall:>7.3f} {f1:>7.3f} {support:>8}")
    macro = macro_f1(madrid.labels, predicted, labels)
    say()
    say(
        f"macro-F1 over {len(labels)} codes (all Madrid codes but other): {macro:.4f} (target 0.85)"
    )
    say(
        f"  lexicon alone {macro_f1(madrid.labels, lexicon_only, labels):.4f}, model alone {macro_f1(madrid.labels, model_only, labels):.4f}"
    )
    say(f"accuracy {np.mean(np.asarray(madrid.labels) == np.asarray(predicted)):.4f}")
    say()
    say("confusion matrix (rows: citizen's category, columns: predicted)")
    say(confusion(madrid.labels, predicted, shown))

    bengaluru = corpus.bengaluru.test
    civic = bengaluru.subset(label != NOT_ACTIONABLE for label in bengaluru.labels)
    b_signals = _signals(classifier, bengaluru, "Bengaluru test")
    civic_signals = [
        s for s, label in zip(b_signals, bengaluru.labels, strict=True) if label != NOT_ACTIONABLE
    ]
    b_predicted = [Classifier.service_of(s, settings)[0] for s in civic_signals]
    b_accuracy = float(np.mean(np.asarray(civic.labels) == np.asarray(b_predicted)))
    say()
    say(f"## Bengaluru, seeded held-out 10% ({len(civic)} civic complaints)")
    say(f"service accuracy {b_accuracy:.4f} (target 0.85)")

    examples = corpus.examples.test
    e_signals = _signals(classifier, examples, "examples test")
    say()
    say(
        "## Hand-written examples, test split: service of the requests (few: a figure to watch, "
        "not a measure)"
    )
    say(
        "Noise and public_space are the codes Madrid and Bengaluru do not label "
        "(train.UNTRAINED): these examples are the only held-out posts that have them."
    )
    requested = [
        (s, label)
        for s, label in zip(e_signals, examples.labels, strict=True)
        if label != NOT_ACTIONABLE
    ]
    for name, service_rule in (("shipped rule", settings), ("model alone", MODEL_ONLY)):
        guesses = [(Classifier.service_of(s, service_rule)[0], label) for s, label in requested]
        right = sum(guess == label for guess, label in guesses)
        by_code = []
        for code in UNTRAINED:
            of_code = [guess == label for guess, label in guesses if label == code]
            by_code.append(f"{code} recall {sum(of_code)}/{len(of_code)}")
        say(
            f"  {name:<13} service accuracy {right}/{len(guesses)} "
            f"({right / max(len(guesses), 1):.3f}); " + ", ".join(by_code)
        )
    say()
    say(
        f"## Hand-written noise and public_space check, frozen ({NOISE_CHECK.name}: never "
        "trained or tuned on)"
    )
    say(
        "Requests about noise and public space in ca/es/en, and posts that only look like them. "
        "Written by the people who wrote the lexicon and few: a figure to watch, not a measure."
    )
    say()
    for line in check_figures(classifier, settings):
        say(line)
    for path in args.check:
        say()
        say(f"## Hand-written check, frozen ({path.name}: never trained or tuned on)")
        say()
        for line in check_figures(classifier, settings, path):
            say(line)
    madrid_sample = madrid.subset(i % 20 == 0 for i in range(len(madrid)))
    m_signals = signals[::20]
    say()
    say("## Actionable or not (held-out)")
    say(
        "Madrid has only requests: its rows measure recall alone. Balanced F1 weighs requests and "
        "non-requests equally (train.balanced_f1); calling everything a request scores 0.6667."
    )
    say()
    say(
        "set / rule                        posts  requests  precision  recall      F1  f.alarm  bal.F1"
    )
    all_truth: list[bool] = []
    all_predicted: list[bool] = []
    for name, posts, sig in (
        ("Bengaluru test", bengaluru, b_signals),
        ("hand-written examples test", examples, e_signals),
        ("Madrid test, 1 in 20", madrid_sample, m_signals),
    ):
        truth = [label != NOT_ACTIONABLE for label in posts.labels]
        decided = [Classifier.actionable_of(s, settings) for s in sig]
        rules = (
            ("shipped rule", decided),
            (
                "model alone at 0.5",
                [s.prediction is not None and s.prediction.actionable >= 0.5 for s in sig],
            ),
            ("cues alone", [Classifier.actionable_of(s, settings, cue_only=True) for s in sig]),
            ("always actionable", [True] * len(truth)),
        )
        say(f"{name:<32} {len(posts):>6} {sum(truth):>9}")
        for rule, answers in rules:
            say(f"  {rule:<42} {actionable_figures(truth, answers)}")
        all_truth += truth
        all_predicted += decided
    say(f"{'all of them':<32} {len(all_truth):>6} {sum(all_truth):>9}")
    say(f"  {'shipped rule':<42} {actionable_figures(all_truth, all_predicted)}")
    say(f"  {'always actionable':<42} {actionable_figures(all_truth, [True] * len(all_truth))}")
    actionable_f1 = balanced_f1(all_truth, all_predicted)
    madrid_recall = float(np.mean([Classifier.actionable_of(s, settings) for s in signals]))
    say(f"Madrid test, all {len(madrid)} reports (all requests): recall {madrid_recall:.4f}")
    say()
    say("## Language detection (sanity)")
    es = np.mean([detect_language(t) == "es" for t in madrid_sample.texts])
    en = np.mean([detect_language(t) == "en" for t in civic.texts])
    say(f"Madrid reports detected as es: {es:.3f}; Bengaluru complaints detected as en: {en:.3f}")

    say()
    say("## District from coordinates (Madrid, every report with a district)")
    agree, placed = district_agreement(args.data, args.madrid_city)
    say(
        f"agrees with Madrid's district_from_latlon on {agree / placed:.4%} of {placed} points "
        "(target 99%)"
    )
    say()
    say(
        f"## District from text alone (Madrid, held-out months {MADRID_TEST[0]}..{MADRID_TEST[-1]})"
    )
    for field in ("address", "description"):
        reports, found, right = text_placement(args.data, args.madrid_city, field)
        say(
            f"{field}: places {found / reports:.2%} of {reports} reports, "
            f"{right / max(found, 1):.2%} of those in Madrid's district"
        )

    city = City.barcelona(args.data / "barcelona")
    timed = (madrid.texts[::16] + bengaluru.texts[::4])[:TIMED_POSTS]
    speed = throughput(classifier, timed, city)
    say()
    say(f"## Throughput (one core, {len(timed)} posts, classify() with location)")
    say(
        f"{speed['posts_per_s']:.0f} posts/s; p50 {speed['p50_ms']:.3f} ms, p99 {speed['p99_ms']:.3f} ms, max {speed['max_ms']:.3f} ms (target 5000 posts/s, p99 2 ms)"
    )
    batch_speed = batch_throughput(classifier, timed, city)
    say(f"in batches of {BATCH} (classify_batch): {batch_speed:.0f} posts/s (target 5000)")
    lexicon_speed = throughput(lexicon, timed, city)
    say(
        f"lexicon alone: {lexicon_speed['posts_per_s']:.0f} posts/s; p99 {lexicon_speed['p99_ms']:.3f} ms"
    )

    write_card(
        args.card,
        model,
        args.model,
        out,
        {
            "macro": macro,
            "bengaluru": b_accuracy,
            "actionable": actionable_f1,
            "madrid_recall": madrid_recall,
            "district": agree / placed,
            **speed,
            "batch_posts_per_s": batch_speed,
        },
    )
    print(f"\nwrote {args.card}")


def write_card(
    path: Path,
    model: ServiceModel,
    artifact: Path,
    figures: Sequence[str],
    headline: Mapping[str, float],
) -> None:
    import json

    validation = json.dumps(model.meta.get("validation", {}), indent=2, sort_keys=True)
    trained_on = json.dumps(model.meta.get("trained_on", {}), indent=2, sort_keys=True)
    text = CARD.format(
        version=model.version,
        examples=sum(1 for line in EXAMPLES.read_text(encoding="utf-8").splitlines() if line),
        example_weight=EXAMPLE_WEIGHT,
        madrid_sample=MADRID_ACTIONABLE_SAMPLE,
        size=artifact.stat().st_size / 1e6,
        classes=", ".join(model.classes),
        validation_months=", ".join(MADRID_VALIDATION),
        test_months=f"{MADRID_TEST[0]}..{MADRID_TEST[-1]}",
        trained_on=trained_on,
        validation=validation,
        figures="\n".join(figures),
        macro=headline["macro"],
        bengaluru=headline["bengaluru"],
        actionable=headline["actionable"],
        speed=headline["batch_posts_per_s"],
        p99=headline["p99_ms"],
        targets=_targets(headline),
    )
    path.write_text(text, encoding="utf-8")


TARGETS: Final = (  # (headline key, what, target or None, at least (True) or at most, format)
    ("macro", "Madrid macro-F1, held-out months", 0.85, True, "{:.4f}"),
    ("bengaluru", "Bengaluru accuracy, held-out 10%", 0.85, True, "{:.4f}"),
    (
        "actionable",
        "actionable balanced F1, held-out sets (always actionable: 0.6667)",
        0.9,
        True,
        "{:.4f}",
    ),
    ("madrid_recall", "actionable recall, Madrid held-out requests", None, True, "{:.4f}"),
    ("district", "Madrid district from coordinates", 0.99, True, "{:.4%}"),
    ("batch_posts_per_s", "posts/s on one core, in batch", 5000.0, True, "{:.0f}"),
    ("p99_ms", "p99 ms per post, one at a time", 2.0, False, "{:.3f}"),
    ("posts_per_s", "posts/s on one core, one at a time", None, True, "{:.0f}"),
)


def _targets(headline: Mapping[str, float]) -> str:
    lines = ["| figure | measured | target | |", "|---|---|---|---|"]
    for key, what, target, at_least, shape in TARGETS:
        if key not in headline:
            continue
        value = headline[key]
        if target is None:
            lines.append(f"| {what} | {shape.format(value)} | | for information |")
            continue
        met = value >= target if at_least else value <= target
        bound = ">=" if at_least else "<="
        shown_target = shape.format(target) if "%" in shape else f"{target:g}"
        verdict = "met" if met else "MISSED"
        lines.append(f"| {what} | {shape.format(value)} | {bound} {shown_target} | {verdict} |")
    return "\n".join(lines)


CARD: Final = """# Service model card

Version `{version}`, {size:.2f} MB (`service_model.npz`). Generated by `make eval`; rebuild the
model with `make train` (reads `../shared/data`, deterministic: fixed seeds, fixed splits).

## What it is
A linear model over hashed TF-IDF features (plaza_classifier.features): folded text (lowercase,
no accents, digits as 0), char n-grams 2-5 inside word boundaries, words and word bigrams, hashed
with zlib.crc32 into 2^18 columns, sublinear tf, idf, L2 norm. One-vs-rest linear SVM
(scikit-learn LinearSVC at training time) over the service codes {classes}; scores become
probabilities by a softmax with a temperature fitted on validation. A second head, a logistic
regression on the same features, gives the probability that a post is a request at all.
Weights are float16; inference is numpy only. The keyword lexicon (keywords.py) is combined with
it by the rule documented in classify.py.

## Data and splits
- Madrid Avisos (Spanish, 263k reports; label: the citizen's category through
  `madrid/category_map.csv`). Split by time: train on the months before {validation_months}
  (from 2021-06; months 2022-03..2023-03 are missing from the data), validate on
  {validation_months}, test on {test_months}, the last four months: a model in production
  always meets later reports than it learnt from, and four months (~80k reports) span a change
  of season. Once every choice is made on validation, the final service model is fitted again on
  the training and validation months (and Bengaluru's training and validation parts).
- Bengaluru complaints (English, `bengaluru/category_map.csv`; non-civic tweets are "not
  actionable"): seeded 80/10/10 shuffle (no usable dates).
- `services/classifier/data/actionable_examples.jsonl`: {examples} hand-written posts in
  ca/es/en (praise, thanks, jokes, politics, spam, chatter; requests labelled with their
  service code, noise and public_space included), most of them one sentence in three languages.
  A sentence's translations share a `group` and the seeded 80/10/10 split shuffles groups, so no
  test post has its translation in training. Their training part is weighted x{example_weight:g}
  in the actionable head; the rule is tuned on their validation part (actionable) and on their
  training and validation requests (service), with the service model fitted before them.
- What is held out, exactly: Madrid's test months, Bengaluru's test 10% and the examples' test
  groups are read only by `make eval`. The shipped service model is fitted once more, after
  every choice, on the training and validation months and on the examples' training and
  validation requests (x{example_weight:g}): it has seen those requests, so only the examples'
  test split measures it out of sample. The lexicon (keywords.py) and the examples were written
  by the same people, the chatter cues with the examples in view: the examples' figures are not
  independent of the lexicon, and they are few (about 30 test posts).
- The actionable head also sees a seeded sample of {madrid_sample:,} Madrid training reports
  (all requests).

Trained on:
```
{trained_on}
```

Choices made on validation (never on test): regularisation, temperature, the combination rule
thresholds; the lexicon alone, the model alone and the combination on validation:
```
{validation}
```

## Test figures (`make eval`)
Headline: Madrid macro-F1 {macro:.4f} (target 0.85), Bengaluru accuracy {bengaluru:.4f} (target
0.85), actionable balanced F1 {actionable:.4f} (target 0.9; "always actionable" scores 0.6667),
{speed:.0f} posts/s in batch and p99 {p99:.3f} ms per post on one core (target 5,000 posts/s and
2 ms). Timings depend on the machine.

```
{figures}
```

## Targets
{targets}

How the figures come about:
- The combination rule (classify.py) scores each service log(model probability) + a weight x
  its lexicon cues: a confident model needs several cues against it, an unsure one gives way
  to one, and cues that agree with the model reinforce it. Noise and public_space, which
  neither Madrid nor Bengaluru labels, count as if the model gave them `untrained_floor` when
  the lexicon names them, and are out of the running (and out of the confidence) otherwise.
- How the rule's settings are chosen (train.tune_rule), once for every language and then for
  Catalan alone: the settings whose validation Madrid macro-F1 and Bengaluru accuracy are both
  within 0.005 of the best the grid reaches are admissible; among them, the best F1 of noise and
  public_space on the stage's hand-written validation requests wins, and ties go to Madrid's
  macro-F1 + Bengaluru's accuracy + a share of the examples' accuracy (0.05; 1 for Catalan).
  Why: on Madrid's and Bengaluru's reports a noise or public_space answer can only be an error,
  and a right one shows only in the examples, so an objective summed over them pushes the two
  codes' floor down (it chose 0.001 outside Catalan once the examples were split with their
  translations, and Spanish and English noise complaints went to other services). The
  tolerance says what the targets give up for the codes they cannot see; "service_stages" in
  the validation report shows each stage's admissible best, the choice, and what the summed
  objective alone would have chosen. The floor's grid reaches 0.5, so that the choice is not
  pinned to its edge. On validation the combination beats the model alone on Madrid and
  Bengaluru too (the lexicon knows words the model saw too rarely).
- Actionable: the cues move the model's log-odds by weights chosen on validation together with
  the threshold, on the balanced F1 (requests and non-requests weighed equally: the validation
  posts are ~80% requests, and there plain F1 favours answering "request" to everything). The
  grid includes the model alone (all weights 0) and the validation report shows the rule before
  it, where a chatter cue vetoed the model ("chatter_veto_rule"). Danger (urgency cues) is always
  actionable, and a post with nothing readable never is.
- Noise and public_space requests: the actionable head never saw one (Bengaluru labels neither,
  and its non-requests are tweets about loud music and sleepless nights), so it doubted English
  noise complaints ("The bar downstairs plays loud music until 3am, we cannot sleep": 0.28). A
  cue of a code the model never learnt adds `untrained_cue_weight` to the log-odds, chosen like
  their floor: the weights that keep the validation balanced F1 within 0.005 of the rule without
  it are admissible, and among them the best recall of the hand-written noise and public_space
  requests wins, each judged by a head fitted without it and its translations (five folds of
  the examples' groups; "untrained_cue" in the validation report). A lookalike cue (a song,
  headphones, a podcast, a drill bought: keywords.LOOKALIKE) takes the noise and public_space
  cues' weights away, leaving the model to judge the post. The frozen check sets above measure
  the result on posts no choice saw, look-alikes included; the second was written before the
  lookalike cues, and its "without lookalike cues" row shows what they alone change (one's own
  sleepless night counts as a noise cue only with its cause in every row).
- The weakest Madrid categories are small and overlap: street_furniture (~120 test reports;
  "Banco" vs vandalism and "other"), parks_trees vs pavement (roots and tree pits) and traffic
  vs "other" (requests for new installations).
- Throughput: the lexicon's ~600 regular expressions are indexed by the three characters they
  can start with (lexicon.py), so a post is read once instead of once per pattern; folding takes
  a translate table for Latin text, and the place matcher reads a text word by word. What is
  left is the model's features (~40 us), language detection and the rule.

## Limits
- Madrid labels are the category the citizen picked: some are wrong, and several categories
  overlap (a broken bench is `street_furniture` or `graffiti`/vandalism; "other" holds requests
  for new installations of anything), so the ceiling of any model on them is below 1.
- No labelled Catalan, noise or public_space data exists here: those rely on the lexicon and
  on char n-grams shared between Spanish and Catalan; they are checked by the unit tests'
  realistic posts and by the hand-written check set above, not by real data.
- Bengaluru's categories are noisy and its non-civic posts are generic English tweets, easier
  to tell apart than a Barcelona citizen's chatter. Spanish and Catalan non-requests exist only
  as ~100 hand-written examples, so Spanish chatter with no cue word ("He quedado con mis amigos
  para cenar") often gets an actionable probability above the threshold: the chatter cues of
  the lexicon catch thanks, praise, jokes and politics, not plain small talk. More Spanish and
  Catalan non-requests are the fix.
- Urgency has no figure: no data here labels danger (Madrid's categories do not), and a set
  written by the people who wrote the urgency cues would measure nothing. The cues cover the
  phenomena in ca/es/en (falling trees and branches, gas, floods, open drains, live wires, fire,
  injuries, accidents) and tests/unit/test_keyword_classifier.py checks them on posts.
- Place from text: district, barri and landmark names only. Street names never place a post
  ("carrer de Verdi", "c/ Aragó 250", an Open311 address without a district): the street
  register in the shared data has no district column. The Madrid figure above shows what that
  means for street addresses.
- The model learnt Madrid's routing, which is not always the taxonomy's wording: roots lifting
  a tree pit's paving go to pavement (315 of 333 such Madrid reports), not parks_trees.
- The rule is chosen for Madrid's and Bengaluru's reports, where the model is strong; on
  Barcelona-style posts in Spanish and English a confident model still overrules one or two
  lexicon cues. The hand-written requests show it ("examples_accuracy" above, against the
  lexicon alone), and so do a few of the unit tests' realistic posts, kept as expected failures
  (tests/unit/test_keyword_classifier.py).
- Noise and public_space rest on the lexicon and on `untrained_floor`, chosen on 11 hand-written
  validation requests outside Catalan and 4 in Catalan, and measured held out on 3 noise
  complaints (the examples' test split above; no public_space): a figure to watch, not a
  measure. The floor lets one noise or public_space cue win against an unsure model, so some
  Madrid reports go there: a rattling manhole cover's "ruido" (water_sewer, pavement), a
  "botellón" by the benches (street_furniture, cleaning), about 0.2% of the held-out months
  (the confusion matrix's last two columns). Some are Barcelona's right answer, none counts
  as right in Madrid's figure: the tolerance bounds what they cost it. Labelled Barcelona posts
  are the fix.
- Whether a noise or public_space post is a request: `untrained_cue_weight` is chosen on 15
  hand-written requests and on tweets, so one noise cue outweighs a model that only doubts the
  post (0.17, not 0.04). The lexicon says when the noise word is no nuisance only where it
  knows the context: something listened to or bought (keywords.LOOKALIKE: "this track", "mi
  canción", "noise-cancelling headphones", "he comprat un trepant") and one's own sleepless
  night without its cause ("No puedo dormir, mañana tengo examen" names no noise). Other
  look-alikes are still requests for the cue's sake ("Which dishwasher is the least noisy?",
  "Qué jaleo de partido ayer"), a lookalike cue leaves a confident model a request ("Esta
  canción a todo volumen en el coche": the model's own 0.84, as for much Spanish chatter), and
  a noise complaint that calls the nuisance "this song" rests on the model alone. A noise
  complaint that no cue names ("the bass shakes the whole building") rests on the model alone
  too, and a confident model still sends some noise complaints to other services (the check
  sets' service figure). Labelled Barcelona requests and non-requests are the fix.
- Actionable: chatter earned no weight on validation, so the model alone judges thanks and
  jokes; it learnt Catalan "gràcies" from a few hand-written thanks and doubts a Catalan request
  that opens with it. English "Thanks ... the bin is still overflowing" or "lol there's a dead
  rat" get a low probability too: more Barcelona-like requests and non-requests are the fix.
"""


if __name__ == "__main__":
    main()
