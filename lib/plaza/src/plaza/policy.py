"""The city's policies as configuration: SLA windows per service and urgency, and routing rules."""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import cast

from plaza.city import PACKAGED_ROUTING, City, Council
from plaza.requests import CITY_HALL_QUEUE, TRIAGE_QUEUE
from plaza.settings import SettingsError
from plaza.taxonomy import load_taxonomy

Table = dict[str, object]


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the entry."""


def _packaged(name: str) -> Table:
    return tomllib.loads(resources.files("plaza").joinpath("config", name).read_text("utf-8"))


def _read(path: Path) -> Table:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc


def _only(where: str, given: Iterable[str], allowed: Collection[str]) -> None:
    """A misspelt key is an error, not a setting silently ignored."""
    unknown = [key for key in given if key not in allowed]
    if unknown:
        raise PolicyError(
            f"{where}: unknown key {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"
        )


def _table(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where} must be a table, not {value!r}")
    return cast(Mapping[str, object], value)


def _service(code: str, where: str) -> str:
    """A service code of the taxonomy (plaza/config/taxonomy.csv), the codes posts are routed by."""
    taxonomy = load_taxonomy()
    if code not in taxonomy:
        raise PolicyError(
            f"{where}: service_code {code!r} is not in the taxonomy; the codes are: "
            f"{', '.join(taxonomy)}"
        )
    return code


def _hours(table: Mapping[str, object], key: str, where: str) -> timedelta | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise PolicyError(f"{where}.{key} must be a positive number of hours, not {value!r}")
    return timedelta(hours=float(value))


@dataclass(frozen=True, slots=True)
class Window:
    acknowledge: timedelta
    resolve: timedelta


@dataclass(frozen=True, slots=True)
class Deadlines:
    acknowledge_by: datetime
    resolve_by: datetime


class SlaPolicy:
    """How long the city has to acknowledge and to resolve, by service code and urgency."""

    def __init__(self, config: Mapping[str, object], *, source: str = "sla.toml") -> None:
        """`source` names the file in errors: a missing or misspelt key, a service code outside
        the taxonomy, a window that acknowledges after it resolves."""
        try:
            _only("the file", config, ("default", "services"))
            default = _table(config.get("default", {}), "[default]")
            services = _table(config.get("services", {}), "[services]")
            base = self._window(default, None, "default")
            base_urgent = self._window(
                _table(default.get("urgent", {}), "[default.urgent]"), base, "default.urgent"
            )
            self._default = (base, base_urgent)
            self._services: dict[str, tuple[Window, Window]] = {}
            for code, value in services.items():
                where = f"services.{code}"
                table = _table(value, f"[{where}]")
                _service(code, f"[{where}]")
                normal = self._window(table, base, where)
                urgent_table = _table(table.get("urgent", {}), f"[{where}.urgent]")
                urgent = self._window(urgent_table, base_urgent, f"{where}.urgent")
                self._services[code] = (normal, urgent)
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from None

    @staticmethod
    def _window(table: Mapping[str, object], fallback: Window | None, where: str) -> Window:
        keys = ("acknowledge_hours", "resolve_hours")
        _only(f"[{where}]", table, keys if where.endswith(".urgent") else (*keys, "urgent"))
        ack = _hours(table, "acknowledge_hours", where)
        res = _hours(table, "resolve_hours", where)
        if fallback is None and (ack is None or res is None):
            raise PolicyError(f"[{where}] needs acknowledge_hours and resolve_hours")
        window = Window(
            acknowledge=ack or (fallback.acknowledge if fallback else timedelta()),
            resolve=res or (fallback.resolve if fallback else timedelta()),
        )
        if window.acknowledge > window.resolve:
            raise PolicyError(f"[{where}] acknowledges after it resolves")
        return window

    @classmethod
    def load(cls, override: Path | None = None) -> SlaPolicy:
        """The packaged defaults, with the entries of `override` (PLAZA_SLA_CONFIG) on top. A
        mistake in the override stops start-up, naming the variable."""
        if override is None:
            return cls(_packaged("sla.toml"), source="sla.toml (packaged)")
        try:
            # The packaged file is valid: what the merged one gets wrong, the override does.
            return cls(_merge(_packaged("sla.toml"), _read(override)), source=str(override))
        except PolicyError as exc:
            raise SettingsError(f"PLAZA_SLA_CONFIG: {exc}") from exc

    def window(self, service_code: str, urgent: bool) -> Window:
        normal, urgent_window = self._services.get(service_code, self._default)
        return urgent_window if urgent else normal

    def deadlines(self, service_code: str, urgent: bool, requested_at: datetime) -> Deadlines:
        w = self.window(service_code, urgent)
        return Deadlines(requested_at + w.acknowledge, requested_at + w.resolve)


def _merge(base: Table, top: Table) -> Table:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(cast(Table, out[key]), cast(Table, value))
        else:
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class Route:
    queue: str
    team: str


class RoutingTable:
    """(district, service_code) -> the queue of a district manager and a responsible team.

    A request goes to its district's queue and team, named as the city's council names them
    (Council.team_of); one with no district to triage, in the council's name. [city_wide]
    sends a service to one city-level queue; [[rules]] give a district (or "*", every
    district) another team for one service."""

    def __init__(
        self, config: Mapping[str, object], *, city: City | None = None, source: str = "routing"
    ) -> None:
        """Entries are checked against the taxonomy and, given the city, its districts: a
        mistake raises PolicyError naming `source`, the entry and what is allowed."""
        self._council = city.council if city is not None else Council.barcelona()
        try:
            self._city_wide, self._teams = _routes(config, city)
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: Path | None = None, city: City | None = None) -> RoutingTable:
        """The rules of `path` (PLAZA_ROUTING_CONFIG), else the city's own (its file's
        `routing`): Barcelona's packaged rules for Barcelona, none for a city without a file of
        its own, so no city inherits Barcelona's agencies. Without a city, Barcelona."""
        council = city.council if city is not None else Council.barcelona()
        routing = path if path is not None else council.routing
        if routing == PACKAGED_ROUTING:
            return cls(_packaged("routing.toml"), city=city, source="routing.toml (packaged)")
        if routing is None:
            return cls({}, city=city)
        try:
            return cls(_read(routing), city=city, source=str(routing))
        except PolicyError as exc:
            variable = "PLAZA_ROUTING_CONFIG" if path is not None else "PLAZA_CITY_CONFIG: routing"
            raise SettingsError(f"{variable}: {exc}") from exc

    @property
    def queues(self) -> frozenset[str]:
        """The city-level queues (besides the districts' and triage)."""
        return frozenset(r.queue for r in self._city_wide.values())

    def route(self, district_code: str | None, district_name: str, service_code: str) -> Route:
        if service_code in self._city_wide:
            return self._city_wide[service_code]
        if not district_code:
            return Route(TRIAGE_QUEUE, self._council.agency)
        team = self._teams.get((district_code, service_code)) or self._teams.get(
            ("*", service_code)
        )
        return Route(district_code, team or self._council.team_of(district_name))


def _text(table: Mapping[str, object], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(f"{where} needs {key}, a non-empty text (has {value!r})")
    return value


def _routes(
    config: Mapping[str, object], city: City | None
) -> tuple[dict[str, Route], dict[tuple[str, str], str]]:
    """A routing file's [city_wide] routes by service and [[rules]] teams by (district, service)."""
    _only("the file", config, ("city_wide", "rules"))
    city_wide: dict[str, Route] = {}
    for code, value in _table(config.get("city_wide", {}), "[city_wide]").items():
        where = f"[city_wide.{code}]"
        table = _table(value, where)
        _only(where, table, ("queue", "team"))
        queue = _text(table, "queue", where)
        if queue in (TRIAGE_QUEUE, CITY_HALL_QUEUE) or (city and city.district_code(queue)):
            raise PolicyError(f"{where}: queue {queue!r} is a district's, triage or city hall's")
        city_wide[_service(code, where)] = Route(queue=queue, team=_text(table, "team", where))
    rules = config.get("rules", [])
    if not isinstance(rules, list):
        raise PolicyError(f"rules must be [[rules]] tables, not {rules!r}")
    teams: dict[tuple[str, str], str] = {}
    for i, value in enumerate(rules):
        table = _table(value, f"rules[{i}]")
        where = f"rules[{i}] ({', '.join(f'{k}={v!r}' for k, v in table.items())})"
        _only(where, table, ("district", "service_code", "team"))
        code = _service(_text(table, "service_code", where), where)
        if code in city_wide:
            raise PolicyError(f"{where}: {code} goes to [city_wide.{code}]; the rule never applies")
        district = _text(table, "district", where)
        if city is not None and district != "*":
            known = city.district_code(district)
            if known is None:
                raise PolicyError(
                    f"{where}: {city.name} has no district {district!r}; its districts: "
                    f"{', '.join(city.districts)}, or * for every one"
                )
            district = known
        if (district, code) in teams:
            raise PolicyError(f"{where}: a rule before it gives district {district!r} {code}")
        teams[(district, code)] = _text(table, "team", where)
    return city_wide, teams
