"""The service codes (Open311 service_code) posts are routed by, from the packaged taxonomy.csv."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType

LANGUAGES = ("en", "es", "ca")
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Service:
    code: str
    names: Mapping[str, str]  # language ("en", "es", "ca") -> name
    covers: str


@cache
def load_taxonomy() -> Mapping[str, Service]:
    """Service code -> Service, in the file's order (read once)."""
    text = resources.files("plaza").joinpath("config", "taxonomy.csv").read_text(encoding="utf-8")
    services: dict[str, Service] = {}
    for row in csv.DictReader(io.StringIO(text)):
        code = row["service_code"]
        if code in services:
            raise ValueError(f"taxonomy.csv: service code {code!r} appears twice")
        names = MappingProxyType({lang: row[f"name_{lang}"] for lang in LANGUAGES})
        services[code] = Service(code=code, names=names, covers=row["covers"])
    if OTHER not in services:
        raise ValueError(f"taxonomy.csv: the catch-all service code {OTHER!r} is missing")
    return MappingProxyType(services)


def service_name(code: str, language: str) -> str:
    """The service's name in language ("ca", "es-ES", ...), English when the language is not
    one of ours. KeyError for an unknown code."""
    taxonomy = load_taxonomy()
    if code not in taxonomy:
        raise KeyError(f"unknown service code {code!r}; known: {', '.join(taxonomy)}")
    names = taxonomy[code].names
    return names.get(language.lower()[:2], names["en"])
