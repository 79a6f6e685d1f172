"""A city's street register, and the street and house number a post's text names.

Barcelona's register (barcelona_streets.json, from Open Data BCN's Carrerer by
scripts/derive_streets.py) has each street's official name ("Carrer de l'Abat Odó"), its type and
its name without type and article ("Abat Odó"). People write that name after a type word of any
of the city's languages: "carrer de", "c/", "C.", "calle", "avinguda"/"av."/"avda.", "avenida",
"passeig"/"pg.", "paseo", "plaça"/"pl.", "plaza", "rambla", "ronda", "travessera", "via", or
English's "street", "avenue", "square" after the name. Text is folded (plaza.city.fold: no
accents, apostrophes as spaces), and whatever articles stand between the type and the name are
skipped ("calle de la Marina" is "Carrer de la Marina").

Precision before recall: many names are everyday words ("Mar", "Sol", "Pau", "Foc", "Sant Pau"
is also a hospital), so a name counts only after (or, in English, before) a type word that the
street's type admits ("plaça del Sol" is not "Carrer del Sol"). Without a type word, only a
long name (two words or more, ten letters or more: "Consell de Cent", "Roger de Llúria") followed
by a house number counts, or one of the few names everyone writes bare (WITHOUT_TYPE: "la
Diagonal", "la Meridiana", "el Paral·lel", "la Gran Via", "la Rambla"), and never a name that is
the city's barri, district or landmark ("Sant Antoni 12" is not read as a street).

Spanish renderings are accepted where a word's Spanish form is a plain respelling of the Catalan
one (SPANISH: "calle Aragón" is "Carrer d'Aragó", "Consejo de Ciento" is "Consell de Cent"), and
the translated names the register's gazetteer gives each street (Street.spanish, derived by
scripts/derive_streets.py: "calle San Pablo" is "Carrer de Sant Pau", "plaza de San Jaime"
"Plaça de Sant Jaume", "calle Mayor de Gracia" "Carrer Gran de Gràcia"); a translation shared by
two streets of a type is neither, as a Catalan name is. A few one-word names everyone knows are
read without type or article when a house number follows (WITH_NUMBER: "Diagonal 640",
"Paralelo 100").

A house number follows the name, after an optional comma or "nº"/"núm."; one outside the range
the register gives for the street is dropped (the street is kept), and a number followed by a
unit or by a thing a post counts ("carrer de Verdi 3 dies", "Diagonal 3 farolas") is no house
number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Final

from plaza.city import fold

__all__ = [
    "Street",
    "StreetAddress",
    "Streets",
    "address_key",
    "barcelona_register",
    "fold_address_text",
    "read_register",
]


@dataclass(frozen=True, slots=True)
class Street:
    """A street of the register: its code (CODI_VIA), official name, type (TIPUS_VIA), name
    without type and article, the house numbers it has when the register says, and the names
    Spanish speakers give it, folded ("san pablo" for Carrer de Sant Pau)."""

    code: str
    name: str
    kind: str
    short: str
    numbers: tuple[int, int] | None = None
    spanish: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StreetAddress:
    """A street and, when the text gave one within the street's range, a house number."""

    street: Street
    number: int | None = None

    def __str__(self) -> str:
        """The official form: "Carrer de Verdi 12", or the street's name alone."""
        if self.number is None:
            return self.street.name
        return f"{self.street.name} {self.number}"

    @property
    def key(self) -> str | None:
        """The address's canonical key (address_key): one door however it was written. None for
        a street without a number: a street is no place (Balmes runs 2 km, the Diagonal
        crosses five districts), and posts naming one street without a door are compared by
        their barri, if any, as before. A square is one (PLACES: "plaça del Sol")."""
        if self.number is None and self.street.kind not in PLACES:
            return None
        return address_key(self.street.code, self.number)


# The register's types of way that are one place without a house number: squares.
PLACES: Final = frozenset({"Pl", "Plta"})


def address_key(code: str, number: int | None) -> str:
    """A street's code and house number as one key ("018505 250", or "018505" for the street
    alone): "c/ Aragó 250", "Calle Aragón, 250, 2º 1ª" and "carrer d'arago 250" are one key, as
    the floor and door, the language and the spelling are not part of it. What the duplicate
    search compares addresses by (service_requests.address_key)."""
    return code if number is None else f"{code} {number}"


# Type words as they fold, before the name -> the register's types they may stand for, the
# likelier first ("plaça del Pi" is the Plaça, not the Placeta del Pi).
_C, _AV, _PL = ("C",), ("Av",), ("Pl", "Plta")
TYPES_BEFORE: Final[Mapping[str, tuple[str, ...]]] = {
    "carrer": _C,
    "c": _C,
    "calle": _C,
    "cl": _C,
    "carrero": ("Cro",),
    "avinguda": _AV,
    "av": _AV,
    "avda": _AV,
    "avd": _AV,
    "avenida": _AV,
    "passeig": ("Pg",),
    "pg": ("Pg",),
    "paseo": ("Pg",),
    "placa": _PL,
    "pl": _PL,
    "plaza": _PL,
    "pza": _PL,
    "placeta": ("Plta",),
    "rambla": ("Rbla",),
    "rbla": ("Rbla",),
    "ronda": ("Rda",),
    "rda": ("Rda",),
    "travessera": ("Trav",),
    "travesera": ("Trav",),
    "trav": ("Trav",),
    "travessia": ("Trvs",),
    "travesia": ("Trvs",),
    "via": ("Via",),
    "passatge": ("Ptge",),
    "ptge": ("Ptge",),
    "pasaje": ("Ptge",),
    "carretera": ("Ctra",),
    "ctra": ("Ctra",),
    "cami": ("Camí",),
    "camino": ("Camí",),
    "jardins": ("Jard", "Jrdi"),
    "jardines": ("Jard", "Jrdi"),
    "baixada": ("Bda",),
    "bajada": ("Bda",),
    "moll": ("Moll",),
    "parc": ("Parc",),
    "parque": ("Parc",),
    "jardi": ("Jrdi", "Jard"),
    "jardin": ("Jrdi", "Jard"),
    "platja": ("Ptja",),
    "playa": ("Ptja",),
    "muelle": ("Moll",),
}
# Two-word types: "Gran Via de les Corts Catalanes".
_GRAN_VIA: Final = ("gran", "via")
# English puts the type after the name: "Aragó Street 250", "Diagonal Avenue".
TYPES_AFTER: Final[Mapping[str, tuple[str, ...]]] = {
    "street": _C,
    "st": _C,
    "avenue": _AV,
    "ave": _AV,
    "square": _PL,
}
# What stands between a type and the name, in Catalan, Spanish and English ("d'en" folds to
# "d en").
ARTICLES: Final = frozenset(
    {"de", "del", "dels", "d", "en", "na", "la", "les", "el", "els", "l", "los", "las", "of", "the"}
)
# Folded Spanish respellings of Catalan words of street names (whole words): the Spanish form
# -> the Catalan one. Only respellings, never translations of a name.
SPANISH: Final[Mapping[str, str]] = {
    "aragon": "arago",
    "provenza": "provenca",
    "corcega": "corsega",
    "cerdena": "sardenya",
    "rosellon": "rossello",
    "consejo de ciento": "consell de cent",
    "paralelo": "parallel",
    "cataluna": "catalunya",
    "gerona": "girona",
    "lerida": "lleida",
    "lauria": "lluria",
    "pujadas": "pujades",
    "layetana": "laietana",
    "puertaferrisa": "portaferrissa",
    "caspe": "casp",
    "lepanto": "lepant",
    "pelayo": "pelai",
    "entenza": "entenca",
    "almogavares": "almogavers",
    "galileo": "galileu",
    "ibiza": "eivissa",
    "borne": "born",
    "bruch": "bruc",
}
# Names written without a type by everyone (folded, articles included as written) -> the
# official name. "la Rambla" is the register's "Carrer la Rambla".
WITHOUT_TYPE: Final[Mapping[str, str]] = {
    "la diagonal": "Avinguda Diagonal",
    "la meridiana": "Avinguda Meridiana",
    "el parallel": "Avinguda del Paral·lel",
    "la gran via": "Gran Via de les Corts Catalanes",
    "gran via": "Gran Via de les Corts Catalanes",
    "la rambla": "Carrer la Rambla",
    "les rambles": "Carrer la Rambla",
    "las ramblas": "Carrer la Rambla",
}
# One-word names everyone writes without type or article, but only before a house number
# ("Diagonal 640", "Meridiana 200"; "diagonal" and "paralelo" alone are everyday words) -> the
# official name.
WITH_NUMBER: Final[Mapping[str, str]] = {
    "diagonal": "Avinguda Diagonal",
    "meridiana": "Avinguda Meridiana",
    "parallel": "Avinguda del Paral·lel",
    "paralelo": "Avinguda del Paral·lel",
}
_BARE_MIN_LETTERS: Final = 10
# Before a house number: "nº" folds to "n o", "núm." to "num".
_NUMBER_WORDS: Final = ("n", "o", "no", "num", "numero", "nro", "number")
_NUMBER: Final = re.compile(r"(?:no?|num)?(\d{1,4})(?:[a-z]|bis)?")
# A number followed by one of these counts something else: "carrer de Verdi 3 dies".
UNITS: Final = frozenset(
    {
        "dia", "dies", "dias", "day", "days", "setmana", "setmanes", "semana", "semanas", "week",
        "weeks", "mes", "mesos", "meses", "month", "months", "any", "anys", "ano", "anos", "year",
        "years", "hora", "hores", "horas", "hour", "hours", "h", "minut", "minuts", "minuto",
        "minutos", "minutes", "min", "metre", "metres", "metro", "metros", "meter", "meters",
        "m", "km", "vegada", "vegades", "vez", "veces", "times", "euros", "eur", "persones",
        "personas", "people", "cotxes", "coches", "cars",
        # what a post about a problem counts ("a la Diagonal 3 farolas apagadas"): in ca, es, en
        "fanals", "farolas", "llums", "luces", "lights", "streetlights", "lamps",
        "contenidors", "contenedores", "containers", "bins", "papereres", "papeleras",
        "arbres", "arboles", "trees", "bancs", "bancos", "benches", "semafors", "semaforos",
        "sots", "forats", "baches", "agujeros", "potholes", "holes", "embornals", "alcantarillas",
        "motos", "bicis", "bicicletes", "bicicletas", "bikes", "furgonetes", "furgonetas",
        "camions", "camiones", "vans", "trucks", "gossos", "perros", "dogs", "coloms",
        "palomas", "pigeons", "rates", "ratas", "rats", "matalassos", "colchones",
        "mattresses", "mobles", "muebles", "sofas", "bosses", "bolsas", "bags", "caixes",
        "cajas", "boxes", "senyals", "senales", "signs", "pilones", "pilons", "bolards",
        "bolardos", "fonts", "fuentes", "pintades", "pintadas", "grafitis", "xeringues",
        "jeringuillas", "needles",
    }
)  # fmt: skip


# A number that ends a clause ("Verdi 12, contenidors plens", "Calle Verdi 12. Farolas apagadas")
# is a house number whatever word comes next: folding turns the break into a space, so it is
# kept as a word of its own, CLAUSE_BREAK, which is no unit (a decimal point is no break).
_NUMBER_ENDS_CLAUSE: Final = re.compile(r"(?<=\d)\s*[,;:.!?]+(?!\d)")
CLAUSE_BREAK: Final = ","


def fold_address_text(text: str) -> str:
    """fold(text) for the street matcher (Streets.find_in_folded): the break after a number
    that ends a clause kept as the word CLAUSE_BREAK."""
    return f" {CLAUSE_BREAK} ".join(fold(part) for part in _NUMBER_ENDS_CLAUSE.split(text))


def number_ends_clause(text: str) -> bool:
    """Whether fold_address_text(text) differs from fold(text) in more than spaces."""
    return _NUMBER_ENDS_CLAUSE.search(text) is not None


def _words(name: str) -> tuple[str, ...]:
    return tuple(fold(name).split())


def _letters(words: Sequence[str]) -> int:
    return sum(len(w) for w in words if w not in ARTICLES)


def _respelt(words: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The name's Spanish respellings (SPANISH), beside itself."""
    text = " ".join(words)
    forms = [words]
    for spanish, catalan in SPANISH.items():
        if spanish != catalan and re.search(rf"\b{catalan}\b", text):
            forms.append(tuple(re.sub(rf"\b{catalan}\b", spanish, text).split()))
    return forms


class Streets:
    """Finds a street of the register, and a house number, in folded text. Names are indexed by
    their first word, so a text is read once, word by word, as the place names are."""

    def __init__(self, register: Iterable[Street], *, not_streets: Iterable[str] = ()) -> None:
        """`not_streets`: folded names that are no street when written without a type (the
        city's barris, districts and landmarks)."""
        self.register: Mapping[str, Street] = {s.code: s for s in register}
        places = frozenset(not_streets)
        by_name: dict[tuple[str, ...], list[Street]] = {}
        for street in self.register.values():
            names = [_words(street.short), *(tuple(form.split()) for form in street.spanish)]
            for words in dict.fromkeys(w for name in names for w in _respelt(name)):
                by_name.setdefault(words, []).append(street)
                if len(words) > 1 and words[0] in ARTICLES:
                    # "Carrer de Las Chafarinas" is written "carrer de Chafarinas"
                    by_name.setdefault(words[1:], []).append(street)
        self._by_name = by_name
        # first word -> names starting with it, longest first
        self._first: dict[str, list[tuple[str, ...]]] = {}
        for words in sorted(by_name, key=len, reverse=True):
            if words:
                self._first.setdefault(words[0], []).append(words)
        self._longest = max(map(len, by_name), default=0)
        official = {s.name: s for s in self.register.values()}
        # names written without a type, by their first two words: (name, street, whether a
        # house number must follow), longest first
        bare: list[tuple[tuple[str, ...], Street, bool]] = []
        for written, name in WITHOUT_TYPE.items():
            if name in official:
                bare.extend((words, official[name], False) for words in _respelt(_words(written)))
        bare.extend(
            (words, streets[0], True)
            for words, streets in by_name.items()
            if len(streets) == 1
            and sum(w not in ARTICLES for w in words) >= 2
            and _letters(words) >= _BARE_MIN_LETTERS
            and " ".join(words) not in places
        )
        self._bare: dict[tuple[str, str], list[tuple[tuple[str, ...], Street, bool]]] = {}
        for entry in sorted(bare, key=lambda e: len(e[0]), reverse=True):
            self._bare.setdefault((entry[0][0], entry[0][1]), []).append(entry)
        self._with_number = {
            word: official[name] for word, name in WITH_NUMBER.items() if name in official
        }
        # the words an address may start at: most posts have none, and are done in one check
        self._starts = frozenset(
            {
                *TYPES_BEFORE,
                *TYPES_AFTER,
                _GRAN_VIA[0],
                *(first for first, _ in self._bare),
                *self._with_number,
            }
        )

    def __len__(self) -> int:
        return len(self.register)

    def find(self, text: str) -> StreetAddress | None:
        """The first street (and house number) the text names, or None."""
        return self.find_in_folded(fold_address_text(text))

    def key(self, address: str | None) -> str | None:
        """The canonical key (address_key) of the street and number an address names, or None
        when it names no street of the register."""
        found = self.find(address) if address else None
        return None if found is None else found.key

    def find_in_folded(self, folded: str) -> StreetAddress | None:
        """find() of a text already folded and lowered (plaza.city.fold)."""
        words = folded.split()
        if self._starts.isdisjoint(words):
            return None
        # the first address, unless a longer one overlaps it ("la Rambla de Catalunya" is the
        # Rambla de Catalunya, not "la Rambla"): words after the first are read only so far
        best: tuple[int, int, StreetAddress] | None = None
        for i in [i for i, word in enumerate(words) if word in self._starts]:
            if best is not None and i >= best[1]:
                break
            word, hit = words[i], None
            if word in TYPES_BEFORE or (word == "gran" and words[i + 1 : i + 2] == ["via"]):
                hit = self._after_type(words, i)
            elif word in TYPES_AFTER:
                hit = self._before_type(words, i)
            if hit is None and i + 1 < len(words) and (word, words[i + 1]) in self._bare:
                hit = self._bare_at(words, i)
            if hit is None and word in self._with_number:
                street = self._with_number[word]
                number, end = _house_number(words, i + 1, street)
                hit = None if number is None else (i, end, StreetAddress(street, number))
            if hit is not None and (best is None or hit[1] - hit[0] > best[1] - best[0]):
                best = hit
        return None if best is None else best[2]

    def _after_type(self, words: list[str], i: int) -> tuple[int, int, StreetAddress] | None:
        if words[i] == "gran" and words[i + 1 : i + 2] == ["via"]:
            kinds: tuple[str, ...] = ("G.V.",)
            j = i + 2
        else:
            kinds, j = TYPES_BEFORE[words[i]], i + 1
        skipped = 0
        while j < len(words) and words[j] in ARTICLES and skipped < 3:
            j, skipped = j + 1, skipped + 1
        # a few names start with what reads as an article ("Carrer de Los Castillejos")
        for start in range(j, i, -1):
            match = self._name_at(words, start, kinds)
            if match is not None:
                end, street = match
                number, end = _house_number(words, end, street)
                return i, end, StreetAddress(street, number)
        return None

    def _before_type(self, words: list[str], i: int) -> tuple[int, int, StreetAddress] | None:
        kinds = TYPES_AFTER[words[i]]
        for length in range(min(self._longest, i), 0, -1):
            name = tuple(words[i - length : i])
            street = _one_of(self._by_name.get(name, ()), kinds)
            if street is not None:
                number, end = _house_number(words, i + 1, street)
                start = i - length
                if number is None and start > 0:  # "at 250 Aragó Street"
                    number = _in_range(_number_word(words[start - 1]), street)
                    start -= number is not None
                return start, end, StreetAddress(street, number)
        return None

    def _name_at(
        self, words: list[str], j: int, kinds: tuple[str, ...]
    ) -> tuple[int, Street] | None:
        """(the end of the longest name at words[j] of a street of `kinds`, it)."""
        if j >= len(words):
            return None
        for name in self._first.get(words[j], ()):
            if tuple(words[j : j + len(name)]) == name:
                street = _one_of(self._by_name[name], kinds)
                if street is not None:
                    return j + len(name), street
        return None

    def _bare_at(self, words: list[str], i: int) -> tuple[int, int, StreetAddress] | None:
        for name, street, needs_number in self._bare[words[i], words[i + 1]]:
            if tuple(words[i : i + len(name)]) == name and not self._longer(words, i, name):
                number, end = _house_number(words, i + len(name), street)
                if number is not None or not needs_number:  # a long name alone may be a person's
                    return i, end, StreetAddress(street, number)
        return None

    def _longer(self, words: list[str], i: int, name: tuple[str, ...]) -> bool:
        """Whether a name written bare at words[i] goes on as a longer name of the register:
        "la Diagonal Mar" is not the Diagonal."""
        j = i + next((k for k, w in enumerate(name) if w not in ARTICLES), 0)
        rest = len(name) - (j - i)
        return any(
            len(other) > rest and tuple(words[j : j + len(other)]) == other
            for other in self._first.get(words[j], ())
        )


def _one_of(streets: Sequence[Street], kinds: tuple[str, ...]) -> Street | None:
    """The street of the first of `kinds` that has exactly one of that name; None when two
    streets of a kind share it (the text cannot tell which)."""
    for kind in kinds:
        of_kind = [s for s in streets if s.kind == kind]
        if of_kind:
            return of_kind[0] if len(of_kind) == 1 else None
    return None


def _number_word(word: str) -> int | None:
    match = _NUMBER.fullmatch(word)
    return int(match.group(1)) if match else None


def _in_range(number: int | None, street: Street) -> int | None:
    if number is None or number == 0:
        return None
    if street.numbers is not None and not street.numbers[0] <= number <= street.numbers[1]:
        return None
    return number


def _house_number(words: list[str], j: int, street: Street) -> tuple[int | None, int]:
    """The house number at words[j] (after "nº", "núm."), if any, and where the address ends."""
    k = j
    while k < len(words) and words[k] in _NUMBER_WORDS and k - j < 2:
        k += 1
    if k >= len(words):
        return None, j
    number = _number_word(words[k])
    if number is None or _counts_something(words, k + 1):
        return None, j
    number = _in_range(number, street)
    return number, (k + 1 if number is not None else j)


def _counts_something(words: list[str], at: int) -> bool:
    """Whether the number before words[at] counts or measures something: a unit follows it
    ("3 dies"), or its decimals and then a unit ("3,5 metres", "3.5 metres", which folding
    makes "3 5 metres")."""
    if at < len(words) and words[at] in UNITS:
        return True
    return (
        at + 1 < len(words)
        and words[at].isdigit()
        and len(words[at]) <= 2
        and words[at + 1] in UNITS
    )


def read_register(data: Mapping[str, object]) -> list[Street]:
    """The streets of a gazetteer as scripts/derive_streets.py writes it."""
    streets = data.get("streets")
    if not isinstance(streets, list):
        raise ValueError("a street gazetteer has a list of streets")
    register = []
    spanish = data.get("spanish", {})
    if not isinstance(spanish, Mapping):
        raise ValueError("a street gazetteer's Spanish names are a mapping of codes to names")
    for row in streets:
        code, name, kind, short, *numbers = row
        low, high = numbers if numbers else (None, None)
        register.append(
            Street(
                str(code),
                str(name),
                str(kind),
                str(short),
                (int(low), int(high)) if low is not None and high is not None else None,
                tuple(str(form) for form in spanish.get(str(code), ())),
            )
        )
    return register


# The matchers built, by their register (the same tuple, not an equal one) and the names that are
# no street: building Barcelona's takes 80 ms, and every City.barcelona() would build it again.
_MATCHERS: dict[tuple[int, frozenset[str]], tuple[tuple[Street, ...], Streets]] = {}


def street_matcher(register: Iterable[Street], not_streets: frozenset[str]) -> Streets:
    """Streets(register, not_streets=not_streets), built once for a register given as a tuple
    (such as barcelona_register()'s), which cannot change; a matcher only reads."""
    if not isinstance(register, tuple):
        return Streets(register, not_streets=not_streets)
    key = (id(register), not_streets)
    kept = _MATCHERS.get(key)
    if kept is None or kept[0] is not register:
        kept = _MATCHERS[key] = (register, Streets(register, not_streets=not_streets))
    return kept[1]


@cache
def barcelona_register() -> tuple[Street, ...]:
    """Barcelona's streets, from the packaged gazetteer (read once)."""
    text = resources.files("plaza.city").joinpath("barcelona_streets.json").read_text("utf-8")
    return tuple(read_register(json.loads(text)))
