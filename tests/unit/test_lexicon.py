"""The one-pass lexicon (plaza_classifier.lexicon) finds exactly what searching every pattern
finds, and fold's fast path folds exactly as Unicode decomposition does."""

from __future__ import annotations

import json
import random
import re

import pytest
from plaza.city import _CASED, _fold_latin_1, _fold_slow, fold
from plaza_classifier import keywords
from plaza_classifier.classify import _LEXICON
from plaza_classifier.lexicon import Lexicon, prefixes
from plaza_classifier.train import EXAMPLES

REALISTIC = [
    "La farola del carrer Blai fa pampallugues i el carrer està a les fosques",
    "Hay un socavón enorme en la calzada y un bache en la acera, casi me caigo",
    "Pothole on the main road near the bus stop, two-wheelers are falling",
    "Molt soroll de la terrassa fins a les 3 de la nit, sisplau feu alguna cosa",
    "Fuga de gas al portal 12! Olor de gas molt fort",
    "Gràcies per arreglar el semàfor tan ràpid, sou genials",
    "el clot de la vorera d'aquest carrer continua igual",
    "Un arbre caigut talla el carrer, perill",
]


def _brute_force(lexicon: Lexicon, folded: str) -> set[int]:
    return {
        number
        for number, pattern in enumerate(lexicon.patterns)
        if re.search(rf"\b(?:{pattern})", folded)
    }


def _texts() -> list[str]:
    examples = [
        json.loads(line)["text"] for line in EXAMPLES.read_text("utf-8").splitlines() if line
    ]
    # word salads built from the lexicon's own stems and cue words hit many patterns at once
    rng = random.Random(11)
    words = [
        re.sub(r"[^a-z ]", "", p).strip()
        for by_language in keywords.SERVICE_KEYWORDS.values()
        for patterns in by_language.values()
        for p in patterns
    ]
    words = [w for w in words if w]
    salads = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(300)]
    return REALISTIC + examples + salads


def test_the_index_finds_what_searching_every_pattern_finds() -> None:
    checked = 0
    for text in _texts():
        folded = fold(text)
        assert _LEXICON.matches(folded) == _brute_force(_LEXICON, folded), text
        checked += 1
    assert checked > 500
    assert _LEXICON.indexed == len(_LEXICON.patterns)  # every pattern of the lexicon is indexed


def test_prefixes_follow_alternations_options_and_repeats() -> None:
    assert prefixes(r"(?:un|el|els) clots?\b") == {"un ", "el ", "els"}
    assert prefixes(r"pot ?holes?\b") == {"pot"}
    assert prefixes(r"s ?h") == {"s h", "sh"}
    assert prefixes(r"[ab]c") == {"ac", "bc"}
    assert prefixes(r"ok\b") == {"ok"}  # a whole match shorter than the key
    assert prefixes(r".ala") is None  # a wildcard start cannot be listed
    assert prefixes(r"\w+ing") is None


def test_patterns_that_cannot_be_indexed_are_searched() -> None:
    lexicon = Lexicon([r".ala", r"[^x]ot", r"ok\b", r"farol"])
    assert lexicon.indexed == 2
    for folded, expected in [
        ("la bala i el pot", {0, 1}),
        ("ok farola", {2, 3}),
        ("okay", set()),
        ("", set()),
    ]:
        assert lexicon.matches(folded) == expected == _brute_force(lexicon, folded)


# What posts are written with beyond Latin-1: typographic quotes and dashes, emoji (with skin
# tones and joiners), and what folds to more than a space (combining marks, ŀ, ™, ﬁ).
_TWEETED = ["’", "‘", "“", "”", "…", "–", "—", "😀", "👍🏽", "\u200d", "€", "\u0301", "ŀ", "™", "ﬁ"]


@pytest.mark.parametrize("keep_case", [False, True])
def test_fold_fast_path_equals_unicode_decomposition(keep_case: bool) -> None:
    rng = random.Random(5)
    alphabet = [chr(c) for c in range(0x20, 0x2200)] + ["😀", "\u0301", "ŀ", "·"]
    # mostly Latin-1, as posts in Catalan, Spanish and English are: the bytes.translate path
    latin_1 = [chr(c) for c in range(0x100)] + _TWEETED + ["\u2027", "·"] * 5
    texts = [
        *REALISTIC,
        "Aragó, l·l, L·L, ŀl, Çà, Ñandú, ß, Æ, œ, ø, ﬁ, ½, “hola” – … ’",
        "¡¡Ya está bien!!  El bache…  ¿cuándo?  👍🏽  l’Eixample, L·L, µ, ª, ²",
        *("".join(rng.choice(alphabet) for _ in range(30)) for _ in range(3000)),
        *("".join(rng.choice(latin_1) for _ in range(30)) for _ in range(3000)),
    ]
    for text in texts:
        slow = _fold_slow(text)
        assert fold(text, keep_case=keep_case) == (slow if keep_case else slow.lower()), text


def test_posts_of_latin_1_and_punctuation_fold_by_bytes() -> None:
    """The fast path takes what posts are mostly written with (a fifth of fold's former cost);
    what it cannot fold it leaves to the others."""
    for text in [*REALISTIC, "l’Eixample: “la farola” — 😀👍🏽 …", "L·lum, ¿qué? ¡ya!"]:
        assert _fold_latin_1(text, _CASED) == _fold_slow(text), text
    for text in ["Ŀ", "ß", "café\u0301", "½", "™", "Ñandú µ", "ΑΘΗΝΑ"]:
        assert _fold_latin_1(text, _CASED) is None, text


def test_a_text_folded_with_its_case_lowers_to_its_fold() -> None:
    """The classifier folds each post once, with its case, and lowers that for the model."""
    rng = random.Random(6)
    alphabet = [chr(c) for c in range(0x20, 0x2200)] + ["😀", "\u0301", "ŀ", "·", "İ", "ẞ"]
    texts = [*REALISTIC, *("".join(rng.choice(alphabet) for _ in range(30)) for _ in range(3000))]
    for text in texts:
        assert fold(text, keep_case=True).lower() == fold(text), text
