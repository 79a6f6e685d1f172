"""The duplicate search's text similarity, and what its cache of trigram sets holds."""

from __future__ import annotations

import pytest
from plaza_router import dedupe
from plaza_router.dedupe import similarity, trigrams


def test_similarity_is_the_jaccard_index_of_folded_trigrams() -> None:
    assert similarity("Contenidor ple", "contenidor PLE") == 1.0  # folded: case and accents
    assert similarity("Farola fosa", "farola fosa") == 1.0
    assert similarity("farola", "bache") == 0.0
    a, b = trigrams("paperera"), trigrams("papereres")
    assert similarity("paperera", "papereres") == pytest.approx(len(a & b) / len(a | b))
    assert 0 < similarity("paperera", "papereres") < 1


def test_sets_of_different_texts_share_their_trigrams_objects() -> None:
    """Each distinct trigram is one string, whatever number of cached sets hold it: a cache of
    thousands of open requests' descriptions held a copy of every trigram in every set, 63 MB
    of the router's memory."""
    first = {gram: gram for gram in trigrams("el contenidor de Verdi és ple")}
    second = trigrams("contenidor ple a Aragó")
    shared = [gram for gram in second if gram in first]
    assert "con" in shared and "ple" in shared
    assert all(gram is first[gram] for gram in shared)


def test_past_the_bound_new_trigrams_are_not_kept_for_sharing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dedupe, "_SHARED_TRIGRAMS", {})
    monkeypatch.setattr(dedupe, "SHARED_TRIGRAMS_MAX", 5)
    trigrams.cache_clear()
    try:
        assert trigrams("abcdefgh") == frozenset(
            {"  a", " ab", "abc", "bcd", "cde", "def", "efg", "fgh", "gh "}
        )
        assert len(dedupe._SHARED_TRIGRAMS) == 9  # it was under the bound when it started
        assert trigrams("xyz") == frozenset({"  x", " xy", "xyz", "yz "})
        assert len(dedupe._SHARED_TRIGRAMS) == 9  # past it: the set keeps its own
    finally:
        trigrams.cache_clear()
