"""`plaza report`: city hall's monthly SLA figures per district and service, as CSV, read from
the database (PLAZA_DATABASE_URL, or `make run`'s in PLAZA_HOME)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from plaza.city import City
from plaza.db import create_engine, session_factory
from plaza.report import Month, as_csv, monthly_report
from plaza.settings import load

from plaza_cli.access_cmd import AccessCliSettings, database_of, no_data_here


def run(args: argparse.Namespace) -> int:
    settings = load(AccessCliSettings)
    city = City.from_settings(
        city_config=settings.city_config, city_data_dir=settings.city_data_dir
    )
    zone = city.council.zone
    try:
        month = Month.parse(args.month, zone) if args.month is not None else Month.last(zone)
    except ValueError as exc:
        print(f"plaza report: {exc}", file=sys.stderr)
        return 2
    if (missing := no_data_here(settings, "report")) is not None:
        print(missing, file=sys.stderr)
        return 2
    url, server = database_of(settings)

    async def go() -> str:
        engine = create_engine(url, pool_size=1)
        try:
            async with session_factory(engine)() as session:
                return as_csv(await monthly_report(session, city, month))
        finally:
            await engine.dispose()

    with server:
        report = asyncio.run(go())
    if args.output is None:
        sys.stdout.write(report)
        return 0
    with open(args.output, "w", encoding="utf-8", newline="") as out:
        out.write(report)
    print(f"plaza report: {city.name}'s {month} written to {args.output}", file=sys.stderr)
    return 0
