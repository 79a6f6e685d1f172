"""The duplicate search's choice among candidates: its shortcuts (the subjects looked for only
until a candidate passes, texts of very different lengths not compared) choose what the plain
definition chooses."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from plaza.city import City
from plaza.subjects import different_problems
from plaza_router.dedupe import (
    DuplicatePolicy,
    Found,
    Probe,
    distance_m,
    same_place,
    similarity,
    spot,
)

AT = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
STREETS = City.barcelona().streets
LAT, LON = 41.3926, 2.1640

WORDS = [
    "contenidor ple",  # bin
    "overflowing bins",
    "un sofa abandonat",  # bulky items
    "old mattress left",
    "runa al carrer",  # rubble
    "caca de gos",  # dog waste
    "molt brut",  # the service, nothing more specific
    "please clean",
    "des de fa dies",
    "smells awful",
    "a la cantonada",
]
ADDRESSES = [None, "Carrer d'Aragó 250", "Carrer d'Aragó 252", "Carrer d'Aragó 400"]
ADDRESSES += ["Carrer de Mallorca 250", "Carrer d'Aragó"]


def text(rng: random.Random) -> str:
    """One to six phrases: texts of many lengths, naming one subject, several or none."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))


def plain_best(
    probe: Probe, policy: DuplicatePolicy, candidates: list[tuple[tuple[int, int], Found]]
) -> Found | None:
    """Probe.best as defined: drop the candidates naming another problem, then the nearest
    within the radius (a point), or the same door, or the most alike text; the oldest on a tie."""
    kept = [
        (order, c)
        for order, c in candidates
        if not different_problems(probe.service_code, probe.text, c.description)
    ]
    if probe.lat is not None and probe.lon is not None:
        close = [
            (distance_m(probe.lat, probe.lon, c.lat, c.long), order, c)
            for order, c in kept
            if c.lat is not None and c.long is not None
        ]
        close = [s for s in close if s[0] <= policy.radius_m]
        return min(close, key=lambda s: (s[0], s[1]))[2] if close else None
    alike = []
    for order, c in kept:
        place = same_place(spot(STREETS, probe.address), spot(STREETS, c.address))
        if place is False:
            continue
        score = 1.0 if place else similarity(probe.text, c.description)
        if score >= policy.text_similarity:
            alike.append((score, order, c))
    return min(alike, key=lambda s: (-s[0], s[1]))[2] if alike else None


@pytest.mark.parametrize("with_point", [True, False])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.8])
def test_the_choice_is_the_plain_definitions(with_point: bool, threshold: float) -> None:
    rng = random.Random(f"{with_point}-{threshold}")
    policy = DuplicatePolicy(text_similarity=threshold)
    chosen = 0
    for _ in range(1500):
        candidates = []
        for n in range(rng.randint(0, 25)):
            # a few metres to a few hundred, some exactly as far as others (ties)
            point = rng.random() < 0.8
            dlat = rng.choice([0.0, 0.0002, 0.0004, rng.uniform(-0.002, 0.002)])
            c = Found(
                n,
                LAT + dlat if point else None,
                LON if point else None,
                text(rng),
                rng.choice(ADDRESSES),
                None,
            )
            candidates.append(((rng.randint(0, 3), n), c))
        probe = Probe(
            "cleaning",
            AT,
            text(rng),
            LAT if with_point else None,
            LON if with_point else None,
            "06" if not with_point else None,
            rng.choice(ADDRESSES),
            STREETS,
        )
        expected = plain_best(probe, policy, candidates)
        assert probe.best(policy, candidates) is expected, (probe, candidates)
        chosen += expected is not None
    assert 300 < chosen < 1400  # both outcomes are common: the comparison means something


def test_texts_of_very_different_lengths_are_not_compared_but_score_below_the_threshold() -> None:
    short, long = "bins", "overflowing bins on the corner for days, please come " * 3
    assert 0 < similarity(short, long) < 0.5
    assert similarity(short, long, 0.5) == 0.0
    assert similarity(short, long, 0.01) == similarity(short, long)
    assert similarity("overflowing bins", "overflowing bins!", 0.5) == similarity(
        "overflowing bins", "overflowing bins!"
    )
