"""`plaza classify`: posts as JSON lines on stdin, one classification per line on stdout."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO, TextIO

import orjson
from plaza.city import City
from plaza_classifier.classify import Classification, PostInput, default_classifier
from tqdm import tqdm

BATCH_LINES = 1000
"""Output is written and flushed this many posts at a time, not line by line."""

PROGRESS_AFTER_LINES = 1000
"""Without --progress, the bar appears only once a piped input is this long."""

JsonValue = str | int | float | bool | None | list[object] | dict[str, object]


class Refused(ValueError):
    """A line that cannot be classified; the message says why."""


@dataclass(frozen=True, slots=True)
class Post:
    id: JsonValue
    text: str
    lat: float | None
    lon: float | None
    lang: str
    address: str = ""


@dataclass
class Report:
    classified: int = 0
    refused: int = 0


def parse(line: bytes) -> Post:
    """A post from one JSON line: {"id", "text"} plus optional "lat", "long", "address", "lang"
    ("post_id" stands for a missing "id").
    As in the classifier service, a point places the post first, then a place the address
    names, then one its text names."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise Refused(f"not valid JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(data, dict):
        raise Refused(f"not a JSON object but {type(data).__name__}")
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise Refused('no "text", or it is empty')
    lat, lon = _coordinate(data, "lat", 90), _coordinate(data, "long", 180)
    if (lat is None) != (lon is None):
        raise Refused('"lat" and "long" must be given together')
    lang = data.get("lang") or ""
    if not isinstance(lang, str):
        raise Refused('"lang" must be a string such as "ca"')
    address = data.get("address") or ""
    if not isinstance(address, str):
        raise Refused('"address" must be a string such as "Carrer de Verdi 20, Gràcia"')
    # A line of `plaza replay`'s file (POST /api/v1/posts's shape) names its post `post_id`: the
    # README classifies the same posts.jsonl, whose results came out with "id": null.
    post_id: JsonValue = data["id"] if "id" in data else data.get("post_id")
    return Post(id=post_id, text=text, lat=lat, lon=lon, lang=lang, address=address)


def _coordinate(data: dict[str, object], key: str, limit: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused(f'"{key}" must be a number')
    if not math.isfinite(value) or not -limit <= value <= limit:
        raise Refused(f'"{key}" must be between -{limit:g} and {limit:g}')
    return float(value)


def result(post: Post, classification: Classification) -> dict[str, JsonValue]:
    """The output line: what the classifier service puts on a post-classified event."""
    location = classification.location
    return {
        "id": post.id,
        "service_code": classification.service_code,
        "service_confidence": classification.service_confidence,
        "actionable": classification.actionable,
        "district_code": location.district.code if location.district else None,
        "district_name": location.district.name if location.district else None,
        "barri_code": location.barri.code if location.barri else None,
        "barri_name": location.barri.name if location.barri else None,
        "district_source": location.source,
        "location_confidence": location.confidence,
        "street_address": classification.street_address or None,
        "language": classification.language,
        "urgency": classification.urgency,
        "model_version": classification.model_version,
    }


def classify_lines(
    lines: Iterable[bytes],
    city: City,
    out: BinaryIO,
    err: TextIO,
    *,
    progress_after: int | None,
) -> Report:
    """Classifies every line; a refused line gets `line N: why` on err and the rest go on.
    progress_after: show a bar on err once this many lines were read (0: at once; None: never)."""
    report = Report()
    bar: tqdm | None = None
    batch: list[Post] = []

    def flush() -> None:
        # a batch is scored in one matrix product (Classifier.classify_batch), same answers
        inputs = [
            PostInput(p.text, p.lat, p.lon, language_hint=p.lang, address=p.address) for p in batch
        ]
        classified = default_classifier().classify_batch(inputs, city)
        _write(out, [orjson.dumps(result(p, c)) for p, c in zip(batch, classified, strict=True)])
        batch.clear()

    try:
        for number, line in enumerate(lines, start=1):
            if bar is None and progress_after is not None and number > progress_after:
                bar = tqdm(initial=number - 1, unit=" posts", file=err, mininterval=0.5)
            if bar is not None:
                bar.update(1)
            if not line.strip():
                continue
            try:
                post = parse(line)
            except Refused as e:
                report.refused += 1
                tqdm.write(f"line {number}: {e}", file=err)
                continue
            batch.append(post)
            report.classified += 1
            if len(batch) >= BATCH_LINES:
                flush()
    finally:
        flush()
        if bar is not None:
            bar.close()
    return report


def _write(out: BinaryIO, lines: list[bytes]) -> None:
    if lines:
        out.write(b"\n".join(lines) + b"\n")
        out.flush()
