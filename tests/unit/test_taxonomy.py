"""The packaged service taxonomy: the codes the whole system routes by."""

from __future__ import annotations

import csv

import pytest
from plaza.taxonomy import LANGUAGES, OTHER, Service, load_taxonomy, service_name

from tests.infra import SHARED_DATA


def reference_rows() -> list[dict[str, str]]:
    with (SHARED_DATA / "taxonomy.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_packaged_codes_are_the_reference_codes_in_order() -> None:
    assert list(load_taxonomy()) == [row["service_code"] for row in reference_rows()]


def test_the_packaged_names_and_cover_notes_match_the_reference() -> None:
    taxonomy = load_taxonomy()
    for row in reference_rows():
        service = taxonomy[row["service_code"]]
        assert service == Service(
            code=row["service_code"],
            names={lang: row[f"name_{lang}"] for lang in LANGUAGES},
            covers=row["covers"],
        )


def test_the_taxonomy_is_read_once_and_cannot_be_changed() -> None:
    taxonomy = load_taxonomy()
    assert load_taxonomy() is taxonomy
    with pytest.raises(TypeError):
        taxonomy["new"] = taxonomy[OTHER]  # type: ignore[index]


def test_there_are_thirteen_services_with_a_catch_all() -> None:
    taxonomy = load_taxonomy()
    assert len(taxonomy) == 13
    assert OTHER in taxonomy
    assert {"streetlight", "noise", "public_space"} <= set(taxonomy)


@pytest.mark.parametrize(
    ("code", "language", "name"),
    [
        ("streetlight", "ca", "Enllumenat públic"),
        ("streetlight", "es", "Alumbrado público"),
        ("streetlight", "en", "Street lighting"),
        ("noise", "ca-ES", "Soroll"),
        ("noise", "ES", "Ruido"),
        ("pavement", "fr", "Roads, sidewalks and potholes"),
        ("other", "", "Other requests"),
    ],
)
def test_service_names_by_language(code: str, language: str, name: str) -> None:
    assert service_name(code, language) == name


def test_an_unknown_code_is_a_clear_key_error() -> None:
    with pytest.raises(KeyError, match="unknown service code 'potholes'"):
        service_name("potholes", "en")
