"""Which of many word-start patterns occur in a folded text, in one pass over its words.

The lexicon has some 700 regular expressions, each matched from the start of a word. Searching
the text once per pattern costs more than everything else the classifier does, so the patterns
are indexed by the characters they can begin with: a pattern is tried only at the word starts
whose first two characters it can begin with. The prefixes come from the pattern's own syntax
tree (Python's regex parser), so the index never misses a match; a pattern whose start cannot
be enumerated (a wildcard, a negated class) is kept aside and searched the ordinary way.
tests/unit/test_lexicon.py checks that the answer equals searching every pattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from re import _constants as sre_constants  # type: ignore[attr-defined]  # Python 3.11+
from re import _parser as sre_parse  # type: ignore[attr-defined]  # the parser behind re.compile
from typing import Any, Final

PREFIX: Final = 3  # characters of a word start used as the index key
_MAX_PREFIXES: Final = 400  # a pattern with more possible starts is searched on its own
_MAX_CLASS: Final = 40  # a character class larger than this is "any character"
_WORD_CHAR: Final = re.compile(r"\w")

Prefixes = frozenset[str] | None  # None: the start cannot be enumerated


class Lexicon:
    """Patterns (regular expressions meant to match at a word start: r"\\b(?:pattern)") and the
    one-pass search of a text for all of them."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self._index: dict[str, list[tuple[int, re.Pattern[str]]]] = {}  # by PREFIX characters
        self._short: dict[str, list[tuple[int, re.Pattern[str]]]] = {}  # whole shorter matches
        self._searched: list[tuple[int, re.Pattern[str]]] = []
        for number, pattern in enumerate(self.patterns):
            starts = prefixes(pattern)
            if starts is None or not starts or any(not _is_word_start(s) for s in starts):
                self._searched.append((number, re.compile(rf"\b(?:{pattern})")))
                continue
            anchored = re.compile(pattern)
            for start in starts:
                index = self._index if len(start) == PREFIX else self._short
                index.setdefault(start, []).append((number, anchored))

    @property
    def indexed(self) -> int:
        """How many patterns the index holds (the rest are searched one by one)."""
        return len(self.patterns) - len(self._searched)

    def matches(self, folded: str) -> set[int]:
        """The numbers of the patterns that match somewhere in folded text (at a word start).

        `folded` is plaza.city.fold's: words of letters and digits between single spaces, so
        a word starts where the text does and after each space (splitting at the spaces finds
        them in a third less time than a regular expression's search for word starts)."""
        found: set[int] = set()
        index, short = self._index, self._short
        at = 0
        for word in folded.split(" "):
            if not word:
                at += 1
                continue
            candidates = index.get(folded[at : at + PREFIX])
            if candidates is not None:
                for number, pattern in candidates:
                    if number not in found and pattern.match(folded, at):
                        found.add(number)
            if short:  # patterns whose whole match can be shorter than PREFIX characters
                for end in range(at + PREFIX - 1, at, -1):
                    for number, pattern in short.get(folded[at:end], ()):
                        if number not in found and pattern.match(folded, at):
                            found.add(number)
            at += len(word) + 1
        for number, pattern in self._searched:
            if number not in found and pattern.search(folded):
                found.add(number)
        return found


def _is_word_start(prefix: str) -> bool:
    return bool(prefix) and _WORD_CHAR.match(prefix[0]) is not None


def prefixes(pattern: str, length: int = PREFIX) -> Prefixes:
    """Every string of `length` characters that a match of pattern can begin with, plus every
    whole match shorter than that; None when they cannot be listed (too many, or a wildcard)."""
    return _sequence(list(sre_parse.parse(pattern)), length)


def _sequence(items: Iterable[tuple[Any, Any]], length: int) -> Prefixes:
    built: set[str] = {""}
    for op, av in items:
        open_ = {p for p in built if len(p) < length}
        if not open_:
            break
        options = _item(op, av, length)
        if options is None:
            return None
        built = {p for p in built if len(p) >= length} | {
            (p + o)[:length] for p in open_ for o in options
        }
        if len(built) > _MAX_PREFIXES:
            return None
    return frozenset(built)


def _item(op: Any, av: Any, length: int) -> Prefixes:
    c = sre_constants
    if op is c.LITERAL:
        return frozenset({chr(av)})
    if op is c.IN:
        return _class(av)
    if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
        return frozenset({""})  # zero width: a lookahead only narrows what matches
    if op is c.SUBPATTERN:
        return _sequence(av[-1], length)
    if op is c.BRANCH:
        found: set[str] = set()
        for alternative in av[1]:
            options = _sequence(alternative, length)
            if options is None:
                return None
            found |= options
        return frozenset(found)
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)):
        low, high, body = av
        found = set()
        for times in range(low, min(high, low + length) + 1):
            options = _sequence(list(body) * times, length)
            if options is None:
                return None
            found |= options
        return frozenset(found)
    return None  # ANY, NOT_LITERAL, CATEGORY, GROUPREF...: not enumerable


def _class(members: Iterable[tuple[Any, Any]]) -> Prefixes:
    c = sre_constants
    chars: set[str] = set()
    for op, av in members:
        if op is c.LITERAL:
            chars.add(chr(av))
        elif op is c.RANGE:
            low, high = av
            chars.update(chr(code) for code in range(low, high + 1))
        else:  # NEGATE, CATEGORY (\w, \d...)
            return None
        if len(chars) > _MAX_CLASS:
            return None
    return frozenset(chars)
