"""The city's policies as configuration: SLA windows per service and urgency, and routing rules."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import cast

from plaza.city import of_district
from plaza.requests import TRIAGE_QUEUE

CITY_AGENCY = "Ajuntament de Barcelona"

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

    def __init__(self, config: Mapping[str, object]) -> None:
        default = cast(Mapping[str, object], config.get("default", {}))
        services = cast(Mapping[str, Mapping[str, object]], config.get("services", {}))
        base = self._window(default, None, "default")
        base_urgent = self._window(
            cast(Mapping[str, object], default.get("urgent", {})), base, "default.urgent"
        )
        self._default = (base, base_urgent)
        self._services: dict[str, tuple[Window, Window]] = {}
        for code, table in services.items():
            normal = self._window(table, base, f"services.{code}")
            urgent_table = cast(Mapping[str, object], table.get("urgent", {}))
            urgent = self._window(urgent_table, base_urgent, f"services.{code}.urgent")
            self._services[code] = (normal, urgent)

    @staticmethod
    def _window(table: Mapping[str, object], fallback: Window | None, where: str) -> Window:
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
        """The packaged defaults, with the entries of `override` (PLAZA_SLA_CONFIG) on top."""
        config = _packaged("sla.toml")
        if override is not None:
            config = _merge(config, _read(override))
        return cls(config)

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
    """(district, service_code) -> the queue of a district manager and a responsible team."""

    def __init__(self, config: Mapping[str, object]) -> None:
        city_wide = cast(Mapping[str, Mapping[str, str]], config.get("city_wide", {}))
        self._city_wide = {
            code: Route(queue=str(t["queue"]), team=str(t["team"])) for code, t in city_wide.items()
        }
        self._teams: dict[tuple[str, str], str] = {}
        for i, rule in enumerate(cast(list[Mapping[str, str]], config.get("rules", []))):
            try:
                self._teams[(rule["district"], rule["service_code"])] = rule["team"]
            except KeyError as exc:
                raise PolicyError(f"rules[{i}] has no {exc.args[0]}") from None

    @classmethod
    def load(cls, path: Path | None = None) -> RoutingTable:
        return cls(_read(path) if path is not None else _packaged("routing.toml"))

    @property
    def queues(self) -> frozenset[str]:
        """The city-level queues (besides the districts' and triage)."""
        return frozenset(r.queue for r in self._city_wide.values())

    def route(self, district_code: str | None, district_name: str, service_code: str) -> Route:
        if service_code in self._city_wide:
            return self._city_wide[service_code]
        if not district_code:
            return Route(TRIAGE_QUEUE, CITY_AGENCY)
        team = self._teams.get((district_code, service_code)) or self._teams.get(
            ("*", service_code)
        )
        return Route(district_code, team or f"Districte {of_district('ca', district_name)}")
