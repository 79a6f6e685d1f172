"""Barcelona's street register: the packaged gazetteer, and the street and number a post names."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from plaza.city import City
from plaza.city.streets import Street, Streets

from tests.infra import ROOT, SHARED_DATA
from tests.unit.street_posts import POSTS


def _derive_streets() -> ModuleType:
    path = ROOT / "scripts/derive_streets.py"
    spec = importlib.util.spec_from_file_location("derive_streets", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def found(city: City, text: str) -> str | None:
    address = city.find_street(text)
    return None if address is None else str(address)


# --- the gazetteer ----------------------------------------------------------------------------


def test_the_packaged_gazetteer_is_what_derive_streets_produces(tmp_path: Path) -> None:
    out = tmp_path / "barcelona_streets.json"
    _derive_streets().main([str(SHARED_DATA / "barcelona" / "carrerer.csv"), str(out)])
    packaged = ROOT / "lib/plaza/src/plaza/city/barcelona_streets.json"
    assert out.read_text(encoding="utf-8") == packaged.read_text(encoding="utf-8")


def test_barcelona_has_every_street_of_the_register(city: City) -> None:
    assert city.streets is not None
    assert len(city.streets) == 4711
    verdi = city.streets.register["356803"]
    assert (verdi.name, verdi.kind, verdi.short) == ("Carrer de Verdi", "C", "Verdi")
    assert city.streets.register["000306"].short == "Abat Odó"


def test_derive_streets_keeps_a_number_range_and_names_a_bad_line(tmp_path: Path) -> None:
    script = _derive_streets()
    header = '"CODI_VIA","CODI_CARRER_INE","TIPUS_VIA","NOM_OFICIAL","NOM_CURT","NRE_MIN","NRE_MAX"'
    good = tmp_path / "good.csv"
    good.write_text(
        f'{header}\n"1","1","C","Carrer de Verdi","Verdi","1","200"\n'
        '"2","2","Pl","Plaça del Sol","Pl Sol","",""\n',
        encoding="utf-8",
    )
    assert script.derive(good, irregular={})["streets"] == [
        ["1", "Carrer de Verdi", "C", "Verdi", 1, 200],
        ["2", "Plaça del Sol", "Pl", "Sol"],
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text(f'{header}\n"1","1","C","Carrer de Verdi","Verdi","1","dos-cents"\n')
    with pytest.raises(SystemExit, match="line 2: NRE_MAX 'dos-cents' is not a house number"):
        script.derive(bad, irregular={})


# --- what a post names ------------------------------------------------------------------------


def test_hand_written_posts_precision_and_recall(city: City) -> None:
    """On the posts of street_posts.py (written for this project, traps included): no post
    is given a wrong street, and at least nine of ten addresses are read."""
    right = wrong = 0
    misses = []
    for text, expected in POSTS:
        got = found(city, text)
        if got is not None and got == expected:
            right += 1
        elif got is not None:
            wrong += 1
        if expected is not None and got != expected:
            misses.append(text)
    addresses = sum(expected is not None for _, expected in POSTS)
    precision, recall = right / (right + wrong), right / addresses
    assert len(POSTS) >= 100 and addresses >= 70
    assert precision == 1.0, [t for t, e in POSTS if found(city, t) not in (e, None)]
    assert recall >= 0.9, misses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fanal apagat al carrer de Verdi 12 fa tres dies", "Carrer de Verdi 12"),
        ("Contenedor desbordado en c/ Aragó, 250", "Carrer d'Aragó 250"),
        ("Huge pothole on Avinguda Diagonal 640", "Avinguda Diagonal 640"),
        ("calle Aragón 300", "Carrer d'Aragó 300"),
        ("calle de la Marina 100", "Carrer de la Marina 100"),
        ("carrer de l'Abat Odo 5", "Carrer de l'Abat Odó 5"),
        ("CARRER DE VERDI 12", "Carrer de Verdi 12"),
        ("Av. Diagonal nº 640", "Avinguda Diagonal 640"),
        ("Av. Diagonal núm. 640", "Avinguda Diagonal 640"),
        ("c/Verdi,12", "Carrer de Verdi 12"),
        ("Carrer de Verdi 12-14", "Carrer de Verdi 12"),
        ("Carrer de Verdi 12 bis", "Carrer de Verdi 12"),
        ("carrer de Verdi 3 dies sense llum", "Carrer de Verdi"),
        ("carrer de Verdi 3 fanals apagats", "Carrer de Verdi"),  # three lamps, not number 3
        ("calle Aragón 2 contenedores quemados", "Carrer d'Aragó"),
        ("Aribau Street 4 potholes in a row", "Carrer d'Aribau"),
        # a measure with decimals is no door either ("3,5" and "3.5" fold to "3 5")
        ("carrer de Verdi 3,5 metres de vorera trencada", "Carrer de Verdi"),
        ("calle Verdi 3.5 m de acera rota", "Carrer de Verdi"),
        ("calle de Verdi 3, 5 farolas apagadas", "Carrer de Verdi 3"),  # a door, then a count
        # a number that ends a clause is the door, whatever follows
        ("Carrer de Verdi 12, contenidors plens", "Carrer de Verdi 12"),
        ("Calle Verdi 12. Farolas apagadas", "Carrer de Verdi 12"),
        ("carrer de Verdi 12: 3 dies sense llum", "Carrer de Verdi 12"),
        ("Carrer de Verdi 12; fanals apagats", "Carrer de Verdi 12"),
        ("the Rambla de Catalunya 20, not la Rambla", "Rambla de Catalunya 20"),
        ("carrer de Chafarinas 3", "Carrer de Las Chafarinas 3"),  # the name's article left out
        ("calle de los Castillejos 20", "Carrer de los Castillejos 20"),
    ],
)
def test_a_street_and_number_in_any_of_the_city_languages(
    city: City, text: str, expected: str
) -> None:
    assert found(city, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Hospital de Sant Pau",  # a hospital, and Carrer de Sant Pau
        "Sant Antoni 12 dies",  # a barri
        "Gràcia 12",  # a district (and Carrer de Gràcia)
        "fa sol al mar",
        "en diagonal 3 farolas fundidas",  # bare Diagonal needs a house number: 3 counts lamps
        "calle Mayor 3",  # no such street in Barcelona
        "plaça del Pi 3 i carrer del",  # the square, not the street
    ],
)
def test_a_bare_everyday_word_or_place_is_no_street(city: City, text: str) -> None:
    got = found(city, text)
    assert got is None or got == "Plaça del Pi 3"


def test_the_type_word_chooses_among_streets_of_one_name(city: City) -> None:
    assert found(city, "plaça del Pi") == "Plaça del Pi"
    assert found(city, "carrer del Pi") == "Carrer del Pi"
    assert found(city, "placeta del Pi") == "Placeta del Pi"
    assert found(city, "passeig del Pi") is None  # no such street


def test_a_number_outside_the_registers_range_is_dropped_and_the_street_kept() -> None:
    streets = Streets([Street("1", "Carrer de Verdi", "C", "Verdi", (1, 200))])
    assert str(streets.find("carrer de Verdi 12")) == "Carrer de Verdi 12"
    assert str(streets.find("carrer de Verdi 640")) == "Carrer de Verdi"
    assert str(streets.find("carrer de Verdi 0")) == "Carrer de Verdi"


def test_a_city_without_a_register_finds_no_street() -> None:
    jun = City.from_config(ROOT / "deploy/cities/jun.toml")
    assert jun.streets is None
    assert jun.find_street("Contenedor desbordado en c/ Aragó, 250") is None


def test_a_city_file_names_barcelonas_register() -> None:
    barcelona = City.from_config(ROOT / "deploy/cities/barcelona.toml")
    assert found(barcelona, "c/ Aragó, 250") == "Carrer d'Aragó 250"
    assert found(barcelona, "Brutícia a Sant Antoni 12 dies seguits") is None


# --- an address's canonical key ---------------------------------------------------------------

ARAGO_250 = "018505 250"  # Carrer d'Aragó's code in the register, and the door


@pytest.mark.parametrize(
    "address",
    [
        "Carrer d'Aragó 250",
        "carrer d'arago 250",  # no accent, no capitals
        "c/ Aragó 250",
        "C. Aragó, nº 250",
        "Calle Aragón, 250",  # Spanish
        "Calle Aragón, 250, 2º 1ª",  # and a floor and door
        "Carrer d'Aragó 250, 3r 2a, 08009 Barcelona",
        "Aragó Street 250",  # English
        "250 Aragó Street",
    ],
)
def test_one_door_has_one_key_however_it_is_written(address: str) -> None:
    streets = City.barcelona().streets
    assert streets is not None
    assert streets.key(address) == ARAGO_250, address


def test_a_key_tells_doors_and_streets_apart_and_is_none_for_what_the_register_cannot_read() -> (
    None
):
    streets = City.barcelona().streets
    assert streets is not None
    assert streets.key("Carrer d'Aragó 252") == "018505 252"  # the next door is another key
    assert streets.key("Carrer de Mallorca 250") not in (None, ARAGO_250)
    # a street without a door is no place (Aragó runs 5 km): no key; a square is one
    assert streets.key("Calle Aragón") is None and streets.key("Carrer d'Aragó") is None
    sol = streets.key("plaça del Sol")
    assert sol is not None and sol == streets.key("plaza del Sol") and " " not in sol
    assert streets.key("plaça del Sol 5") not in (None, sol)
    for unread in ("Somewhere 12", "Plaça de la Vila 3", "3r 2a", "", None):
        assert streets.key(unread) is None, unread


# --- translated and shortened names -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Farola fundida en la calle San Pablo 20", "Carrer de Sant Pau 20"),
        ("C. San Pablo, 20", "Carrer de Sant Pau 20"),
        ("calle san pablo 20", "Carrer de Sant Pau 20"),
        ("Pintadas en la plaza de San Jaime", "Plaça de Sant Jaume"),
        ("pza San Jaime", "Plaça de Sant Jaume"),
        ("Basura en la calle Mayor de Gracia 15", "Carrer Gran de Gràcia 15"),
        ("Árbol caído en el Paseo de Gracia 55", "Passeig de Gràcia 55"),
        ("Obras sin permiso en Vía Layetana 30", "Via Laietana 30"),
        ("via layetana 30", "Via Laietana 30"),
        ("Pg. San Juan 90", "Passeig de Sant Joan 90"),
        ("Avda. Virgen de Montserrat 100", "Avinguda de la Mare de Déu de Montserrat 100"),
        ("c/ Nueva de la Rambla 20", "Carrer Nou de la Rambla 20"),
        ("calle Conde del Asalto 20", "Carrer Nou de la Rambla 20"),  # its name until 1979
        ("Contenedor lleno en la calle Conde Borrell 100", "Carrer del Comte Borrell 100"),
        ("calle Conde de Urgell 100", "Carrer del Comte d'Urgell 100"),
        ("Gran Vía de las Cortes Catalanas 500", "Gran Via de les Corts Catalanes 500"),
        ("Gran Vía Carlos III 100", "Gran Via de Carles III 100"),
        ("calle Jaime I 5", "Carrer de Jaume I 5"),
        ("calle San Pedro Más Alto 10", "Carrer de Sant Pere Més Alt 10"),
        ("Ronda San Antonio 40", "Ronda de Sant Antoni 40"),
        ("Ronda Universidad 20", "Ronda de la Universitat 20"),
        ("Paseo Fabra y Puig 100", "Passeig de Fabra i Puig 100"),
        ("Travesera de las Cortes 100", "Travessera de les Corts 100"),
        ("plaza del Pino", "Plaça del Pi"),
        ("calle del Carmen 20", "Carrer del Carme 20"),
        ("calle Santo Domingo 3", "Carrer de Sant Domènec 3"),
        ("calle Puertaferrisa 5", "Carrer de la Portaferrissa 5"),
        ("Paseo Colón 5", "Passeig de Colom 5"),
        ("Nueva de la Rambla 20", "Carrer Nou de la Rambla 20"),  # long and numbered: bare
        ("Cortes Catalanas 500", "Gran Via de les Corts Catalanes 500"),
    ],
)
def test_a_translated_name_as_barcelonas_spanish_speakers_write_it(
    city: City, text: str, expected: str
) -> None:
    assert found(city, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("El semáforo de Gran Via 500 no funciona", "Gran Via de les Corts Catalanes 500"),
        ("Contenidors plens al Paral·lel 100", "Avinguda del Paral·lel 100"),
        ("Contenedores llenos en Paralelo 100", "Avinguda del Paral·lel 100"),
        ("paralelo 100", "Avinguda del Paral·lel 100"),
        ("Farola caída en Meridiana 200", "Avinguda Meridiana 200"),
        ("Pothole on Diagonal 640", "Avinguda Diagonal 640"),
        ("diagonal, 640", "Avinguda Diagonal 640"),
        ("Diagonal nº 640", "Avinguda Diagonal 640"),
    ],
)
def test_a_shortened_official_name_before_a_house_number(
    city: City, text: str, expected: str
) -> None:
    assert found(city, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "calle Cortes 500",  # Carrer de les Corts word for word, the Gran Via to many
        "Farola rota en la plaza del mercado (Sants)",  # any barri's market square
        "calle del Mercado 3",
        "plaza Nueva 3",  # a new square
        "San Antonio Abad 20",  # a Carrer and a Passatge: without the type, either
        "San Gervasio 12",  # a barri
        "San Andrés 3 días sin recoger",  # a district
        "Hospital de San Pablo",
        "Santa Coloma 3",  # a town, and a Carrer and a Passeig
        "aparcado en paralelo 2 coches",
        "cruza en diagonal 3 metros",
        "la Diagonal Mar 3",
        "Diagonal",  # an everyday word without its number
        "Meridiana sin luz",
        "una nueva farola 3 veces rota",
        "Colón 5",  # one word, no type
        "Nou Barris 3",  # nine barris, not new ones
    ],
)
def test_a_translation_or_short_name_that_could_be_two_things_is_no_street(
    city: City, text: str
) -> None:
    assert found(city, text) is None


@pytest.mark.parametrize(
    ("translated", "catalan"),
    [
        ("calle San Pablo 20", "Carrer de Sant Pau, 20"),
        ("Vía Layetana 30", "Via Laietana 30"),
        ("calle Mayor de Gracia 15", "c/ Gran de Gràcia 15"),
        ("Paralelo 100", "Av. del Paral·lel 100"),
        ("Gran Vía de las Cortes Catalanas 500", "Gran Via 500"),
        ("plaza de San Jaime", "Plaça de Sant Jaume"),
    ],
)
def test_a_translated_and_a_catalan_form_of_one_door_have_one_key(
    translated: str, catalan: str
) -> None:
    streets = City.barcelona().streets
    assert streets is not None
    key = streets.key(catalan)
    assert key is not None and streets.key(translated) == key


def test_a_translation_two_streets_of_a_type_share_is_neither() -> None:
    streets = Streets(
        [
            Street("1", "Carrer de la Font", "C", "Font", None, ("fuente de x",)),
            Street("2", "Carrer de la Font d'X", "C", "Font d'X", None, ("fuente de x",)),
            Street("3", "Plaça de la Font d'X", "Pl", "Font d'X", None, ("fuente de x",)),
        ]
    )
    assert streets.find("calle Fuente de X 3") is None
    assert str(streets.find("plaza Fuente de X")) == "Plaça de la Font d'X"


def test_derive_streets_translates_saints_kings_and_common_words_not_peoples_names() -> None:
    forms = _derive_streets().spanish_forms
    assert forms("Sant Pau") == ["san pablo"]
    assert forms("Sant Domènec") == ["santo domingo"]
    assert forms("Jaume I") == ["jaime i"]  # a king's number, not "y"
    assert forms("Fabra i Puig") == ["fabra y puig"]
    assert forms("Nou de la Rambla") == ["nueva de la rambla", "nuevo de la rambla"]
    assert forms("Mare de Déu de Montserrat") == ["virgen de montserrat"]
    assert forms("Comte d'Urgell") == ["conde de urgell"]
    assert forms("August Font") == []  # a surname, not a fountain
    assert forms("Pau Claris") == []  # a person's name, not a saint's
    assert forms("Nou Barris") == []  # nine
    assert forms("Mercat") == []  # common words alone: any market


def test_derive_streets_keeps_the_registers_names_first_and_names_a_lost_irregular(
    tmp_path: Path,
) -> None:
    script = _derive_streets()
    header = '"CODI_VIA","CODI_CARRER_INE","TIPUS_VIA","NOM_OFICIAL","NOM_CURT","NRE_MIN","NRE_MAX"'
    register = tmp_path / "carrerer.csv"
    register.write_text(
        f'{header}\n"1","1","C","Carrer de Sant Pau","Sant Pau","",""\n'
        '"2","2","C","Carrer de San Pablo","San Pablo","",""\n'  # "san pablo" is its own
        '"3","3","C","Carrer del Comte Borrell","Comte Borrell","",""\n',
        encoding="utf-8",
    )
    gazetteer = script.derive(register, irregular={"Carrer de Sant Pau": ("sant pau vell",)})
    assert gazetteer["spanish"] == {"1": ["sant pau vell"], "3": ["conde borrell"]}
    with pytest.raises(SystemExit, match="'Carrer de Sant Pol', which is no street"):
        script.derive(register, irregular={"Carrer de Sant Pol": ("san pol",)})


def test_a_gazetteer_gives_each_street_its_spanish_names() -> None:
    from plaza.city.streets import read_register

    data = {"streets": [["1", "Carrer de Sant Pau", "C", "Sant Pau", 1, 99]], "spanish": {}}
    assert read_register(data)[0].spanish == ()
    data["spanish"] = {"1": ["san pablo"]}
    assert read_register(data)[0].spanish == ("san pablo",)
    with pytest.raises(ValueError, match="Spanish names are a mapping"):
        read_register({**data, "spanish": ["san pablo"]})
