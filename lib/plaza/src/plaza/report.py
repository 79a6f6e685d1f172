"""City hall's monthly SLA report: per district and service, computed from the request rows.

Prometheus keeps a fortnight and its counters restart with their processes; the council's
monthly figures come from the database instead. A month is the city's (it begins at local
midnight on the 1st, in the council's time zone), and a request counts in the month it was
reported, with what became of it since: one reported on the 31st and resolved on the 3rd counts
in the month of the 31st, so a month's figures settle as its requests close. Counts of open
requests and of escalations are as of when the report is made.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from plaza.city import City
from plaza.metrics import NO_DISTRICT, no_district_name
from plaza.requests import OPEN_STATUSES
from plaza.taxonomy import load_taxonomy, service_name

ALL: Final = "all"
"""The district_code or service_code of a total row: a district's services, or the city's."""

_ALL_SERVICES: Final = {"ca": "Tots els serveis", "es": "Todos los servicios", "en": "All services"}
_MONTH = re.compile(r"(\d{4})-(\d{2})", re.ASCII)
# No request is older (Plaza stores instants from the Unix epoch on): an earlier year's month
# is a typing slip, and year 0 or 1 no instant the database driver can send.
_FIRST_YEAR = 1970


@dataclass(frozen=True, slots=True)
class Month:
    """A calendar month in a time zone: [start, end) as instants."""

    year: int
    month: int
    zone: ZoneInfo

    @classmethod
    def parse(cls, value: str, zone: ZoneInfo, *, now: datetime | None = None) -> Month:
        """ "2026-10" in the city's zone. ValueError saying what is wrong with the value: not
        YYYY-MM, no such month, one before 1970, or a month that has not begun."""
        match = _MONTH.fullmatch(value.strip())
        if match is None or not 1 <= int(match[2]) <= 12:
            raise ValueError(f"month {value!r} is not a month as YYYY-MM, such as 2026-10")
        if int(match[1]) < _FIRST_YEAR:
            raise ValueError(f"month {value.strip()!r} is before {_FIRST_YEAR}")
        month = cls(int(match[1]), int(match[2]), zone)
        today = (now or datetime.now(UTC)).astimezone(zone).date()
        if month.start.date() > today:
            raise ValueError(f"month {value} has not begun (today is {today} in {zone.key})")
        return month

    @classmethod
    def last(cls, zone: ZoneInfo, *, now: datetime | None = None) -> Month:
        """The month before the city's current one."""
        today = (now or datetime.now(UTC)).astimezone(zone).date()
        if today.month == 1:
            return cls(today.year - 1, 12, zone)
        return cls(today.year, today.month - 1, zone)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=self.zone)

    @property
    def end(self) -> datetime:
        first = date(self.year + self.month // 12, self.month % 12 + 1, 1)
        return datetime(first.year, first.month, 1, tzinfo=self.zone)

    def __str__(self) -> str:
        return f"{self.year:04}-{self.month:02}"


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One line of the report. Times are hours from the citizen's report (a report dated
    ahead of its arrival counts as instant), None where no request took that step."""

    month: str
    district_code: str
    district: str
    service_code: str
    service: str
    received: int = 0
    acknowledged: int = 0
    acknowledged_in_time: int = 0
    acknowledge_missed: int = 0
    resolved: int = 0
    resolved_in_time: int = 0
    resolve_missed: int = 0
    acknowledge_median_hours: float | None = None
    acknowledge_p90_hours: float | None = None
    resolve_median_hours: float | None = None
    resolve_p90_hours: float | None = None
    still_open: int = 0
    escalated: int = 0


COLUMNS: Final = tuple(f.name for f in fields(ReportRow))
_FIGURES: Final = COLUMNS[5:]

# One pass over the month's requests, grouped by district and service, by district, and for the
# city. A deadline is met when the step came by it (the rows keep the deadline in force: a
# transfer's fresh acknowledge window, a reopened request's new ones), missed when it came late
# or has not come and the SLA scanner found the deadline passed, or it passed on a request still
# open (a request closed as a duplicate or not the city's before its deadline missed nothing):
# met / (met + missed) is the dashboards' compliance, by the month's requests. Ages are clamped
# at 0 as the time-to-step histograms are, inside a CASE: greatest() skips a NULL, and a step not
# taken would count as taken at once. A request with no district is 'none' (NO_DISTRICT).
_FIGURES_SQL: Final = text(
    """
    SELECT coalesce(district_code, 'none') AS district, service_code,
        GROUPING(coalesce(district_code, 'none')) AS all_districts,
        GROUPING(service_code) AS all_services,
        count(*) AS received,
        count(acknowledged_at) AS acknowledged,
        count(*) FILTER (WHERE acknowledged_at <= ack_due_at) AS acknowledged_in_time,
        count(*) FILTER (
            WHERE acknowledged_at > ack_due_at OR acknowledged_at IS NULL AND (
                ack_breached_at IS NOT NULL OR status = ANY(:open) AND ack_due_at < :now
            )
        ) AS acknowledge_missed,
        count(resolved_at) AS resolved,
        count(*) FILTER (WHERE resolved_at <= expected_datetime) AS resolved_in_time,
        count(*) FILTER (
            WHERE resolved_at > expected_datetime OR resolved_at IS NULL AND (
                resolve_breached_at IS NOT NULL OR status = ANY(:open) AND expected_datetime < :now
            )
        ) AS resolve_missed,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY ack_hours) AS acknowledge_median_hours,
        percentile_cont(0.9) WITHIN GROUP (ORDER BY ack_hours) AS acknowledge_p90_hours,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY resolve_hours) AS resolve_median_hours,
        percentile_cont(0.9) WITHIN GROUP (ORDER BY resolve_hours) AS resolve_p90_hours,
        count(*) FILTER (WHERE status = ANY(:open)) AS still_open,
        count(escalated_at) AS escalated
    FROM (
        SELECT *,
            CASE WHEN acknowledged_at IS NOT NULL THEN
                greatest(extract(epoch FROM acknowledged_at - requested_datetime), 0) / 3600
            END AS ack_hours,
            CASE WHEN resolved_at IS NOT NULL THEN
                greatest(extract(epoch FROM resolved_at - requested_datetime), 0) / 3600
            END AS resolve_hours
        FROM service_requests
        WHERE requested_datetime >= :start AND requested_datetime < :end
    ) AS month
    GROUP BY GROUPING SETS (
        (coalesce(district_code, 'none'), service_code), (coalesce(district_code, 'none')), ()
    )
    """
)


async def monthly_report(
    session: AsyncSession, city: City, month: Month, *, now: datetime | None = None
) -> list[ReportRow]:
    """Every district of the city (and requests with none) by every service, each district's
    total and the city's, in that order; a district or service with no request that month is
    there with zeros. Names are in the city's language. A deadline is missed when its step
    came late, or has not come and the deadline passed before `now` (the report's time)."""
    rows = await session.execute(
        _FIGURES_SQL,
        {
            "start": month.start,
            "end": month.end,
            "now": now or datetime.now(UTC),
            "open": sorted(str(s) for s in OPEN_STATUSES),
        },
    )
    figures: dict[tuple[str, str], Mapping[str, Any]] = {}
    for row in rows.mappings():
        district = ALL if row["all_districts"] else str(row["district"])
        service = ALL if row["all_services"] else str(row["service_code"])
        figures[(district, service)] = {k: row[k] for k in _FIGURES}
    language = city.council.language
    districts = [*sorted(city.districts), NO_DISTRICT]
    districts += sorted({d for d, _ in figures} - {*districts, ALL})  # another city's rows
    services = list(load_taxonomy())
    services += sorted({s for _, s in figures} - {*services, ALL})

    def line(district: str, service: str) -> ReportRow:
        return ReportRow(
            month=str(month),
            district_code=district,
            district=_district_name(city, district, language),
            service_code=service,
            service=_service_name(service, language),
            **_rounded(figures.get((district, service), {})),
        )

    report = []
    for district in districts:
        report += [line(district, service) for service in services]
        report.append(line(district, ALL))
    report.append(line(ALL, ALL))
    return report


def _rounded(figures: Mapping[str, Any]) -> dict[str, Any]:
    """Counts as they are, hours to the hundredth (36 seconds)."""
    return {
        k: round(float(v), 2) if k.endswith("_hours") and v is not None else v
        for k, v in figures.items()
    }


def _district_name(city: City, code: str, language: str) -> str:
    if code == ALL:
        return city.name
    if code == NO_DISTRICT:
        return no_district_name(language)
    district = city.districts.get(code)
    return district.name if district is not None else code


def _service_name(code: str, language: str) -> str:
    if code == ALL:
        return _ALL_SERVICES.get(language, _ALL_SERVICES["en"])
    try:
        return service_name(code, language)
    except KeyError:
        return code


def as_csv(report: Iterable[ReportRow]) -> str:
    """The report as CSV (RFC 4180: a header line, CRLF line ends), an empty cell where a time
    has no request behind it."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in report:
        writer.writerow("" if v is None else v for v in (getattr(row, c) for c in COLUMNS))
    return out.getvalue()
