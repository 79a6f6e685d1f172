"""What a report is about within its service, for telling two problems of one service apart."""

from __future__ import annotations

import pytest
from plaza.subjects import SUBJECTS, different_problems, subjects_of
from plaza.taxonomy import load_taxonomy


@pytest.mark.parametrize(
    ("service", "text", "subjects"),
    [
        ("traffic", "El semàfor del carrer Verdi no funciona", {"traffic_light"}),
        ("traffic", "La señal de stop está tirada en el suelo", {"sign"}),
        ("traffic", "Abandoned van with flat tyres for months", {"abandoned_vehicle"}),
        ("cleaning", "Contenidor ple a vessar", {"bin"}),
        ("cleaning", "Han dejado un colchón y un sofá en la acera", {"bulky_items"}),
        ("cleaning", "Sofa dumped next to the bins", {"bin", "bulky_items"}),
        ("pavement", "Hi ha un clot enorme a la calçada", {"pothole"}),
        ("pavement", "La acera está levantada", {"sidewalk"}),
        ("water_sewer", "L'embornal està embussat", {"drain"}),
        ("water_sewer", "The fountain in the square has no water", {"fountain"}),
        ("parks_trees", "Una branca a punt de caure de l'arbre", {"tree"}),
        ("parks_trees", "El columpio del parque infantil está roto", {"playground"}),
        ("animals", "Rata muerta en la acera", {"pests", "dead_animal"}),
        ("noise", "Obres de nit al carrer", {"works"}),
        ("noise", "Music from the bar until 4am", {"venue"}),
        ("mobility", "El parquímetro no acepta tarjeta", {"parking_meter"}),
        ("public_space", "Botellón cada noche en la plaza", {"street_drinking"}),
        ("street_furniture", "Banc trencat a la plaça", {"bench"}),
    ],
)
def test_a_text_names_its_subjects_in_each_language(
    service: str, text: str, subjects: set[str]
) -> None:
    assert subjects_of(service, text) == subjects


def test_only_positive_evidence_tells_two_reports_apart() -> None:
    """A report naming nothing specific, or a service without subjects, never prevents a merge;
    two reports sharing a subject may merge whatever else they mention."""
    car = "Un cotxe abandonat fa mesos"
    assert different_problems("traffic", car, "The stop sign was knocked down")
    assert not different_problems("traffic", car, "Coche abandonado desde hace meses")
    assert not different_problems("traffic", car, "Encara és aquí, algú ho pot mirar?")
    assert not different_problems("traffic", "semàfor al costat del cotxe abandonat", car)
    assert not different_problems("streetlight", "Fanal apagat", "Street is completely dark")
    assert not different_problems("unknown", car, "stop sign")


def test_complainers_naming_themselves_name_no_subject() -> None:
    """ "The neighbours cannot sleep" is about whatever makes the noise: it tells nothing apart."""
    assert subjects_of("noise", "Els veïns no podem dormir") == frozenset()
    assert not different_problems("noise", "Los vecinos no podemos dormir", "Música del bar")
    assert subjects_of("public_space", "Terrassa davant del meu edifici") == {"terrace"}


def test_subjects_belong_to_services_of_the_taxonomy() -> None:
    codes = set(load_taxonomy())
    assert set(SUBJECTS) <= codes
    assert all(len(subjects) >= 2 for subjects in SUBJECTS.values())  # one subject tells nothing
