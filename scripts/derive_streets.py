"""Derives the packaged Barcelona street gazetteer from Open Data BCN's street register (Carrerer).

Usage: python scripts/derive_streets.py [CARRERER_CSV] [OUT_FILE]
CARRERER_CSV defaults to ../shared/data/barcelona/carrerer.csv (relative to the repository root)
and OUT_FILE to lib/plaza/src/plaza/city/barcelona_streets.json. Each street keeps its code, its
official name, its type and the name without its type and leading article ("Carrer de l'Abat
Odó" -> "Abat Odó"), which is what people write after "c/" or "calle"; and [NRE_MIN, NRE_MAX] only where
the register gives them. One street a line, so that a new register reads as a diff.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

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


def _number(value: str, line: int, column: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit():
        raise SystemExit(f"line {line}: {column} {value!r} is not a house number")
    return int(value)


def derive(csv_path: Path) -> dict[str, object]:
    """The gazetteer of the register at csv_path: a SystemExit names the line of a bad row."""
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
    return {"source": SOURCE, "streets": streets}


def render(gazetteer: dict[str, object]) -> str:
    streets = gazetteer["streets"]
    assert isinstance(streets, list)
    lines = [json.dumps(s, ensure_ascii=False) for s in streets]
    return (
        '{"source": '
        + json.dumps(gazetteer["source"], ensure_ascii=False)
        + ',\n "streets": [\n  '
        + ",\n  ".join(lines)
        + "\n ]\n}\n"
    )


def main(argv: list[str]) -> Path:
    csv_path = Path(argv[0]) if argv else DEFAULT_CSV
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    out.write_text(render(derive(csv_path)), encoding="utf-8")
    return out


if __name__ == "__main__":
    written = main(sys.argv[1:])
    print(f"wrote {written}")
