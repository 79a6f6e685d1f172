"""What a report is about within its service: a traffic light or an abandoned car (both
`traffic`), a bin or a dumped sofa (both `cleaning`), so that two problems of one service a few
metres apart are not taken for one.

A service in the taxonomy covers several kinds of problem, and a dense street has several of
them within a duplicate radius. Merging a report into another problem's request tells its citizen
"already reported", and the worker sent for the first problem closes both. So a merge needs the
two texts not to name different subjects. Only positive evidence counts: a text naming no subject
("it's broken again", a photo caption, another language) never prevents a merge; two texts
sharing any subject may merge.

Patterns are regular expressions matched from a word start against folded text (plaza.city.fold:
lowercase, no accents, punctuation as spaces), Catalan, Spanish and English together; they are
stems unless they end in \\b. A word that may name either of two subjects of a service (a
"hole" in a road or a sidewalk) names none, and so do the words complainers use of themselves
("the neighbours cannot sleep" is about a bar, or works, or a party).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Final

from plaza.city import fold

# service code -> subject -> patterns (ca, es, en)
SUBJECTS: Final[Mapping[str, Mapping[str, tuple[str, ...]]]] = {
    "traffic": {
        "traffic_light": (r"semafor", r"traffic (?:lights?|signals?)\b"),
        "sign": (r"senyal", r"senal(?:es)?\b", r"(?:stop |road |street )?signs?\b"),
        "bollard": (r"pilon", r"bolardo", r"bollards?\b", r"barrer(?:a|es)\b", r"barriers?\b"),
        "abandoned_vehicle": (r"abandon",),
    },
    "cleaning": {
        "bin": (
            r"contenidor",
            r"contenedor",
            r"containers?\b",
            r"paperer",
            r"papelera",
            r"bins?\b",
            r"dumpsters?\b",
            r"iglu",
        ),
        "bulky_items": (
            r"mobles?\b",
            r"muebles?\b",
            r"furniture",
            r"matalas",
            r"colchon",
            r"mattress",
            r"sofas?\b",
            r"couch",
            r"trastos",
            r"voluminos",
            r"electrodomestic",
            r"nevera",
            r"fridge",
        ),
        "rubble": (r"runa\b", r"enderroc", r"escombro", r"rubble"),
        "dog_waste": (
            r"caques?\b",
            r"cacas?\b",
            r"excrement",
            r"cagarr",
            r"dog (?:poo|poop|mess|waste|dirt)",
        ),
    },
    "pavement": {
        "pothole": (r"clots?\b", r"sot\b", r"bache", r"socavon", r"potholes?\b"),
        "sidewalk": (r"vorer(?:a|es)\b", r"aceras?\b", r"sidewalks?\b", r"kerbs?\b", r"curbs?\b"),
        "manhole": (r"tapa de", r"tapa del", r"arqueta", r"manholes?\b", r"registre\b"),
    },
    "water_sewer": {
        "drain": (
            r"clavegue",
            r"embornal",
            r"imbornal",
            r"alcantarill",
            r"sumidero",
            r"drains?\b",
            r"sewers?\b",
            r"gull(?:y|ies)\b",
        ),
        "leak": (r"fuit(?:a|es)\b", r"fugas?\b", r"leak", r"burst", r"canonad", r"tuberia"),
        "fountain": (r"fonts?\b", r"fuentes?\b", r"fountains?\b"),
        "hydrant": (r"hidrant", r"hydrant"),
    },
    "parks_trees": {
        "tree": (
            r"arbres?\b",
            r"arbol",
            r"trees?\b",
            r"branc(?:a|ues)\b",
            r"ramas?\b",
            r"branch",
            r"pod(?:a|ar)\b",
            r"prun",
            r"escocell",
            r"alcorque",
        ),
        "playground": (
            r"parc infantil",
            r"parque infantil",
            r"area de joc",
            r"zona de juego",
            r"gronxador",
            r"columpio",
            r"tobogan",
            r"playground",
            r"swings?\b",
        ),
        "irrigation": (r"reg\b", r"riego", r"aspersor", r"sprinkler", r"irrigation"),
        "weeds": (r"males herbes", r"malas hierbas", r"hierbajo", r"weeds?\b", r"gespa", r"cesped"),
    },
    "animals": {
        "dead_animal": (r"morts?\b", r"mortes?\b", r"muert", r"dead\b", r"cadaver", r"carcass"),
        "pests": (
            r"rat(?:a|es|as|s)?\b",
            r"ratoli",
            r"raton",
            r"mice\b",
            r"cucarach",
            r"panerol",
            r"escarabat",
            r"cockroach",
            r"plag",
            r"pests?\b",
            r"mosquit",
            r"chinche",
            r"bedbug",
        ),
        "loose_animal": (
            r"gos(?:sos)?\b",
            r"perros?\b",
            r"dogs?\b",
            r"gats?\b",
            r"gatos?\b",
            r"cats?\b",
            r"colom",
            r"paloma",
            r"pigeons?\b",
            r"senglar",
            r"jabali",
            r"boars?\b",
        ),
    },
    "street_furniture": {
        "bench": (r"bancs?\b", r"bancos?\b", r"bench"),
        "railing": (
            r"barana",
            r"barandilla",
            r"railing",
            r"tanca\b",
            r"tanques\b",
            r"vallas?\b",
            r"fences?\b",
        ),
    },
    "noise": {
        "venue": (
            r"bars?\b",
            r"terrass",
            r"terraza",
            r"discoteca",
            r"pubs?\b",
            r"clubs?\b",
            r"restaurant",
        ),
        "works": (r"obres\b", r"obras\b", r"construction", r"works\b", r"taladr", r"drill"),
        "event": (r"festa", r"fiesta", r"party", r"parties", r"concert", r"botellon"),
    },
    "mobility": {
        "parking_meter": (r"parquimetr", r"parking meters?\b"),
        "public_bike": (r"bicing", r"bike (?:dock|station)"),
        "transport_stop": (r"parad(?:a|es|as)\b", r"marquesin", r"bus stops?\b", r"shelter"),
        "bike_lane": (r"carril bici", r"bike lanes?\b", r"cycle lanes?\b"),
    },
    "public_space": {
        "terrace": (r"terrass", r"terraza", r"terraces?\b"),
        "street_drinking": (r"botellon", r"beure al carrer", r"beber en la calle", r"drinking"),
        "street_vending": (
            r"manter",
            r"top manta",
            r"venda ambulant",
            r"venta ambulante",
            r"vendors?\b",
            r"vending",
        ),
        "building": (
            r"okupa",
            r"edifici (?:abandonat|ocupat|okupat|en ruines)",
            r"edificio (?:abandonado|ocupado|okupado|en ruinas)",
            r"(?:abandoned|squatted|derelict) building",
            r"squat",
        ),
    },
}


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(patterns) + ")")


_MATCHERS: Final[Mapping[str, tuple[tuple[str, re.Pattern[str]], ...]]] = {
    service: tuple((subject, _compile(patterns)) for subject, patterns in subjects.items())
    for service, subjects in SUBJECTS.items()
}


@lru_cache(maxsize=16384)
def subjects_of(service_code: str, text: str) -> frozenset[str]:
    """The subjects of `service_code` that `text` names (empty for a service without subjects).
    Cached: an open request's description is compared with report after report."""
    matchers = _MATCHERS.get(service_code)
    if not matchers:
        return frozenset()
    folded = fold(text)
    return frozenset(subject for subject, pattern in matchers if pattern.search(folded))


def different_problems(service_code: str, text: str, other: str) -> bool:
    """Whether two texts of one service name different subjects and none in common: a report
    that says nothing more specific than its service is never told apart."""
    mine, theirs = subjects_of(service_code, text), subjects_of(service_code, other)
    return bool(mine) and bool(theirs) and mine.isdisjoint(theirs)
