"""Routing and SLA files: Barcelona's rules stay Barcelona's, another city's requests are named
as its council names them, and a file's mistakes are refused, naming the file and the entry."""

from __future__ import annotations

from pathlib import Path

import pytest
from plaza.city import City
from plaza.policy import PolicyError, Route, RoutingTable, SlaPolicy
from plaza.settings import SettingsError

from tests.infra import ROOT

JUN = ROOT / "deploy" / "cities" / "jun.toml"


@pytest.fixture(scope="module")
def jun() -> City:
    return City.from_config(JUN)


def test_barcelona_routes_as_it_always_has() -> None:
    for routing in (RoutingTable.load(), RoutingTable.load(city=City.barcelona())):
        assert routing.route(None, "", "streetlight") == Route("triage", "Ajuntament de Barcelona")
        assert routing.route("06", "Gràcia", "streetlight") == Route("06", "Districte de Gràcia")
        assert routing.route("02", "Eixample", "noise") == Route("02", "Districte de l'Eixample")
        assert routing.route("07", "Horta-Guinardó", "parks_trees") == Route(
            "07", "Parcs i Jardins de Barcelona"
        )
        assert routing.route("06", "Gràcia", "mobility") == Route(
            "city-mobility", "Barcelona de Serveis Municipals (BSM)"
        )
        assert routing.queues == {"city-mobility"}


def test_another_city_without_routing_of_its_own_gets_none_of_barcelona_s(jun: City) -> None:
    routing = RoutingTable.load(city=jun)
    assert routing.route(None, "", "parks_trees") == Route("triage", "Ayuntamiento de Jun")
    for service in ("parks_trees", "water_sewer", "mobility", "streetlight"):
        assert routing.route("01", "Casco Urbano", service) == Route(
            "01", "Distrito de Casco Urbano"
        )
    assert routing.queues == frozenset()


def test_a_routing_file_replaces_the_city_s_and_keeps_its_council(
    jun: City, tmp_path: Path
) -> None:
    path = tmp_path / "routing.toml"
    path.write_text(
        '[city_wide.water_sewer]\nqueue = "aguas"\nteam = "Aguas de Jun"\n'
        '[[rules]]\ndistrict = "2"\nservice_code = "parks_trees"\nteam = "Jardines"\n',
        encoding="utf-8",
    )
    routing = RoutingTable.load(path, jun)
    assert routing.route("01", "Casco Urbano", "water_sewer") == Route("aguas", "Aguas de Jun")
    assert routing.route("02", "Urbanizaciones", "parks_trees") == Route("02", "Jardines")
    assert routing.route("01", "Casco Urbano", "parks_trees") == Route(
        "01", "Distrito de Casco Urbano"
    )
    assert routing.route(None, "", "noise") == Route("triage", "Ayuntamiento de Jun")
    assert routing.queues == {"aguas"}


RULE = '[[rules]]\ndistrict = "*"\nservice_code = "noise"\nteam = "Policía Local"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[rules]]\ndistrict = "*"\nservice_code = "farolas"\nteam = "Servicios de Jun"\n',
            r"rules\[0\] \(district='\*', service_code='farolas', team='Servicios de Jun'\): "
            r"service_code 'farolas' is not in the taxonomy; the codes are: streetlight, ",
        ),
        (
            RULE.replace('"*"', '"03"'),
            r"rules\[0\] .*: Jun has no district '03'; its districts: 01, 02, or \* for every one",
        ),
        (
            RULE.replace("team =", "equipo ="),
            r"rules\[0\] .*: unknown key 'equipo'; allowed: district, service_code, team",
        ),
        (RULE + RULE, r"rules\[1\] .*: a rule before it gives district '\*' noise"),
        ('[city_wide.farolas]\nqueue = "x"\nteam = "y"\n', r"\[city_wide\.farolas\]: service_code"),
        (
            '[city_wide.noise]\nqueue = "01"\nteam = "y"\n',
            r"\[city_wide\.noise\]: queue '01' is a district's, triage",
        ),
        ('[city_wide.noise]\nqueue = "ruido"\n', r"\[city_wide\.noise\] needs team"),
        (
            '[city_wide.noise]\nqueue = "ruido"\nteam = "P"\n' + RULE,
            r"rules\[0\] .*: noise goes to \[city_wide\.noise\]; the rule never applies",
        ),
        ('[rule]\ndistrict = "*"\n', r"the file: unknown key 'rule'; allowed: city_wide, rules"),
    ],
)
def test_a_routing_file_s_mistake_is_refused_naming_file_entry_and_what_is_allowed(
    jun: City, tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "jun-routing.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(
        SettingsError, match=r"^PLAZA_ROUTING_CONFIG: .*jun-routing\.toml: " + message
    ):
        RoutingTable.load(path, jun)


def test_a_city_file_s_own_routing_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "jun-routing.toml").write_text(RULE.replace('"*"', '"03"'), encoding="utf-8")
    city = tmp_path / "jun.toml"
    city.write_text(
        JUN.read_text("utf-8")
        .replace("# routing =", "routing =")
        .replace('"jun-districts.geojson"', f'"{JUN.parent / "jun-districts.geojson"}"'),
        encoding="utf-8",
    )
    with pytest.raises(SettingsError, match=r"^PLAZA_CITY_CONFIG: routing: .*has no district '03'"):
        RoutingTable.load(city=City.from_config(city))


def test_without_the_city_a_routing_file_s_districts_are_taken_as_given() -> None:
    routing = RoutingTable({"rules": [{"district": "99", "service_code": "noise", "team": "T"}]})
    assert routing.route("99", "Noranta-nou", "noise") == Route("99", "T")
    with pytest.raises(PolicyError, match=r"^routing: rules\[0\] .*service_code 'soroll'"):
        RoutingTable({"rules": [{"district": "99", "service_code": "soroll", "team": "T"}]})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[sla.farolas]\nacknowledge = 2\n",
            r"the file: unknown key 'sla'; allowed: default, services",
        ),
        (
            "[services.farolas]\nresolve_hours = 2\n",
            r"\[services\.farolas\]: service_code 'farolas' is not in the taxonomy",
        ),
        (
            "[services.noise]\nacknowledge = 2\n",
            r"\[services\.noise\]: unknown key 'acknowledge'; allowed: acknowledge_hours, "
            r"resolve_hours, urgent",
        ),
        (
            "[services.noise.urgent]\nresolve_hour = 2\n",
            r"\[services\.noise\.urgent\]: unknown key 'resolve_hour'; allowed: "
            r"acknowledge_hours, resolve_hours$",
        ),
        ("[default]\nresolve_hours = -1\n", r"default\.resolve_hours must be a positive number"),
        ("[services.noise]\nacknowledge_hours = 200\n", r"\[services\.noise\] acknowledges after"),
        ("services = 3\n", r"\[services\] must be a table, not 3"),
    ],
)
def test_an_sla_file_s_mistake_is_refused_naming_file_entry_and_what_is_allowed(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "sla.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError, match=r"^PLAZA_SLA_CONFIG: .*sla\.toml: " + message):
        SlaPolicy.load(path)


def test_an_sla_file_overrides_the_packaged_windows(tmp_path: Path) -> None:
    path = tmp_path / "sla.toml"
    path.write_text("[services.noise]\nresolve_hours = 48\n", encoding="utf-8")
    sla = SlaPolicy.load(path)
    assert sla.window("noise", urgent=False).resolve.total_seconds() == 48 * 3600
    assert (
        sla.window("noise", urgent=False).acknowledge
        == SlaPolicy.load().window("noise", urgent=False).acknowledge
    )
