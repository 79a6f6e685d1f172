"""The `plaza` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from plaza.bus import Bus, bus_from_settings
from plaza.contracts import TOPICS
from plaza.service import configure_logging
from plaza.settings import PlazaSettings, SettingsError, load


def _cmd_run(args: argparse.Namespace) -> int:
    from plaza_cli.embedded import EmbeddedSettings, run

    settings = load(EmbeddedSettings)
    configure_logging(settings.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(settings))
    return 0


KAFKA_CONNECT_TIMEOUT = 10.0
"""Seconds `plaza replay` waits for the Kafka broker to answer before it gives up: a host that
drops packets would otherwise hold it for aiokafka's request timeout (30 s)."""


async def _start_kafka(bus: Bus) -> str | None:
    """Starts the bus; None once connected, else why the broker could not be reached.

    aiokafka logs each failed attempt to connect as an error before it raises: those records
    are held back while it connects, so that an unreachable broker makes one line, the
    caller's. When the bus starts, they are logged as usual."""
    from aiokafka.errors import KafkaConnectionError

    holder = _Holder()
    held = holder.records
    aiokafka = logging.getLogger("aiokafka")
    propagate = aiokafka.propagate
    aiokafka.addHandler(holder)
    aiokafka.propagate = False
    try:
        await asyncio.wait_for(bus.start(), KAFKA_CONNECT_TIMEOUT)
    except KafkaConnectionError:
        return held[-1].getMessage() if held else "no connection"
    except TimeoutError:
        return f"no answer within {KAFKA_CONNECT_TIMEOUT:g} s"
    finally:
        aiokafka.removeHandler(holder)
        aiokafka.propagate = propagate
    for record in held:
        logging.getLogger(record.name).handle(record)
    return None


def _unreachable(command: str, settings: PlazaSettings, why: str) -> str:
    """The one line a command that needs the broker says when it cannot reach it."""
    return (
        f"plaza {command}: the Kafka broker at {settings.kafka_bootstrap} "
        f"(PLAZA_KAFKA_BOOTSTRAP) is not reachable ({why}); start it with "
        "`make up`, or set PLAZA_KAFKA_BOOTSTRAP to where yours listens"
    )


def _with_bus(command: str, settings: PlazaSettings, work: Callable[[Bus], Awaitable[int]]) -> int:
    """Runs `work` with the configured bus started, and closes it; exit status 2, with one line
    saying so, when the broker cannot be reached."""

    async def go() -> int:
        bus = bus_from_settings(settings)
        try:
            unreachable = await _start_kafka(bus)
            if unreachable is not None:
                print(_unreachable(command, settings, unreachable), file=sys.stderr)
                return 2
            return await work(bus)
        finally:
            await bus.close()

    return asyncio.run(go())


class _Holder(logging.Handler):
    """Keeps the records it is given in a list instead of writing them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _cmd_replay(args: argparse.Namespace) -> int:
    from plaza_ingest.replay import replay

    path: Path = args.file
    if not path.is_file():
        print(f"plaza replay: {path}: no such file", file=sys.stderr)
        return 2
    settings = load(PlazaSettings)
    configure_logging(settings.log_level)
    if settings.bus.value == "memory":
        print(
            "plaza replay: PLAZA_BUS=memory has no other process to read the posts; "
            "use Kafka (make up) or make run's demo",
            file=sys.stderr,
        )
        return 2

    async def publish(bus: Bus) -> int:
        report = await replay(bus, path, progress=not args.quiet)
        print(
            f"published {report.published} posts; {len(report.errors)} lines refused",
            file=sys.stderr,
        )
        return 1 if report.errors else 0

    return _with_bus("replay", settings, publish)


def _cmd_classify(args: argparse.Namespace) -> int:
    import os

    from plaza.city import City

    from plaza_cli.classify_cmd import PROGRESS_AFTER_LINES, classify_lines

    settings = load(PlazaSettings)
    configure_logging(settings.log_level)
    city = City.from_settings(
        city_config=settings.city_config, city_data_dir=settings.city_data_dir
    )
    if args.progress is None:
        progress_after = None if sys.stdin.isatty() else PROGRESS_AFTER_LINES
    else:
        progress_after = 0 if args.progress else None
    try:
        report = classify_lines(
            sys.stdin.buffer, city, sys.stdout.buffer, sys.stderr, progress_after=progress_after
        )
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's exit flush from failing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if report.refused:
        print(
            f"plaza classify: {report.classified} posts classified, {report.refused} lines refused",
            file=sys.stderr,
        )
    return 1 if report.refused else 0


def _cmd_db(args: argparse.Namespace) -> int:
    from plaza.db.migrate import upgrade

    settings = load(PlazaSettings)
    asyncio.run(upgrade(settings.require_database()))
    print("database is at the newest schema", file=sys.stderr)
    return 0


DEFAULT_PARTITIONS = 6


def _cmd_topics(args: argparse.Namespace) -> int:
    from plaza.bus.kafka import KafkaBus

    settings = load(PlazaSettings)
    names = [t.topic for t in TOPICS.all()] + [t.dead_letter_topic for t in TOPICS.all()]

    async def create(bus: Bus) -> int:
        await bus.create_topics(names, args.partitions or DEFAULT_PARTITIONS)
        have: dict[str, int] = {}
        if args.partitions is not None and isinstance(bus, KafkaBus):
            have = await bus.topic_partitions(names)
        print("\n".join(settings.kafka_namespace + n for n in names))
        other = {n: p for n, p in have.items() if p != args.partitions}
        for name, count in sorted(other.items()):
            print(
                f"plaza topics: {settings.kafka_namespace}{name} already has {count} partitions, "
                f"not {args.partitions}; it was left as it is (more partitions move keys to other "
                "partitions: raise them only with every service stopped and its lag at 0)",
                file=sys.stderr,
            )
        return 1 if other else 0

    return _with_bus("topics", settings, create)


def _cmd_dead_letters(args: argparse.Namespace) -> int:
    from plaza_cli import dead_letters

    settings = load(PlazaSettings)
    configure_logging(settings.log_level)
    command = f"dead-letters {args.action}"
    try:
        if args.action == "list":
            topics = (
                [dead_letters.dead_letter_topic(args.topic)]
                if args.topic
                else [t.dead_letter_topic for t in TOPICS.all()]
            )
        else:
            topics = [dead_letters.dead_letter_topic(args.topic)]
            if not args.all and not args.positions:
                print(
                    f"plaza {command}: name the dead letters (partition/offset, as `plaza "
                    "dead-letters list` shows them), or --all",
                    file=sys.stderr,
                )
                return 2
    except dead_letters.DeadLetterError as exc:
        print(f"plaza {command}: {exc}", file=sys.stderr)
        return 2

    async def work(bus: Bus) -> int:
        letters = await dead_letters.read(bus, topics)
        if args.action == "list":
            for letter in letters:
                print(letter.line())
            print(f"{len(letters)} dead letters", file=sys.stderr)
            return 0
        try:
            picked = letters if args.all else dead_letters.chosen(letters, args.positions)
        except dead_letters.DeadLetterError as exc:
            print(f"plaza {command}: {exc}", file=sys.stderr)
            return 2
        replayed = await dead_letters.replay(bus, picked)
        print(f"replayed {replayed} dead letters onto {topics[0].removesuffix('.dlq')}")
        return 0

    return _with_bus(command, settings, work)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def _cmd_postgres(args: argparse.Namespace) -> int:
    from plaza_cli.postgres import EmbeddedPostgres, stop_server

    data = args.data_dir
    if args.action == "stop":
        print(
            "stopped" if stop_server(data) else f"no PostgreSQL running in {data}", file=sys.stderr
        )
        return 0
    server = EmbeddedPostgres(data, keep_running=args.action == "start")
    if server.pending:
        print(server.pending, file=sys.stderr)
    server.ensure_database()
    print(server.url())
    return 0


def _cmd_backup(args: argparse.Namespace) -> int:
    from plaza.city import City

    from plaza_cli import backup
    from plaza_cli.access_cmd import AccessCliSettings, database_of
    from plaza_cli.embedded import check_home_city

    settings = load(AccessCliSettings)
    command = args.command
    try:
        if command == "backup" and args.file.is_dir():
            raise backup.BackupError(
                f"{args.file} is a directory: name the backup's file in it, such as "
                f"{args.file / 'plaza-YYYY-MM-DD.tar'}"
            )
        manifest = backup.read_manifest(args.file) if command == "restore" else None
        if manifest is not None:
            backup.check_schema(manifest, args.file)  # before a new machine's database is made
        city = City.from_settings(
            city_config=settings.city_config, city_data_dir=settings.city_data_dir
        ).name
        if manifest is not None and manifest.city != city:
            raise backup.BackupError(
                f"{args.file} holds {manifest.city}'s Plaza, and this one serves {city} "
                "(PLAZA_CITY_CONFIG): set PLAZA_CITY_CONFIG as make run has it"
            )
        if not settings.database_url:
            if manifest is not None:
                check_home_city(settings.home, manifest.city)  # a new machine's empty home too
            elif not (settings.home / "pgdata").is_dir():
                raise backup.BackupError(
                    f"no Plaza data in {settings.home.resolve()} (no pgdata): run this where "
                    "`make run` keeps its data, or set PLAZA_HOME"
                )
        url, server = database_of(settings)
        with server:
            if manifest is None:
                made = asyncio.run(backup.backup(url, settings.home, city, args.file))
                size = args.file.stat().st_size / 1e6
                print(f"backed up {made.summary()} to {args.file} ({size:.1f} MB)")
                return 0
            asyncio.run(backup.restore(url, settings.home, args.file))
    except backup.BackupError as exc:
        print(f"plaza {command}: {exc}", file=sys.stderr)
        return 1
    print(
        f"restored {manifest.summary()}; the next make run carries on from there, upgrading "
        "its schema if this Plaza's is newer"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from plaza_cli.report_cmd import run

    return run(args)


def _cmd_withdraw(args: argparse.Namespace) -> int:
    from plaza_cli.withdraw_cmd import run

    return run(args)


def _cmd_access(args: argparse.Namespace) -> int:
    from plaza_cli.access_cmd import run

    return run(args)


def _access_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from plaza_cli.access_cmd import grant_arguments, update_arguments

    keys = sub.add_parser(
        "keys",
        help="API keys: create (prints the key alone on the last line), list, revoke",
        description="API keys are stored hashed: `create` shows the key once. The database is "
        "PLAZA_DATABASE_URL, or embedded mode's in PLAZA_HOME.",
    )
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="a new key")
    create.add_argument("--name", required=True)
    grant_arguments(create)
    key_actions.add_parser("list", help="every key (never the keys themselves)")
    revoke = key_actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("id", type=int)
    key_actions.add_parser(
        "first-admin",
        help="on a database with no keys and no users, an admin key kept in PLAZA_HOME/admin_key "
        "(what `make run` and `make up` do on a first start); otherwise nothing",
    )
    keys.set_defaults(func=_cmd_access)

    users = sub.add_parser(
        "users",
        help="staff users who log in for tokens: create, list, update, disable",
        description="Without --password-stdin, a terminal asks for the password twice; "
        "otherwise one is generated and printed once.",
    )
    user_actions = users.add_subparsers(dest="action", required=True)
    create_user = user_actions.add_parser("create", help="a new staff user")
    create_user.add_argument("username")
    grant_arguments(create_user, user=True)
    create_user.add_argument("--password-stdin", action="store_true")
    user_actions.add_parser("list", help="every user")
    update_arguments(
        user_actions.add_parser(
            "update",
            help="change a user: role, scopes, worker handle, password; enable or disable",
        )
    )
    disable = user_actions.add_parser("disable", help="no more tokens for this user")
    disable.add_argument("username")
    users.set_defaults(func=_cmd_access)


# `plaza run --help`: where a newcomer whose port 8000 is taken looks first (it said nothing).
RUN_SETTINGS = """settings (environment variables; every one: README, "Configuration"):
  PLAZA_PORT=8000           the API, the OpenAPI docs (/docs) and the console (/console/)
  PLAZA_HOME=.plaza         the data directory: PostgreSQL's data, admin_key, jwt_secret
  PLAZA_DEMO=true           the demo feed of made-up posts (off with PLAZA_CITY_CONFIG)
  PLAZA_DEMO_INTERVAL=3     seconds between two demo posts
  PLAZA_DRAIN_SECONDS=10    on Ctrl-C, how long the services may finish what is on the bus
  PLAZA_CITY_CONFIG=FILE    another city than Barcelona

example: PLAZA_PORT=8080 PLAZA_DEMO=false plaza run"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="plaza", description="Plaza: a city answers its citizens in public."
    )
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="embedded Plaza: every service in one process, with a demo feed",
        description="Embedded Plaza: the five services in one process over an in-memory bus,\n"
        "with an embedded PostgreSQL in PLAZA_HOME, on 127.0.0.1. It takes no arguments:\n"
        "its settings are environment variables.",
        epilog=RUN_SETTINGS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.set_defaults(func=_cmd_run)

    replay = sub.add_parser("replay", help="publish a JSON-lines file of posts onto Kafka")
    replay.add_argument(
        "file", type=Path, help="one JSON post per line, the body POST /api/v1/posts takes"
    )
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(func=_cmd_replay)

    classify = sub.add_parser(
        "classify",
        help="classify posts: JSON lines on stdin, one classification per line on stdout",
        description='Reads posts as JSON lines ({"id": ..., "text": ...} plus optional "lat", '
        '"long", "address", "lang") and writes one JSON line per post with its service code, '
        "district, language and urgency, using the classifier service's code and the city of "
        "PLAZA_CITY_CONFIG / PLAZA_CITY_DATA_DIR. A refused line is named on stderr by its "
        "number; the exit code is then 1.",
    )
    classify.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: once piped input passes 1000 lines)",
    )
    classify.set_defaults(func=_cmd_classify)

    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"])
    db.set_defaults(func=_cmd_db)

    topics = sub.add_parser("topics", help="create Plaza's Kafka topics and dead-letter topics")
    topics.add_argument("action", choices=["create"])
    topics.add_argument(
        "--partitions",
        type=_positive_int,
        default=None,
        help="of each new topic (default 6); a topic that has another number is named, exit 1",
    )
    topics.set_defaults(func=_cmd_topics)

    dead = sub.add_parser(
        "dead-letters",
        help="list the records the workers gave up on, and send them back to their topic",
    )
    dead_actions = dead.add_subparsers(dest="action", required=True)
    dead_list = dead_actions.add_parser(
        "list",
        help="every dead letter kept: where, when, which group, why (reads, commits nothing)",
    )
    dead_list.add_argument(
        "topic", nargs="?", help="one topic (post-classified, plaza.post-classified.v1[.dlq])"
    )
    dead_replay = dead_actions.add_parser(
        "replay",
        help="publish dead letters back onto their source topic, once their cause is fixed "
        "(replaying one twice changes nothing: the handlers recognise it)",
    )
    dead_replay.add_argument("topic", help="post-classified, plaza.post-classified.v1[.dlq], ...")
    dead_replay.add_argument("positions", nargs="*", help="partition/offset, as listed")
    dead_replay.add_argument("--all", action="store_true", help="every dead letter of the topic")
    dead.set_defaults(func=_cmd_dead_letters)

    _access_parsers(sub)

    for name, what in (
        (
            "backup",
            "write the whole database (requests, users, keys, replies, the embedded bus's "
            "journal) and PLAZA_HOME's keys to FILE, while Plaza runs or not",
        ),
        (
            "restore",
            "replace the database and PLAZA_HOME's keys with FILE's, Plaza stopped (on this "
            "machine or a new one)",
        ),
    ):
        saved = sub.add_parser(
            name,
            help=what,
            description=what + ". The database is PLAZA_DATABASE_URL, or embedded mode's in "
            "PLAZA_HOME; the city is PLAZA_CITY_CONFIG's.",
        )
        saved.add_argument("file", type=Path, help="the backup (a tar archive)")
        saved.set_defaults(func=_cmd_backup)
    report = sub.add_parser(
        "report",
        help="city hall's monthly SLA figures per district and service, as CSV",
        description="Per district and service, and their totals, for the requests reported in "
        "the month (from local midnight on the 1st, in the city's time zone): received, "
        "acknowledged and resolved (in time: by their deadline), deadlines missed, median "
        "and 90th percentile hours to acknowledge and to resolve, still open and escalated. "
        "Read from "
        "PLAZA_DATABASE_URL, or embedded mode's database in PLAZA_HOME.",
    )
    report.add_argument(
        "--month", help="YYYY-MM, in the city's time zone (default: the month before this one)"
    )
    report.add_argument(
        "--output", "-o", type=Path, help="the CSV file to write (default: standard output)"
    )
    report.set_defaults(func=_cmd_report)
    withdrawal = sub.add_parser(
        "withdraw",
        help="take a post out of Plaza's records at its author's request to the city",
        description="A citizen asks the city (its data-protection officer) to erase their post, "
        "or an Open311 request, which no platform deletes: its words, photos, handle, point "
        "and (Open311) contact details leave Plaza's records, as when its author deletes it "
        "on its platform; the request stays. Check who asks first: the city vouches for it. "
        "Written to PLAZA_DATABASE_URL, or embedded mode's database in PLAZA_HOME.",
    )
    withdrawal.add_argument(
        "platform", help="mastodon, bluesky, x, open311 (an Open311 request's token)..."
    )
    withdrawal.add_argument("post_id", help="the post's id as Plaza has it (a report's post_id)")
    withdrawal.add_argument(
        "--location-only",
        action="store_true",
        help="take only its point out (its author removed the location); what it said stays",
    )
    withdrawal.add_argument(
        "--dry-run",
        action="store_true",
        help="only show whose post it is and what it says (to check who asks), changing nothing",
    )
    withdrawal.set_defaults(func=_cmd_withdraw)

    pg = sub.add_parser("postgres", help="embedded PostgreSQL for make up (prints its URL)")
    pg.add_argument("action", choices=["start", "stop", "url"])
    pg.add_argument("--data-dir", type=Path, default=Path(".plaza/pgdata"))
    pg.set_defaults(func=_cmd_postgres)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        sys.exit(args.func(args))
    except SettingsError as exc:
        print(f"plaza {args.command}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
