"""The duplicate search's reading of addresses, without I/O: what is one place without a point."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from plaza.city import City
from plaza_router.dedupe import FAR_NUMBERS, DuplicatePolicy, Probe, key_of, same_place, spot

AT = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
STREETS = City.barcelona().streets
ARAGO = "Carrer d'Aragó 250"


@dataclass(frozen=True)
class Open:
    lat: float | None
    long: float | None
    description: str
    address: str | None

    @property
    def address_key(self) -> str | None:
        """As the router records it when it opens the request."""
        return key_of(STREETS, self.address)


def probe(text: str, address: str | None, *, barri: str | None = None) -> Probe:
    return Probe("cleaning", AT, text, None, None, barri, address, STREETS)


def test_an_address_is_read_by_the_register_in_any_form() -> None:
    assert spot(STREETS, ARAGO) == spot(STREETS, "c/ Aragó 250, 3r 2a") == ("018505", 250)
    assert spot(STREETS, "Carrer d'Aragó") == ("018505", None)
    assert spot(STREETS, "Somewhere 12") is None
    assert spot(None, ARAGO) is None  # a city without a register


@pytest.mark.parametrize(
    ("mine", "theirs", "same"),
    [
        (ARAGO, "Carrer d'Aragó 250", True),
        (ARAGO, f"Carrer d'Aragó {250 + FAR_NUMBERS + 2}", False),
        (ARAGO, "Carrer de Mallorca 250", False),
        (ARAGO, "Carrer d'Aragó 254", None),  # close by: the words decide
        (ARAGO, "Carrer d'Aragó", None),
        (ARAGO, None, None),
    ],
)
def test_same_street_and_number_is_one_place_another_street_or_far_numbers_not(
    mine: str, theirs: str | None, same: bool | None
) -> None:
    assert same_place(spot(STREETS, mine), spot(STREETS, theirs)) is same


def test_without_a_point_the_address_decides_before_the_words() -> None:
    policy = DuplicatePolicy()
    same = Open(None, None, "Bins overflowing, smells awful", ARAGO)
    elsewhere = Open(None, None, "Contenedor desbordado en c/ Aragó, 400", "Carrer d'Aragó 400")
    text = "Contenedor desbordado en c/ Aragó, 250"
    found = probe(text, ARAGO).best(policy, [((0, 1), elsewhere), ((0, 2), same)])
    assert found is same
    assert probe(text, ARAGO).best(policy, [((0, 1), elsewhere)]) is None
    # no address of its own: the words decide, as before
    assert probe(text, None, barri="05").best(policy, [((0, 1), elsewhere)]) is elsewhere


def test_a_probe_without_a_point_or_barri_is_searched_by_an_address_the_register_reads() -> None:
    policy = DuplicatePolicy()
    assert probe("x", ARAGO).searchable(policy) and probe("x", ARAGO).by_address == "018505 250"
    assert not probe("x", "Somewhere 12").searchable(policy)
    assert not Probe("cleaning", AT, "x", None, None, None, ARAGO, None).searchable(policy)
    located = Probe("cleaning", AT, "x", 41.39, 2.16, None, ARAGO, STREETS)
    assert located.by_address is None  # a point is searched by its radius, as before
    candidate = Open(None, None, "y", ARAGO)
    assert probe("x", ARAGO).admits(
        policy, service_code="cleaning", requested_at=AT, candidate=candidate, barri_code=None
    )
    assert not probe("x", "Carrer de Mallorca 250").admits(
        policy, service_code="cleaning", requested_at=AT, candidate=candidate, barri_code=None
    )


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        ("Calle Aragón, 250, 2º 1ª", ARAGO),  # an Open311 address, a post's street
        (ARAGO, "c/ Aragó 250"),  # and the other way round
        ("carrer d'arago 250", "Aragó Street 250, 3r 2a"),
    ],
)
def test_one_door_written_two_ways_is_searched_and_found_by_its_key(mine: str, theirs: str) -> None:
    """The search by address compared the addresses as written: these were never candidates."""
    policy = DuplicatePolicy()
    candidate = Open(None, None, "Contenidors plens", theirs)
    assert probe("x", mine).by_address == candidate.address_key == "018505 250"
    assert probe("x", mine).admits(
        policy, service_code="cleaning", requested_at=AT, candidate=candidate, barri_code=None
    )


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        ("Calle San Pablo, 20, 1º", "Carrer de Sant Pau 20"),  # translated, and Catalan
        ("Carrer Gran de Gràcia 15", "c/ Mayor de Gracia 15"),
        ("Paralelo 100", "Avinguda del Paral·lel 100"),
    ],
)
def test_one_door_translated_is_searched_and_found_by_its_key(mine: str, theirs: str) -> None:
    """A Spanish speaker's "calle San Pablo" and a Catalan "carrer de Sant Pau" at one door were
    two requests: the translation was no street of the register."""
    policy = DuplicatePolicy()
    candidate = Open(None, None, "Contenidors plens", theirs)
    assert candidate.address_key is not None
    assert probe("x", mine).by_address == candidate.address_key
    assert probe("x", mine).admits(
        policy, service_code="cleaning", requested_at=AT, candidate=candidate, barri_code=None
    )


def test_a_street_without_a_number_is_searched_by_its_barri_only_a_square_by_itself() -> None:
    # The bench's feed named 20 streets without numbers: once the street's code alone was a
    # key, every post about one street's bins was one place (63% of its requests merged).
    policy = DuplicatePolicy()
    balmes = probe("Contenidors plens al carrer de Balmes", "Carrer de Balmes")
    assert balmes.by_address is None and not balmes.searchable(policy)
    assert probe("Contenidors plens", "Carrer de Balmes", barri="23").searchable(policy)
    door = probe("Contenidors plens al carrer de Balmes 150", "Carrer de Balmes 150")
    assert door.by_address is not None and door.searchable(policy)
    square = probe("Contenidors plens a la plaça del Sol", "Plaça del Sol")
    assert square.by_address is not None and square.searchable(policy)
