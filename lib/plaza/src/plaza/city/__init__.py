"""The city's districts and barris, and where a point or a piece of text places a post."""

from __future__ import annotations

import functools
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import shapely
from shapely.geometry.base import BaseGeometry

from plaza.city import names
from plaza.city.geo import SNAP_METRES, Metres, Polygons, read_features, read_outlines
from plaza.settings import SettingsError

if TYPE_CHECKING:
    from plaza.city.streets import Street, StreetAddress, Streets

__all__ = [
    "SNAP_METRES",
    "Barri",
    "BoundingBox",
    "City",
    "Council",
    "District",
    "Location",
    "PlaceNames",
    "Polygons",
    "fold",
    "of_district",
]

log = logging.getLogger(__name__)

BBOX_MARGIN_DEG = 0.005
"""Without polygons, how far outside the city's bounding box a point may fall (about 500 m)."""


@dataclass(frozen=True, slots=True)
class District:
    code: str
    name: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Barri:
    code: str
    name: str
    district_code: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Location:
    district: District | None
    barri: Barri | None
    source: Literal["geo", "text", "none"]
    confidence: float


@dataclass(frozen=True, slots=True)
class BoundingBox:
    min_lat: float
    min_lon: float
    max_lat: float
    max_lon: float

    def contains(self, lat: float, lon: float, margin: float = 0.0) -> bool:
        return (
            self.min_lat - margin <= lat <= self.max_lat + margin
            and self.min_lon - margin <= lon <= self.max_lon + margin
        )

    def metres(self) -> Metres:
        """The projection to metres that is accurate inside this box."""
        return Metres.at((self.min_lat + self.max_lat) / 2)


_AGENCIES = {
    "ca": "Ajuntament de {city}",
    "es": "Ayuntamiento de {city}",
    "en": "{city} City Council",
}
_DISTRICT_TEAMS = {"ca": "Districte {of_name}", "es": "Distrito {of_name}", "en": "{name} District"}
DEFAULT_TIME_ZONE = "Europe/Madrid"  # Barcelona's, and every Spanish town's but the Canaries'
PACKAGED_ROUTING: Literal["packaged"] = "packaged"
"""Council.routing for Barcelona's own rules, plaza/config/routing.toml."""


@dataclass(frozen=True, slots=True)
class Council:
    """The city's public voice: the names Open311 publishes and replies use, whatever the city.

    `agency` is the council's name (the agency responsible for a request no district holds);
    `district_team` names a district's team, `{name}` being the district's name and `{of_name}`
    that name after the preposition of `language` ("Districte {of_name}": "Districte d'Horta");
    `language` is what replies fall back to for a post in a language Plaza has no replies in;
    `jurisdiction_id` is Open311's. `routing` is the city's own routing file, PACKAGED_ROUTING
    for Barcelona's, or None: no rules, every request to its district's team. `time_zone` (IANA)
    is the one replies give due times in ("before 12/05 18:30" is the city's clock)."""

    agency: str
    language: str
    district_team: str
    jurisdiction_id: str
    routing: Path | Literal["packaged"] | None = None
    time_zone: str = DEFAULT_TIME_ZONE

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @classmethod
    def of(
        cls,
        city: str,
        language: str = "en",
        *,
        agency: str | None = None,
        district_team: str | None = None,
        jurisdiction_id: str | None = None,
        routing: Path | Literal["packaged"] | None = None,
        time_zone: str | None = None,
    ) -> Council:
        """A city's council; what is not given follows from the city's name and language
        ("Ayuntamiento de Jun", "Distrito {of_name}", "jun", Europe/Madrid). ValueError for a
        district_team with another placeholder than {name} and {of_name}, or a time zone the
        IANA database does not have."""
        council = cls(
            agency=agency or _AGENCIES.get(language, "{city}").format(city=city),
            language=language,
            district_team=district_team or _DISTRICT_TEAMS.get(language, "{name}"),
            jurisdiction_id=jurisdiction_id or slug(city),
            routing=routing,
            time_zone=time_zone or DEFAULT_TIME_ZONE,
        )
        try:
            ZoneInfo(council.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"time_zone {council.time_zone!r} is not an IANA time zone (such as "
                f"{DEFAULT_TIME_ZONE!r} or 'America/Mexico_City')"
            ) from None
        try:
            council.team_of("Centre")
        except (KeyError, IndexError, AttributeError, ValueError) as e:
            raise ValueError(
                f"district_team {council.district_team!r} may hold {{name}} and {{of_name}} "
                f"only ({type(e).__name__}: {e})"
            ) from None
        return council

    @classmethod
    def barcelona(cls) -> Council:
        return cls.of("Barcelona", "ca", routing=PACKAGED_ROUTING)

    @classmethod
    def from_settings(cls, *, city_config: Path | None) -> Council:
        """The council of the city Plaza serves, read from PLAZA_CITY_CONFIG's own keys (its
        GeoJSON is not read: the notifier and the gateway's settings need only this), else
        Barcelona's. A file that cannot be used stops start-up, naming the variable."""
        if city_config is None:
            return cls.barcelona()
        from plaza.city.config import load_council

        try:
            return load_council(city_config)
        except ValueError as e:
            raise SettingsError(f"PLAZA_CITY_CONFIG: {e}") from e

    def team_of(self, district_name: str) -> str:
        """The team of a district, as `district_team` names it."""
        return self.district_team.format(
            name=district_name, of_name=of_district(self.language, district_name)
        )


def slug(name: str) -> str:
    """A name as an identifier: "L'Hospitalet de Llobregat" -> "l-hospitalet-de-llobregat"."""
    return "-".join(fold(name).lower().split())


@dataclass(frozen=True, slots=True)
class PlaceNames:
    """Names beyond the official ones. Keys are district or barri codes; all text is folded.
    An official name that is also an everyday word ("Centro", "el Clot") is matched only through
    the aliases of its place when the place's code is in ambiguous_official_*."""

    district_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    barri_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    landmarks: Mapping[str, str] = field(default_factory=dict)  # name -> barri code
    proper_nouns: Mapping[str, str] = field(default_factory=dict)  # case-sensitive -> barri code
    not_places: tuple[str, ...] = ()
    ambiguous_official_barris: frozenset[str] = frozenset()
    ambiguous_official_districts: frozenset[str] = frozenset()


_APOSTROPHES_AND_DOTS = str.maketrans({"·": "", "\u2027": "", "\u0140": "l"})
_NOT_WORD = re.compile(r"[\W_]+")


def _fold_slow(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES_AND_DOTS))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NOT_WORD.sub(" ", bare)


def _latin_table() -> dict[int, str]:
    """The accented Latin letters (and the dots of "l·l") as _fold_slow turns them, one
    character each: a text with letters beyond Latin-1 (ŀ, ő, ř), which _fold_latin_1 leaves,
    still folds with a translate instead of by Unicode decomposition."""
    table: dict[int, str] = {}
    for code in range(0x80, 0x250):
        char = chr(code)
        folded = _fold_slow(char)
        if len(folded) == 1 and folded.isascii():
            table[code] = folded
    for point in _APOSTROPHES_AND_DOTS:
        table[point] = _fold_slow(chr(point))
    return table


_LATIN = _latin_table()


def _byte_tables() -> tuple[bytes, bytes, bytes]:
    """fold's result for each Latin-1 character as a bytes.translate table, with its case and
    lowered, and the characters it deletes: ASCII letters and digits as they are, accented
    letters as _LATIN has them, every other character a space (runs of them are made one after).
    A character that folds to something else (ß, ½, µ) stays as it is, beyond ASCII: a text
    with one is folded the slower way."""
    cased = bytearray(range(256))
    deleted = bytearray()
    for code in range(256):
        folded = _fold_slow(chr(code))
        if folded == "":
            deleted.append(code)
        elif len(folded) == 1 and folded.isascii():
            cased[code] = ord(folded)
    return bytes(cased), bytes(cased).lower(), bytes(deleted)


_CASED, _LOWERED, _DELETED = _byte_tables()
_BEYOND_LATIN_1 = re.compile(r"[^\x00-\xff]")


@functools.lru_cache(maxsize=4096)
def _folds_to_a_space(char: str) -> bool:
    """Whether a character beyond Latin-1 folds to a lone space wherever it is (a typographic
    apostrophe or quote, a dash, an emoji), as "?" does. Bounded: posts in other scripts bring
    thousands of characters, and a text could bring any of Unicode's million."""
    return _fold_slow(f"a{char}a") == "a a"


def _fold_latin_1(text: str, table: bytes) -> str | None:
    """fold(text) by bytes.translate, for a text of Latin-1 characters and of characters that
    fold to spaces (most posts): None for any other."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        if not all(_folds_to_a_space(c) for c in _BEYOND_LATIN_1.findall(text)):
            return None
        raw = text.encode("latin-1", "replace")  # each such character a "?", a space below
    folded = raw.translate(table, _DELETED)
    if not folded.isascii():
        return None
    while b"  " in folded:
        folded = folded.replace(b"  ", b" ")
    return folded.decode("ascii")


def fold(text: str, *, keep_case: bool = False) -> str:
    """Text for matching: accents stripped, "l·l" joined, punctuation (apostrophes, hyphens)
    turned into single spaces, lowercased unless keep_case. Both forms have the same length."""
    fast = _fold_latin_1(text, _CASED if keep_case else _LOWERED)
    if fast is not None:
        return fast
    latin = text.translate(_LATIN)
    # a text of ASCII and Latin letters folds by the table; anything else (emoji, other
    # scripts, combining marks) by Unicode decomposition, with the same result
    spaced = _NOT_WORD.sub(" ", latin) if latin.isascii() else _fold_slow(text)
    return spaced if keep_case else spaced.lower()


Place = District | Barri


class _TextMatcher:
    """Finds every place name in folded text; longest (most specific) names win overlaps.

    Names are indexed by their first word, so a text is read once, word by word: at each word
    the longest name that starts there (as whole words) is a hit."""

    def __init__(
        self, folded: Mapping[str, Place | None], case_sensitive: Mapping[str, Place]
    ) -> None:
        self._folded = _by_first_word(folded)
        self._cased = _by_first_word(case_sensitive)

    def places(self, cased: str) -> list[Place]:
        """The places named in a text folded with its case kept (fold(text, keep_case=True)),
        in order of first mention (repeats kept)."""
        hits: list[tuple[int, int, Place | None]] = []
        for index, haystack in ((self._folded, cased.lower()), (self._cased, cased)):
            if index:
                hits.extend(_hits(index, haystack))
        taken: list[tuple[int, int, Place | None]] = []
        for start, end, place in sorted(hits, key=lambda h: (h[0] - h[1], h[0])):
            if all(end <= s or start >= e for s, e, _ in taken):
                taken.append((start, end, place))
        return [place for _, _, place in sorted(taken, key=lambda t: t[0]) if place is not None]


_Name = tuple[tuple[str, ...], "Place | None"]
# By first word: the names of two words or more by their second word, longest first, and the
# one-word name, if any. A name of several words is always longer than a one-word name that
# starts where it does (its first word), so it is tried first.
_Names = dict[str, tuple[dict[str, list[_Name]], list[_Name]]]


def _by_first_word(table: Mapping[str, Place | None]) -> _Names:
    """Names (folded, words separated by single spaces) by first word, then second word."""
    index: _Names = {}
    for name in sorted(table, key=len, reverse=True):
        words = tuple(name.split())
        if not words:
            continue
        longer, single = index.setdefault(words[0], ({}, []))
        if len(words) == 1:
            single.append((words, table[name]))
        else:
            longer.setdefault(words[1], []).append((words, table[name]))
    return index


def _hits(index: _Names, haystack: str) -> list[tuple[int, int, Place | None]]:
    """(start, end, place) of the longest name that starts at each word of haystack, a folded
    text (its words are separated by single spaces)."""
    words = haystack.split()
    found = []
    for i in [i for i, word in enumerate(words) if word in index]:
        longer, single = index[words[i]]
        hit = single[0] if single else None
        if longer and i + 1 < len(words):
            for name, place in longer.get(words[i + 1], ()):
                if tuple(words[i : i + len(name)]) == name:
                    hit = (name, place)
                    break
        if hit is not None:
            name, place = hit
            start = _offset(haystack, words, i)
            found.append((start, start + sum(map(len, name)) + len(name) - 1, place))
    return found


def _offset(haystack: str, words: list[str], i: int) -> int:
    """Where the i-th word of a folded text starts."""
    return len(haystack) - len(haystack.lstrip(" ")) + sum(map(len, words[:i])) + i


class City:
    """A city's districts and barris, and the lookups that place a post in them."""

    def __init__(
        self,
        name: str,
        districts: Iterable[District],
        barris: Iterable[Barri],
        bbox: BoundingBox,
        *,
        place_names: PlaceNames | None = None,
        barri_polygons: Polygons | None = None,
        district_polygons: Polygons | None = None,
        council: Council | None = None,
        streets: Iterable[Street] | None = None,
    ) -> None:
        """A city may have no barris; then a point is placed by its district's polygon. Polygons,
        when given, must cover exactly the city's barris (or districts); a point is placed by
        the barris' when there are both (the districts' are then only drawn, for a map).
        Without a council, the city's is named in English after the city (Council.of).
        `streets`: the city's street register (plaza.city.streets), when it has one."""
        self.name = name
        self.council = council or Council.of(name)
        self.districts: Mapping[str, District] = MappingProxyType({d.code: d for d in districts})
        self.barris: Mapping[str, Barri] = MappingProxyType({b.code: b for b in barris})
        self.bbox = bbox
        if not self.districts:
            raise ValueError(f"{name} has no districts")
        for barri in self.barris.values():
            if barri.district_code not in self.districts:
                raise ValueError(f"barri {barri.code} is in unknown district {barri.district_code}")
        for kind, polygons, codes in (
            ("barris", barri_polygons, self.barris),
            ("districts", district_polygons, self.districts),
        ):
            if polygons is not None and set(polygons.codes) != set(codes):
                raise ValueError(
                    f"polygons cover {kind} {sorted(polygons.codes)}, the city has {sorted(codes)}"
                )
        self._barri_polygons = barri_polygons
        self._district_polygons = district_polygons
        self._metres = bbox.metres()
        self._matcher, place_keys = self._build_matcher(place_names or PlaceNames())
        self.streets: Streets | None = None
        if streets is not None:
            from plaza.city.streets import street_matcher

            # a barri's, district's or landmark's name written alone is that place, not a street
            self.streets = street_matcher(streets, place_keys)

    @property
    def has_polygons(self) -> bool:
        return self._barri_polygons is not None or self._district_polygons is not None

    @property
    def metres(self) -> Metres:
        """The projection to metres the city's polygons are kept in."""
        return self._metres

    def outlines(self) -> tuple[Mapping[str, BaseGeometry], Mapping[str, BaseGeometry]]:
        """The districts' and the barris' outlines, in metres (`metres` projects), for a map
        (plaza.city.outlines): its polygons', a district without a polygon of its own being its
        barris' union; none for a city placed by centres."""
        if not self.has_polygons:
            return {}, {}
        barris = self._barri_polygons.shapes if self._barri_polygons is not None else {}
        if self._district_polygons is not None:
            return self._district_polygons.shapes, barris
        by_district: dict[str, list[BaseGeometry]] = {}
        for code, area in barris.items():
            by_district.setdefault(self.barris[code].district_code, []).append(area)
        districts = {code: shapely.union_all(areas) for code, areas in by_district.items()}
        return districts, barris

    def district_code(self, text: str) -> str | None:
        """The code of the district `text` names: its code, or a number equal to exactly one
        numeric code but for leading zeros ("6" is "06"); None for no district."""
        text = text.strip()
        if text in self.districts:
            return text
        if text.isascii() and text.isdigit():
            same = [
                c for c in self.districts if c.isascii() and c.isdigit() and int(c) == int(text)
            ]
            if len(same) == 1:
                return same[0]
        return None

    def district(self, code: str) -> District:
        try:
            return self.districts[code]
        except KeyError:
            raise KeyError(
                f"{self.name} has no district {code!r}; known: {', '.join(self.districts)}"
            ) from None

    def barri(self, code: str) -> Barri:
        try:
            return self.barris[code]
        except KeyError:
            raise KeyError(f"{self.name} has no barri {code!r}") from None

    def locate(self, lat: float, lon: float) -> Location | None:
        """Where a point falls: the barri polygon holding it (confidence 1.0), or the nearest
        within SNAP_METRES of it (a beach, a port, a border: 0.9 to 0.6 with the distance); in a
        city without barri polygons, the district polygon (barri None), the same way; without
        any polygons, the nearest barri (or, lacking barris, district) centre inside the city's
        bounding box. None outside the city."""
        if self._barri_polygons is not None:
            found = self._barri_polygons.locate(lat, lon)
            if found is None:
                return None
            return self._location(self.barris[found[0]], "geo", found[1])
        if self._district_polygons is not None:
            found = self._district_polygons.locate(lat, lon)
            if found is None:
                return None
            return self._location(self.districts[found[0]], "geo", found[1])
        if not self.bbox.contains(lat, lon, BBOX_MARGIN_DEG):
            return None
        centres: Iterable[Place] = self.barris.values() or self.districts.values()
        nearest = min(centres, key=lambda p: self._metres.distance_sq(p.lat, p.lon, lat, lon))
        # A district's centre says much less about a point than a barri's.
        return self._location(nearest, "geo", 0.6 if isinstance(nearest, Barri) else 0.4)

    def locate_many(self, points: Sequence[tuple[float, float]]) -> list[Location | None]:
        """locate() of many (lat, lon) points, with the same answers, the polygons' lookups
        done in one query (the classifier's batches)."""
        polygons = self._barri_polygons or self._district_polygons
        if polygons is None:
            return [self.locate(lat, lon) for lat, lon in points]
        places: Mapping[str, Place] = (
            self.barris if polygons is self._barri_polygons else self.districts
        )
        return [
            None if found is None else self._location(places[found[0]], "geo", found[1])
            for found in polygons.locate_many(points)
        ]

    def find_in_text(self, text: str) -> Location | None:
        """The district or barri a text names (see find_in_folded)."""
        return self.find_in_folded(fold(text, keep_case=True))

    def find_in_folded(self, cased: str) -> Location | None:
        """The district or barri a text names, the text folded with its case kept
        (fold(text, keep_case=True): the classifier folds each post once). A barri or landmark
        beats its district; when different districts are named, the first-mentioned place wins
        with low confidence."""
        places = self._matcher.places(cased)
        if not places:
            return None
        district_codes = dict.fromkeys(_district_code(p) for p in places)
        if len(district_codes) > 1:
            first = places[0]
            return self._location(first, "text", 0.5 if isinstance(first, Barri) else 0.4)
        barri = next((p for p in places if isinstance(p, Barri)), None)
        if barri is not None:
            return self._location(barri, "text", 0.8)
        return self._location(places[0], "text", 0.7)

    def find_street(self, text: str) -> StreetAddress | None:
        """The street of the city's register (and house number) a text names; None without a
        register (plaza.city.streets). The street places no district: streets cross them."""
        return self.streets.find(text) if self.streets is not None else None

    def find_street_in_folded(self, folded: str) -> StreetAddress | None:
        """find_street() of a text already folded and lowered (fold(text), or
        plaza.city.streets.fold_address_text(text), which keeps a number's clause break)."""
        return self.streets.find_in_folded(folded) if self.streets is not None else None

    @classmethod
    def barcelona(cls, data_dir: Path | None = None) -> City:
        """Barcelona from the packaged names, centres, street register and outlines; with
        data_dir, a post is placed (and the map drawn) by the exact barri polygons of
        data_dir/barris_geo.json (checked against districtes_geo.json). Without it, by the
        packaged outlines (barcelona_outlines.json, scripts/derive_outlines.py): the same
        polygons simplified to 4 m, far less than a phone's GPS error: a post is placed in the
        exact polygons' barri unless it is within a few metres of a border, and a point outside
        the city (beyond SNAP_METRES) nowhere."""
        from plaza.city.streets import barcelona_register

        packaged = resources.files("plaza.city")
        config = json.loads(packaged.joinpath("barcelona.json").read_text("utf-8"))
        districts = [District(**d) for d in config["districts"]]
        barris = [Barri(**b) for b in config["barris"]]
        bbox = BoundingBox(**config["bbox"])
        district_polygons = None
        if data_dir is not None:
            barri_polygons = _barcelona_polygons(data_dir, districts, barris, bbox.metres())
        else:
            district_polygons, barri_polygons = read_outlines(
                packaged.joinpath("barcelona_outlines.json"),
                bbox.metres(),
                city=config["name"],
                districts=[d.code for d in districts],
                barris=[b.code for b in barris],
            )
        return cls(
            config["name"],
            districts,
            barris,
            bbox,
            place_names=barcelona_place_names(),
            barri_polygons=barri_polygons,
            district_polygons=district_polygons,
            council=Council.barcelona(),
            streets=barcelona_register(),
        )

    @classmethod
    def from_config(cls, path: Path) -> City:
        """A city described by a TOML file (see plaza.city.config): its districts, and optionally
        its barris, read from GeoJSON files named in it. Raises ValueError naming the file and
        the key at fault."""
        from plaza.city.config import load_city_config

        return load_city_config(path)

    @classmethod
    def from_settings(cls, *, city_config: Path | None, city_data_dir: Path | None) -> City:
        """The city Plaza serves: the one PLAZA_CITY_CONFIG describes, else Barcelona (with exact
        polygons from PLAZA_CITY_DATA_DIR when set; it is ignored when a config is given).
        A file that cannot be used stops start-up with a SettingsError naming the variable."""
        try:
            if city_config is not None:
                city = cls.from_config(city_config)
            else:
                city = cls.barcelona(city_data_dir)
        except ValueError as e:
            if city_config is None and city_data_dir is None:
                raise  # the packaged files themselves: an installation's fault, not a setting's
            variable = "PLAZA_CITY_CONFIG" if city_config is not None else "PLAZA_CITY_DATA_DIR"
            raise SettingsError(f"{variable}: {e}") from e
        # Where the city is, in words: a GeoJSON written (lat, lon) instead of (lon, lat) shows
        # here as a city in the wrong place, before every post goes to triage.
        box = city.bbox
        log.info(
            "%s: %d districts, %d barris, %.6f..%.6f N, %.6f..%.6f E (%s)",
            city.name,
            len(city.districts),
            len(city.barris),
            box.min_lat,
            box.max_lat,
            box.min_lon,
            box.max_lon,
            city_config or "packaged",
        )
        return city

    def _location(
        self, place: Place, source: Literal["geo", "text"], confidence: float
    ) -> Location:
        if isinstance(place, Barri):
            return Location(self.districts[place.district_code], place, source, confidence)
        return Location(place, None, source, confidence)

    def _build_matcher(self, place_names: PlaceNames) -> tuple[_TextMatcher, frozenset[str]]:
        """The place-name matcher, and the folded names of the city's places."""
        folded: dict[str, Place | None] = {}

        def add(name: str, place: Place | None) -> None:
            key = fold(name).strip()
            previous = folded.get(key, place)
            if previous == place:
                folded[key] = place
            elif isinstance(place, Barri) and previous == self.districts[place.district_code]:
                folded[key] = place  # a barri sharing its district's name (Sants, les Corts)
            elif not (
                isinstance(previous, Barri) and place == self.districts[previous.district_code]
            ):
                raise ValueError(f"{name!r} names both {previous} and {place}")

        for district in self.districts.values():
            if district.code not in place_names.ambiguous_official_districts:
                add(district.name, district)
        for code, aliases in place_names.district_aliases.items():
            for alias in aliases:
                add(alias, self.district(code))
        for barri in self.barris.values():
            if barri.code not in place_names.ambiguous_official_barris:
                add(barri.name, barri)
        for code, aliases in place_names.barri_aliases.items():
            for alias in aliases:
                add(alias, self.barri(code))
        for landmark, code in place_names.landmarks.items():
            add(landmark, self.barri(code))
        for phrase in place_names.not_places:
            folded[fold(phrase).strip()] = None
        cased = {
            fold(n, keep_case=True).strip(): self.barri(c)
            for n, c in place_names.proper_nouns.items()
        }
        places = frozenset(name for name, place in folded.items() if place is not None)
        return _TextMatcher(folded, cased), places | {n.lower() for n in cased}


def _district_code(place: Place) -> str:
    return place.district_code if isinstance(place, Barri) else place.code


def barcelona_place_names() -> PlaceNames:
    """What people call Barcelona's districts, barris and landmarks (plaza.city.names)."""
    return PlaceNames(
        district_aliases=names.DISTRICT_ALIASES,
        barri_aliases=names.BARRI_ALIASES,
        landmarks=names.LANDMARKS,
        proper_nouns=names.PROPER_NOUNS,
        not_places=names.NOT_PLACES,
        ambiguous_official_barris=names.AMBIGUOUS_OFFICIAL_BARRIS,
    )


def _barcelona_polygons(
    data_dir: Path, districts: list[District], barris: list[Barri], metres: Metres
) -> Polygons:
    districts_path = data_dir / "districtes_geo.json"
    district_codes = set()
    for props, _ in read_features(districts_path):
        if "C_Distri" not in props:
            raise ValueError(f"{districts_path}: a feature has no C_Distri property")
        district_codes.add(str(props["C_Distri"]))
    if district_codes != {d.code for d in districts}:
        raise ValueError(
            f"{districts_path}: district codes {sorted(district_codes)} differ from the packaged "
            f"{sorted(d.code for d in districts)}; re-run scripts/derive_city.py"
        )
    barris_path = data_dir / "barris_geo.json"
    shapes: dict[str, object] = {}
    district_of: dict[str, str] = {}
    for props, geometry in read_features(barris_path):
        try:
            code, district_code = str(props["C_Barri"]), str(props["C_Distri"])
        except KeyError as e:
            raise ValueError(f"{barris_path}: a feature has no {e.args[0]} property") from e
        shapes[code] = geometry
        district_of[code] = district_code
    try:
        polygons = Polygons(shapes, metres)
    except ValueError as e:
        raise ValueError(f"{barris_path}: {e}") from e
    if district_of != {b.code: b.district_code for b in barris}:
        raise ValueError(
            f"{barris_path}: barri codes or their districts differ from the packaged "
            "barcelona.json; re-run scripts/derive_city.py"
        )
    return polygons


def of_district(language: str, name: str) -> str:
    """The preposition before a district's name, as a Barcelona reader expects it:
    "districte de Gràcia", "districte d'Horta-Guinardó", "districte de l'Eixample",
    "distrito del Eixample"."""
    if language == "ca":
        if name == "Eixample":
            return "de l'Eixample"
        if name[:1].lower() in "aeiouhàèéíòóú":
            return f"d'{name}"
        if name.startswith("Les "):
            return f"de les {name[4:]}"
        return f"de {name}"
    if name == "Eixample":
        return "del Eixample"
    return f"de {name}"
