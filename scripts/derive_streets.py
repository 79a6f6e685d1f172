"""Derives the packaged Barcelona street gazetteer from Open Data BCN's street register (Carrerer).

Usage: python scripts/derive_streets.py [CARRERER_CSV] [OUT_FILE]
CARRERER_CSV defaults to ../shared/data/barcelona/carrerer.csv (relative to the repository root)
and OUT_FILE to lib/plaza/src/plaza/city/barcelona_streets.json. Each street keeps its code, its
official name, its type and the name without its type and leading article ("Carrer de l'Abat
Odó" -> "Abat Odó"), which is what people write after "c/" or "calle"; and [NRE_MIN, NRE_MAX] only where
the register gives them. One street a line, so that a new register reads as a diff.

Beside the streets, the names Barcelona's Spanish speakers give them (folded as plaza.city.fold
folds: "Carrer de Sant Pau" is "san pablo", "Plaça de Sant Jaume" "san jaime"): the name's words
translated by the tables below (a saint's and a king's given name, the common words of street
names, the articles), plus a few irregular ones by hand (IRREGULAR). A translation that is
another street's own name is dropped, as the register's name comes first.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping
from itertools import islice, product
from pathlib import Path

from plaza.city import fold

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CSV = ROOT.parent / "shared" / "data" / "barcelona" / "carrerer.csv"
DEFAULT_OUT = ROOT / "lib" / "plaza" / "src" / "plaza" / "city" / "barcelona_streets.json"
SOURCE = "Ajuntament de Barcelona, Open Data BCN, Carrerer (CC-BY 4.0): carrerer.csv"
COLUMNS = ("CODI_VIA", "TIPUS_VIA", "NOM_OFICIAL", "NOM_CURT", "NRE_MIN", "NRE_MAX")

# How each type of the register starts its official name, longest first ("Gran Via" before
# "Via", "Placeta" before "Pla").
TYPE_WORDS = (
    "Gran Via",
    "Travessera",
    "Travessia",
    "Passatge",
    "Passadís",
    "Avinguda",
    "Carretera",
    "Davallada",
    "Escullera",
    "Viaducte",
    "Barriada",
    "Carreró",
    "Baixada",
    "Drecera",
    "Passeig",
    "Placeta",
    "Polígon",
    "Torrent",
    "Jardins",
    "Escales",
    "Carrer",
    "Espigó",
    "Platja",
    "Rambla",
    "Jardí",
    "Plaça",
    "Riera",
    "Ronda",
    "Costa",
    "Camí",
    "Grup",
    "Moll",
    "Parc",
    "Port",
    "Pla",
    "Pas",
    "Nus",
    "Via",
)
# What may stand between the type and the name: "de", "de la", "d'en", "dels", "la"...
ARTICLES = ("de les ", "de la ", "de l'", "d'en ", "de na ", "dels ", "del ", "de ", "d'")
LEADING = ("la ", "les ", "el ", "els ", "l'")


def core_name(official: str) -> str:
    """The official name without its type and the article after it."""
    rest = official
    for word in TYPE_WORDS:
        if rest.startswith(word + " "):
            rest = rest[len(word) + 1 :]
            break
    for article in ARTICLES:
        if rest.startswith(article) and len(rest) > len(article):
            rest = rest[len(article) :]
            break
    for article in LEADING:
        if rest.lower().startswith(article) and len(rest) > len(article):
            rest = rest[len(article) :]
            break
    return rest.strip()


# A saint's (and a king's) given name in Catalan -> in Spanish, folded: "Sant Pau" is "San Pablo",
# "Jaume I" "Jaime I". Other people's names are not translated: "calle Pau Claris", not "Pablo".
GIVEN_NAMES = {
    "adria": "adrian", "agusti": "agustin", "alexandre": "alejandro", "andreu": "andres",
    "anna": "ana", "antoni": "antonio", "agata": "agueda", "bartomeu": "bartolome",
    "bernat": "bernardo", "camil": "camilo", "carles": "carlos", "casimir": "casimiro",
    "caterina": "catalina", "cristofol": "cristobal", "elies": "elias", "elionor": "leonor",
    "eloi": "eloy", "eusebi": "eusebio", "felip": "felipe", "ferran": "fernando",
    "francesc": "francisco", "frederic": "federico", "fructuos": "fructuoso",
    "gaieta": "cayetano", "genis": "gines", "germa": "german", "gervasi": "gervasio",
    "gregori": "gregorio", "guillem": "guillermo", "hermenegild": "hermenegildo",
    "hipolit": "hipolito", "honorat": "honorato", "ignasi": "ignacio", "ildefons": "ildefonso",
    "isidre": "isidro", "iscle": "acisclo", "iu": "ivo", "jacint": "jacinto", "jaume": "jaime",
    "joan": "juan", "joana": "juana", "joaquim": "joaquin", "jordi": "jorge", "josep": "jose",
    "just": "justo", "llatzer": "lazaro", "lluc": "lucas", "llucia": "lucia", "lluis": "luis",
    "lluisa": "luisa", "magi": "magin", "marc": "marcos", "margarida": "margarita",
    "marius": "mario", "marti": "martin", "mateu": "mateo",
    "maurici": "mauricio", "miquel": "miguel", "narcis": "narciso", "nicolau": "nicolas",
    "oleguer": "olegario", "pacia": "paciano", "pasqual": "pascual", "pau": "pablo",
    "pere": "pedro", "quinti": "quintin", "quirze": "quirico", "roc": "roque",
    "sebastia": "sebastian", "sever": "severo", "simplici": "simplicio", "vicenc": "vicente",
}  # fmt: skip
# Common words of street names in Catalan -> in Spanish, folded: "Carrer Nou de Sant Francesc" is
# "calle Nueva de San Francisco", "Plaça del Rei" "plaza del Rey". A word of two forms gives both.
WORDS = {
    "abadessa": ("abadesa",), "abat": ("abad",), "alt": ("alto",), "almirall": ("almirante",),
    "ample": ("ancha",), "angels": ("angeles",), "argenteria": ("plateria",),
    "baix": ("bajo",), "baixa": ("baja",), "baro": ("baron",), "bisbe": ("obispo",),
    "bosc": ("bosque",), "camp": ("campo",), "capita": ("capitan",),
    "ciutat": ("ciudad",), "comtal": ("condal",),
    "comte": ("conde",), "comtes": ("condes",), "comtessa": ("condesa",),
    "creu": ("cruz",), "duc": ("duque",), "duquessa": ("duquesa",), "esglesia": ("iglesia",),
    "estacio": ("estacion",), "font": ("fuente",), "forn": ("horno",), "germans": ("hermanos",),
    "hort": ("huerto",), "infant": ("infante",), "lluna": ("luna",), "maig": ("mayo",),
    "major": ("mayor",), "mercat": ("mercado",), "mes": ("mas",),
    "mestre": ("maestro",), "moli": ("molino",), "mossen": ("mosen",), "muntanya": ("montana",),
    "nou": ("nueva", "nuevo"), "nova": ("nueva",), "nous": ("nuevos",), "palla": ("paja",),
    "pare": ("padre",), "pins": ("pinos",), "pont": ("puente",),
    "porta": ("puerta",), "pou": ("pozo",), "princep": ("principe",), "rei": ("rey",),
    "reial": ("real",), "riu": ("rio",), "santuari": ("santuario",), "tallers": ("talleres",),
    "trinitat": ("trinidad",), "universitat": ("universidad",), "vell": ("viejo",),
    "vella": ("vieja",), "verge": ("virgen",),
}  # fmt: skip
# The articles and "i": "Fabra i Puig" is "Fabra y Puig", "de l'Hospital" "del Hospital".
_SPANISH_ARTICLES = {
    "d": ("de",), "dels": ("de los",), "els": ("los",), "les": ("las",), "l": ("el", "la"),
    "i": ("y",),
}  # fmt: skip
# Phrases translated as one: "Mare de Déu de Montserrat" is "Virgen de Montserrat".
PHRASES = {
    "mare de deu": "virgen",
    "tots sants": "todos los santos",
    "sant crist": "santo cristo",
    "sant elm": "san telmo",
}
# The Spanish names that are no translation of the register's, by official name, and where each
# comes from. Most are the streets' former official names in Spanish, which people still use
# (Barcelona's street names were given back in Catalan from 1979-1980); others are Spanish forms
# of a name people do translate. Sources: the city's common usage as this project knows it, not
# checked line by line against the Ajuntament's Nomenclàtor (../shared/data has no former names).
IRREGULAR = {
    "Carrer Gran de Gràcia": ("mayor de gracia",),  # its Spanish name: "calle Mayor de Gracia"
    "Carrer Nou de la Rambla": ("conde del asalto",),  # its former official name
    "Avinguda del Paral·lel": ("marques del duero",),  # its former official name
    "Avinguda del Portal de l'Àngel": ("puerta del angel",),  # "Avenida Puerta del Ángel"
    "Passeig de Colom": ("colon",),  # "Paseo de Colón", Colom's name in Spanish
    "Carrer de Colom": ("colon",),
    "Carrer d'Enric Granados": ("enrique granados",),  # the composer's name in Spanish
    # "Paseo Nacional", its former name, and the count's name in Spanish
    "Passeig de Joan de Borbó Comte de Barcelona": ("nacional", "juan de borbon"),
    "Carrer de Ferran": ("fernando",),  # "calle Fernando", after Fernando VII at first
    # "Cortes" alone is no Carrer de les Corts: it was the Gran Via to many
    "Gran Via de les Corts Catalanes": ("cortes catalanas",),
    "Travessera de les Corts": ("cortes",),
    "Plaça de les Corts": ("cortes",),
    # Ciutat Vella's streets and squares of one common word, as Spanish speakers name them
    "Carrer del Pi": ("pino",),
    "Plaça del Pi": ("pino",),
    "Placeta del Pi": ("pino",),
    "Carrer del Carme": ("carmen",),
    "Plaça del Carme": ("carmen",),
    "Carrer Ample": ("ancha",),
    "Carrer dels Tallers": ("talleres",),
    "Carrer de l'Argenteria": ("plateria",),
    "Carrer de la Mercè": ("merced",),
    "Plaça de la Mercè": ("merced",),
    "Plaça Reial": ("real",),
    "Plaça del Rei": ("rey",),
    "Plaça de la Universitat": ("universidad",),
    "Ronda de la Universitat": ("universidad",),
}
_ROMAN = frozenset(
    {"i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii"}
)
_SAINT = {"sant": "san", "santa": "santa"}
# "Santo" before these: Santo Domingo, Santo Tomás, Santo Toribio
_SANTO = {"domenec": "domingo", "tomas": "tomas", "toribi": "toribio"}
_MOST_FORMS = 4


def spanish_forms(short: str) -> list[str]:
    """The folded Spanish forms of a name without type ("Sant Pau" -> ["san pablo"]), at most
    _MOST_FORMS of them, without the name's own folded form. A common word is translated where
    it starts the name or follows an article or a translated word ("Font de la Mar", not August
    Font's surname); a name of common words alone is translated by hand (IRREGULAR) if at all:
    "plaza del mercado" is any barri's market square, not Plaça del Mercat."""
    own = fold(short)
    if own.startswith("sense nom"):  # "Carrer Sense Nom (...)": a placeholder, no name
        return []
    text = f" {own} "
    for catalan, spanish in PHRASES.items():
        text = text.replace(f" {catalan} ", f" {spanish} ")
    words = text.split()
    choices: list[tuple[str, ...]] = []
    may_translate, only_common = True, True
    for i, word in enumerate(words):
        before = words[i - 1] if i else ""
        after = words[i + 1] if i + 1 < len(words) else ""
        choice: tuple[str, ...] = (word,)
        if word == "sant" and after in _SANTO:
            choice = ("santo",)
        elif word in _SAINT and after:
            choice = (_SAINT[word],)
        elif before == "sant" and word in _SANTO:
            choice = (_SANTO[word],)
        elif word in GIVEN_NAMES and (before in _SAINT or _roman(words, i + 1)):
            choice = (GIVEN_NAMES[word],)
        elif word in _SPANISH_ARTICLES and not (word == "i" and i + 1 == len(words)):
            choice = _SPANISH_ARTICLES[word]  # "i" last is a king's number: "Jaume I"
        elif word == "merce" and before == "la":  # "de la Mercè", not Mercè Rodoreda
            choice = ("merced",)
        elif word in ("en", "na") and before == "d":  # "d'en Robador": "de Robador"
            choice = ("",)
        elif word == "nou" and after not in ("", "de", "del", "d", "dels"):
            pass  # nine: "Nou Barris", "Nou Pins"
        elif word in WORDS and may_translate:
            choice = WORDS[word]
        translated = choice != (word,)
        if word not in _SPANISH_ARTICLES and word not in ("de", "del", "la", "el", "en", "na"):
            only_common = only_common and word in WORDS and translated
        may_translate = translated or word in ("de", "del", "la", "el", "d", "dels", "els", "l")
        choices.append(choice)
    if only_common:
        return []
    forms = (" ".join(" ".join(ws).split()).replace("de el ", "del ") for ws in product(*choices))
    return [f for f in dict.fromkeys(islice(forms, _MOST_FORMS)) if f != own]


def _roman(words: list[str], i: int) -> bool:
    """Whether words[i] is a king's number: "Carles III", "Jaume I" (the name's last word)."""
    return i < len(words) and words[i] in _ROMAN and (words[i] != "i" or i + 1 == len(words))


def _number(value: str, line: int, column: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit():
        raise SystemExit(f"line {line}: {column} {value!r} is not a house number")
    return int(value)


def derive(
    csv_path: Path, irregular: Mapping[str, tuple[str, ...]] = IRREGULAR
) -> dict[str, object]:
    """The gazetteer of the register at csv_path: a SystemExit names the line of a bad row, or
    a street of `irregular` (the hand-kept Spanish names) the register no longer has."""
    streets = []
    seen: set[str] = set()
    with csv_path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise SystemExit(f"{csv_path}: no column {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            code, official = row["CODI_VIA"].strip(), " ".join(row["NOM_OFICIAL"].split())
            if not code or not official:
                raise SystemExit(f"{csv_path}: line {line}: no CODI_VIA or NOM_OFICIAL")
            if code in seen:
                raise SystemExit(f"{csv_path}: line {line}: CODI_VIA {code} twice")
            seen.add(code)
            low = _number(row["NRE_MIN"], line, "NRE_MIN")
            high = _number(row["NRE_MAX"], line, "NRE_MAX")
            street: list[object] = [code, official, row["TIPUS_VIA"].strip(), core_name(official)]
            if low is not None or high is not None:
                street += [low, high]
            streets.append(street)
    streets.sort(key=lambda s: str(s[0]))
    return {"source": SOURCE, "streets": streets, "spanish": spanish_names(streets, irregular)}


def spanish_names(
    streets: list[list[object]], irregular: Mapping[str, tuple[str, ...]]
) -> dict[str, list[str]]:
    """Each street's Spanish forms (spanish_forms, and `irregular` by official name) by its
    code, but a form that is another street's own name: the register's name comes first, and
    a translation never makes it ambiguous."""
    own = {fold(str(s[3])) for s in streets}
    codes = {str(s[1]): str(s[0]) for s in streets}
    names: dict[str, list[str]] = {}
    for official, forms in irregular.items():
        if official not in codes:
            raise SystemExit(f"IRREGULAR names {official!r}, which is no street of the register")
        names.setdefault(codes[official], []).extend(forms)
    for code, *_, short in (s[:4] for s in streets):
        names.setdefault(str(code), []).extend(spanish_forms(str(short)))
    return {
        code: kept
        for code, forms in sorted(names.items())
        if (kept := [f for f in dict.fromkeys(forms) if f not in own])
    }


def render(gazetteer: dict[str, object]) -> str:
    streets = gazetteer["streets"]
    assert isinstance(streets, list)
    lines = [json.dumps(s, ensure_ascii=False) for s in streets]
    spanish = gazetteer["spanish"]
    assert isinstance(spanish, dict)
    translated = [f"{json.dumps(code)}: {json.dumps(forms)}" for code, forms in spanish.items()]
    return (
        '{"source": '
        + json.dumps(gazetteer["source"], ensure_ascii=False)
        + ',\n "streets": [\n  '
        + ",\n  ".join(lines)
        + '\n ],\n "spanish": {\n  '
        + ",\n  ".join(translated)
        + "\n }\n}\n"
    )


def main(argv: list[str]) -> Path:
    csv_path = Path(argv[0]) if argv else DEFAULT_CSV
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    out.write_text(render(derive(csv_path)), encoding="utf-8")
    return out


if __name__ == "__main__":
    written = main(sys.argv[1:])
    print(f"wrote {written}")
