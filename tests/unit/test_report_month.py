"""The report's month: the city's calendar month, from local midnight, named or the last one."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from plaza.report import Month

BARCELONA = ZoneInfo("Europe/Madrid")
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def test_a_month_begins_and_ends_at_local_midnight_across_the_clock_change() -> None:
    october = Month.parse("2026-10", BARCELONA, now=NOW)
    # summer time at the start (UTC+2), winter time at the end (UTC+1): 31 days and an hour
    assert october.start.astimezone(UTC) == datetime(2026, 9, 30, 22, tzinfo=UTC)
    assert october.end.astimezone(UTC) == datetime(2026, 10, 31, 23, tzinfo=UTC)
    december = Month.parse("2025-12", BARCELONA, now=NOW)
    assert december.end.astimezone(UTC) == datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert str(december) == "2025-12"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("2026-13", "is not a month as YYYY-MM"),
        ("10/2026", "is not a month as YYYY-MM"),
        ("2026-1", "is not a month as YYYY-MM"),
        ("2026-12", "has not begun (today is 2026-11-27 in Europe/Madrid)"),
        # year 0 is no year of Python's calendar: "year 0 is out of range", naming no month
        ("0000-01", "month '0000-01' is before 1970"),
        ("２０２６-10", "is not a month as YYYY-MM"),  # full-width digits
    ],
)
def test_a_month_that_cannot_be_reported_says_why(value: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        Month.parse(value, BARCELONA, now=NOW)


def test_the_current_month_so_far_may_be_reported() -> None:
    # 23:30 UTC on 30 November is already 1 December in Barcelona
    assert str(Month.parse("2026-12", BARCELONA, now=datetime(2026, 11, 30, 23, 30, tzinfo=UTC)))


def test_the_last_month_is_the_citys_previous_one() -> None:
    assert str(Month.last(BARCELONA, now=NOW)) == "2026-10"
    assert str(Month.last(BARCELONA, now=datetime(2026, 1, 15, tzinfo=UTC))) == "2025-12"
    # 23:30 UTC on 31 January is 1 February in Barcelona: January is the last month
    assert str(Month.last(BARCELONA, now=datetime(2026, 1, 31, 23, 30, tzinfo=UTC))) == "2026-01"


def test_a_month_of_year_one_is_refused_in_a_city_east_of_greenwich() -> None:
    # Its start in UTC falls in year 0, which the database driver could not send: a 500.
    with pytest.raises(ValueError, match=re.escape("month '0001-01' is before 1970")):
        Month.parse("0001-01", ZoneInfo("Asia/Tokyo"), now=NOW)
