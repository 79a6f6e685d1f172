"""`plaza keys …` and `plaza users …`: API keys and staff users, straight in the database; and the
admin key embedded mode makes on its first start."""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

from plaza.city import City
from plaza.db import create_engine, session_factory
from plaza.db.migrate import upgrade
from plaza.db.models import ApiKey, StaffUser
from plaza.policy import RoutingTable
from plaza.settings import PlazaSettings, load
from plaza_api.auth import (
    USER_ROLES,
    AccessConflict,
    GrantError,
    Role,
    UserChanges,
    check_grant,
    check_user_role,
    create_api_key,
    create_user,
    manager_queues,
    record_admin_change,
    update_user,
)
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from plaza_cli.postgres import EmbeddedPostgres

ADMIN_KEY_FILE = "admin_key"


class AccessCliSettings(PlazaSettings):
    home: Path = Field(default=Path(".plaza"), description="PLAZA_HOME: data directory")
    port: int = Field(default=8000, ge=1, le=65535, description="PLAZA_PORT: the API's port")


def no_data_here(settings: AccessCliSettings, command: str) -> str | None:
    """Why `command` stops, when there is neither PLAZA_DATABASE_URL nor `make run`'s data in
    PLAZA_HOME; None when there is a database to use."""
    if settings.database_url or (settings.home / "pgdata").is_dir():
        return None
    return (
        f"plaza {command}: no Plaza data in {settings.home.resolve()} (no pgdata): run this "
        "where `make run` keeps its data (the project's directory), or set PLAZA_HOME, or "
        "PLAZA_DATABASE_URL for another PostgreSQL"
    )


def database_of(settings: AccessCliSettings) -> tuple[str, AbstractContextManager[object]]:
    """PLAZA_DATABASE_URL, or embedded mode's PostgreSQL in PLAZA_HOME (shared with a running
    `make run`)."""
    if settings.database_url:
        return settings.database_url, nullcontext()
    server = EmbeddedPostgres(settings.home / "pgdata")
    if server.pending:
        print(server.pending, file=sys.stderr)
    server.ensure_database()

    class _Stop(AbstractContextManager[object]):
        def __exit__(self, *exc: object) -> None:
            server.stop()

    return server.url(), _Stop()


def grant_arguments(
    p: argparse.ArgumentParser, *, changing: bool = False, user: bool = False
) -> None:
    """A new key's or user's grant; `changing`, a user's new one (each part optional). A
    user's roles are the staff's: civic_developer and bridge are offered too, and refused
    with the reason (they are for keys)."""
    staff = ", ".join(r.value for r in Role if r in USER_ROLES)
    p.add_argument(
        "--role",
        required=not changing,
        choices=[r.value for r in Role],
        help=(
            f"a user's: {staff}"
            + (
                "; a new role comes with a new grant: the scopes and handle given here"
                if changing
                else ""
            )
        )
        if user or changing
        else None,
    )
    p.add_argument(
        "--scope",
        action="append",
        default=None if changing else [],
        help="a manager's queue: a district code (06), triage, city-mobility"
        # A key's help: the README's bridge key is `--scope mastodon`, a platform, not a queue.
        + ("" if user or changing else "; a bridge's platform (mastodon)")
        + "; repeat for more"
        + ("; they replace those the user had" if changing else ""),
    )
    p.add_argument("--worker-handle", help="a worker's public handle, as managers assign it")


def update_arguments(p: argparse.ArgumentParser) -> None:
    """`plaza users update NAME …`: what PATCH /api/v1/admin/users/{id} changes."""
    p.add_argument("username")
    grant_arguments(p, changing=True)
    state = p.add_mutually_exclusive_group()
    state.add_argument(
        "--enable", dest="disabled", action="store_false", default=None, help="re-enable them"
    )
    state.add_argument("--disable", dest="disabled", action="store_true", help="disable them")
    password = p.add_mutually_exclusive_group()
    password.add_argument(
        "--password-stdin", action="store_true", help="a new password, read from stdin"
    )
    password.add_argument(
        "--reset-password",
        action="store_true",
        help="a new password: asked for twice on a terminal, otherwise generated and printed once",
    )


Queues = Mapping[str, str | None]


def _checked_grant(args: argparse.Namespace, settings: AccessCliSettings) -> Queues | None:
    """A new key's or user's grant, checked before the database is opened or a password asked
    for (GrantError). Returns, for a manager, the queues their scopes may name: those of the
    gateway's city and routing table (PLAZA_CITY_CONFIG or PLAZA_CITY_DATA_DIR, and
    PLAZA_ROUTING_CONFIG). A user's new grant is checked with the database (their role is
    there), against the same queues."""
    if args.action == "update":
        return _queues(settings)
    if args.action != "create":
        return None
    role = Role(args.role)
    if args.command == "users":
        check_user_role(role)
    queues = _queues(settings) if role is Role.MANAGER else None
    check_grant(role, args.scope, args.worker_handle, queues)
    return queues


def _queues(settings: AccessCliSettings) -> Queues:
    city = City.from_settings(
        city_config=settings.city_config, city_data_dir=settings.city_data_dir
    )
    return manager_queues(city, RoutingTable.load(settings.routing_config, city))


def _actor() -> str:
    """How the log names who ran the command."""
    return f"cli:{getpass.getuser()}"


async def _run_keys(
    args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession], queues: Queues | None
) -> int:
    async with sessions.begin() as session:
        if args.action == "create":
            row, key = await create_api_key(
                session,
                name=args.name,
                role=Role(args.role),
                scopes=args.scope,
                worker_handle=args.worker_handle,
                queues=queues,
            )
            scopes = f", scopes {', '.join(row.scopes)}" if row.scopes else ""
            print(f"created API key {row.name!r} (id {row.id}, role {row.role}{scopes}):")
            print(key)
            record_admin_change(_actor(), "created key", f"{row.name!r} (id {row.id})")
        elif args.action == "list":
            for row in (await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars():
                state = "revoked" if row.revoked_at else "active"
                print(
                    f"{row.id}\t{row.name}\t{row.role}\t{','.join(row.scopes)}\t{row.prefix}…\t{state}"
                )
        else:
            found = await session.get(ApiKey, args.id)
            if found is None:
                print(f"plaza keys revoke: no key {args.id}", file=sys.stderr)
                return 1
            if found.revoked_at is None:
                found.revoked_at = datetime.now(UTC)
                record_admin_change(_actor(), "revoked key", f"{found.name!r} (id {found.id})")
            print(
                f"revoked key {found.name!r} (gateways notice within 30 s; a key's grant never "
                "changes: for another, plaza keys create with another name)",
                file=sys.stderr,
            )
    return 0


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """(password, generated)."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise GrantError("the passwords differ", "password")
        return first, False
    return secrets.token_urlsafe(15), True


async def _run_users(
    args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession], queues: Queues | None
) -> int:
    async with sessions.begin() as session:
        if args.action == "create":
            password, generated = _password(args)
            user = await create_user(
                session,
                username=args.username,
                password=password,
                role=Role(args.role),
                scopes=args.scope,
                worker_handle=args.worker_handle,
                queues=queues,
            )
            print(f"created user {_described(user)}")
            if generated:
                print(f"password (shown once): {password}")
            record_admin_change(_actor(), "created user", f"{user.username!r} (id {user.id})")
        elif args.action == "list":
            for row in (await session.execute(select(StaffUser).order_by(StaffUser.id))).scalars():
                state = "disabled" if row.disabled_at else "active"
                handle = row.worker_handle or ""
                print(
                    f"{row.id}\t{row.username}\t{row.role}\t{','.join(row.scopes)}\t{handle}"
                    f"\t{state}"
                )
        else:
            return await _change_user(args, session, queues)
    return 0


async def _change_user(
    args: argparse.Namespace, session: AsyncSession, queues: Queues | None
) -> int:
    """`plaza users update` and `plaza users disable`, as PATCH and DELETE
    /api/v1/admin/users/{id} do (gateways notice within 30 s)."""
    found = (
        await session.execute(select(StaffUser).where(StaffUser.username == args.username))
    ).scalar_one_or_none()
    if found is None:
        print(f"plaza users {args.action}: no user {args.username!r}", file=sys.stderr)
        return 1
    if args.action == "disable":
        changes, generated = UserChanges(disabled=True), None
    else:
        password, made = (
            _password(args) if args.password_stdin or args.reset_password else (None, False)
        )
        generated = password if made else None
        changes = UserChanges(
            role=Role(args.role) if args.role else None,
            scopes=args.scope,
            worker_handle=args.worker_handle,
            disabled=args.disabled,
            password=password,
        )
    changed = await update_user(session, found, changes, queues)
    if changed:
        record_admin_change(
            _actor(), "changed user", f"{found.username!r} (id {found.id})", changed
        )
    print(
        f"user {_described(found)}: {'changed ' + ', '.join(changed) if changed else 'as it was'}"
    )
    if generated:
        print(f"password (shown once): {generated}")
    if {"password", "disabled"} & set(changed):
        print("their tokens already issued stop working within 30 s", file=sys.stderr)
    return 0


def _described(user: StaffUser) -> str:
    scopes = f", scopes {', '.join(user.scopes)}" if user.scopes else ""
    handle = f", worker handle {user.worker_handle}" if user.worker_handle else ""
    state = ", disabled" if user.disabled_at else ""
    return f"{user.username!r} (id {user.id}, role {user.role}{scopes}{handle}{state})"


def run(args: argparse.Namespace) -> int:
    import asyncio

    settings = load(AccessCliSettings)
    command = args.command
    try:
        queues = _checked_grant(args, settings)
    except GrantError as exc:
        print(f"plaza {command}: {exc}", file=sys.stderr)
        return 2
    if (missing := no_data_here(settings, command)) is not None:
        # A stray database here would take the key or user, and the running Plaza never see it.
        print(missing, file=sys.stderr)
        return 2
    url, server = database_of(settings)

    async def go() -> int:
        await upgrade(url)
        engine = create_engine(url, pool_size=1)
        try:
            sessions = session_factory(engine)
            if command == "keys" and args.action == "first-admin":
                print((await first_admin_key(sessions, settings.home)).format(port=settings.port))
                return 0
            if command == "keys":
                return await _run_keys(args, sessions, queues)
            return await _run_users(args, sessions, queues)
        finally:
            await engine.dispose()

    with server:
        try:
            return asyncio.run(go())
        except GrantError as exc:
            print(f"plaza {command}: {exc}", file=sys.stderr)
            return 2
        except AccessConflict as exc:
            print(f"plaza {command}: {exc}", file=sys.stderr)
            return 1
        except IntegrityError:  # made at the same moment by someone else
            name = getattr(args, "name", None) or getattr(args, "username", "")
            print(f"plaza {command}: {name!r} exists already", file=sys.stderr)
            return 1


def _save_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")


async def first_admin_key(
    sessions: async_sessionmaker[AsyncSession],
    home: Path,
    queue: str = "06",
    *,
    show_key: bool = True,
) -> str:
    """On a first start (no keys, no users), an admin key, kept in PLAZA_HOME/admin_key.
    Returns how to use it (with {port} to fill in) on the queue of district `queue`: one the
    city has (embedded mode names its city's first; Barcelona's Gràcia otherwise). Without
    `show_key` the key itself is left out: output that goes to a log (a systemd service's
    journal, a file) would keep an admin's key for anyone who reads the logs."""
    path = home / ADMIN_KEY_FILE
    async with sessions.begin() as session:
        keys = (await session.execute(select(func.count()).select_from(ApiKey))).scalar_one()
        users = (await session.execute(select(func.count()).select_from(StaffUser))).scalar_one()
        created = ""
        if keys == 0 and users == 0:
            _, key = await create_api_key(session, name="embedded-admin", role=Role.ADMIN)
            _save_private(path, key)
            created = (
                f"First start: an admin API key was made and saved in {path}:\n  {key}\n"
                if show_key
                else f"First start: an admin API key was made and saved in {path} (not shown "
                "here: this output is no terminal, and a log would keep it)\n"
            )
    if not path.is_file():
        return "API keys: plaza keys create --name NAME --role ROLE (see README, Access control)"
    return (
        created
        + f'Use it (every role\'s endpoints): curl -H "Authorization: Bearer $(cat {path})" '
        f"http://127.0.0.1:{{port}}/api/v1/districts/{queue}/queue"
    )
