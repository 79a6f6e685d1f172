"""The text features the service model reads: hashed char n-grams and words, TF-IDF weighted.

One implementation for training and for the service, so that a post is seen the same way by
both. Links and @mentions are dropped first (readable_part). Text is folded (plaza.city.fold: lowercase, no accents, punctuation as spaces) and digits
become 0, so "Aragó" and "Arago" or "nº 23" and "nº 41" share features. Each word gives its char
n-grams of 2 to 5 inside "<word>" (they carry Spanish stems over to Catalan: "contenedor" and
"contenidor" share "<cont", "nedo"/"nido" do not) and itself; neighbouring words give a bigram.
Every feature is hashed with zlib.crc32, which is the same in every process and on every
machine (Python's own hash() is salted per process), into BUCKETS columns.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from itertools import chain, pairwise
from typing import Final

import numpy as np
import numpy.typing as npt

BUCKETS: Final = 1 << 18
NGRAMS: Final = range(2, 6)
MAX_CHARS: Final = 1000  # a longer post says what it is about in its first thousand characters
MAX_WORD: Final = 24  # longer "words" are URLs and glued hashtags: their start is enough

_MASK: Final = BUCKETS - 1
_DIGITS: Final = str.maketrans("123456789", "000000000")
_CACHE_LIMIT: Final = 200_000
_CHUNK: Final = 1024  # rows counted at once by hashed_rows

Indices = npt.NDArray[np.int32]
Floats = npt.NDArray[np.float32]
_EMPTY: Final[Indices] = np.zeros(0, dtype=np.int32)

# A link or an @mention says nothing about the problem, and the city's own handle in a post
# would read as a request: neither reaches the lexicon, the model or the place names.
_LINKS_AND_MENTIONS: Final = re.compile(r"(?:https?://|www\.)\S*|@\w+")


def readable_part(text: str) -> str:
    """The part of a post the classifier reads: its text without links and @mentions (training
    and the service both read posts through it)."""
    if "@" not in text and "http" not in text and "www." not in text:
        return text  # most posts: no regular expression to run
    return _LINKS_AND_MENTIONS.sub(" ", text)


# word -> (its columns, the crc32 of "b:<word> " that its bigrams continue from)
_word_cache: dict[str, tuple[list[int], int]] = {}


def bucket(feature: str) -> int:
    """The column of one feature string ("c:<fa", "w:farola", "b:farola rota")."""
    return zlib.crc32(feature.encode("utf-8")) & _MASK


def _word(word: str) -> tuple[list[int], int]:
    cached = _word_cache.get(word)
    if cached is not None:
        return cached
    marked = f"<{word[:MAX_WORD]}>"
    found = [bucket("w:" + word[:MAX_WORD])]
    for n in NGRAMS:
        found.extend(bucket("c:" + marked[i : i + n]) for i in range(len(marked) - n + 1))
    if len(_word_cache) >= _CACHE_LIMIT:
        _word_cache.clear()  # a bounded memo: the result never depends on what is cached
    entry = (found, zlib.crc32(f"b:{word} ".encode()))
    _word_cache[word] = entry
    return entry


def _columns(folded: str) -> list[int]:
    """Every feature's column of a folded text, repeats included, in no useful order."""
    columns: list[int] = []
    previous = -1
    crc32 = zlib.crc32
    for word in folded[:MAX_CHARS].translate(_DIGITS).split():
        found, continued = _word(word)
        columns.extend(found)
        if previous != -1:
            # crc32 continues over concatenation: the bigram "b:<previous> <word>"
            columns.append(crc32(word.encode(), previous) & _MASK)
        previous = continued
    return columns


def hashed(folded: str) -> tuple[Indices, Indices]:
    """Distinct columns of a folded text, sorted, with how often each occurs."""
    columns = _columns(folded)
    if not columns:
        empty = np.zeros(0, dtype=np.int32)
        return empty, empty
    return _counted(np.asarray(columns, dtype=np.int32))


def _counted(columns: Indices) -> tuple[Indices, Indices]:
    """np.unique(columns, return_counts=True), without its generality: a sort and a diff."""
    columns.sort()
    starts = np.flatnonzero(np.diff(columns, prepend=-1))
    counts = np.diff(starts, append=len(columns)).astype(np.int32)
    return columns[starts], counts


def tfidf(indptr: Indices, indices: Indices, counts: Indices, idf: Floats) -> Floats:
    """Values of CSR rows: sublinear tf (1 + ln count) times idf, each row scaled to unit L2
    norm. The training matrix and a single post go through this same function."""
    values = (1.0 + np.log(counts.astype(np.float32))) * idf[indices]
    squares = values * values
    lengths = np.diff(indptr)
    starts = indptr[:-1][lengths > 0]
    norms = np.zeros(len(lengths), dtype=np.float32)
    norms[lengths > 0] = np.sqrt(np.add.reduceat(squares, starts)) if len(starts) else 0.0
    norms[norms == 0] = 1.0
    return (values / np.repeat(norms, lengths)).astype(np.float32)


def tfidf_row(indices: Indices, counts: Indices, idf: Floats) -> Floats:
    """tfidf() of a single row, without the CSR bookkeeping."""
    values: Floats = ((1.0 + np.log(counts.astype(np.float32))) * idf[indices]).astype(
        np.float32, copy=False
    )
    norm = np.float32(np.sqrt(values @ values))
    if norm:
        values /= norm
    return values


def hashed_rows(folded_texts: Iterable[str]) -> tuple[Indices, Indices, Indices]:
    """(indptr, indices, counts) of the texts as CSR rows: each row is hashed() of its text,
    counted a chunk of rows at a time (one sort of row * BUCKETS + column), not row by row."""
    indptr: list[Indices] = [np.zeros(1, dtype=np.int32)]
    all_indices: list[Indices] = []
    all_counts: list[Indices] = []
    chunk: list[list[int]] = []
    done = 0

    def count() -> None:
        nonlocal done
        lengths = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
        keys = np.repeat(np.arange(len(chunk), dtype=np.int64) * BUCKETS, lengths)
        keys += np.fromiter(chain.from_iterable(chunk), dtype=np.int64, count=int(lengths.sum()))
        distinct, counts = _counted64(keys)
        ends = np.searchsorted(distinct // BUCKETS, np.arange(1, len(chunk) + 1))
        indptr.append((ends + done).astype(np.int32))
        all_indices.append((distinct % BUCKETS).astype(np.int32))
        all_counts.append(counts)
        done += len(distinct)
        chunk.clear()

    for folded in folded_texts:
        chunk.append(_columns(folded))
        if len(chunk) == _CHUNK:
            count()
    if chunk:
        count()
    return (
        np.concatenate(indptr),
        np.concatenate(all_indices or [_EMPTY]),
        np.concatenate(all_counts or [_EMPTY]),
    )


def _counted64(keys: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], Indices]:
    if not len(keys):
        return keys, np.zeros(0, dtype=np.int32)
    keys.sort()
    starts = np.flatnonzero(np.diff(keys, prepend=-1))
    counts = np.diff(starts, append=len(keys)).astype(np.int32)
    return keys[starts], counts


def document_frequency_idf(indptr: Indices, indices: Indices, n_rows: int) -> Floats:
    """Smoothed idf per column, ln((1 + n) / (1 + df)) + 1, from rows whose indices are
    distinct (as hashed() returns them)."""
    del indptr  # rows are distinct already: a column's count is its document frequency
    df = np.bincount(indices, minlength=BUCKETS).astype(np.float64)
    return (np.log((1.0 + n_rows) / (1.0 + df)) + 1.0).astype(np.float32)


def feature_strings(folded: str) -> Sequence[str]:
    """The feature strings of a folded text before hashing, for tests and explanations."""
    words = folded[:MAX_CHARS].translate(_DIGITS).split()
    found: list[str] = []
    for word in words:
        marked = f"<{word[:MAX_WORD]}>"
        found.append("w:" + word[:MAX_WORD])
        for n in NGRAMS:
            found.extend("c:" + marked[i : i + n] for i in range(len(marked) - n + 1))
    found.extend(f"b:{a} {b}" for a, b in pairwise(words))
    return found
