"""Who may use the API: roles, API keys (stored as SHA-256), staff passwords (scrypt), JWT bearer
tokens, and the dependencies that turn a request's credentials into a Principal.

Credentials: `Authorization: Bearer <token or key>` or `X-API-Key: <key>`; Open311 clients may
also send `api_key` as a parameter, as the GeoReport v2 spec says. Keys start with `plz_`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from plaza.city import City
from plaza.db.models import ApiKey, ServiceRequest, StaffUser
from plaza.policy import RoutingTable
from plaza.requests import CITY_HALL_QUEUE, TRIAGE_QUEUE, worker_handle
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

KEY_PREFIX = "plz_"
EVENTS_SUFFIX = "/queue/events"  # the live updates' paths: the only ones taking ?access_token=
JWT_ALGORITHM = "HS256"
JWT_ISSUER = "plaza"
MIN_SECRET_LENGTH = 32
_WEAK_SECRETS = frozenset({"secret", "changeme", "change-me", "changethis", "password", "plaza"})
PASSWORD_LENGTH = (10, 256)  # the shortest and longest password a user may have

log = logging.getLogger(__name__)


class Role(StrEnum):
    """What a key or a user may do (README: "Access control")."""

    CIVIC_DEVELOPER = "civic_developer"  # public reads, Open311 POST requests
    BRIDGE = "bridge"  # POST /api/v1/posts: a social network bridge or a webhook
    WORKER = "worker"  # the requests assigned to them: start, resolve, notes
    MANAGER = "manager"  # the queues in their scopes (district codes, triage, city queues)
    CITY_HALL = "city_hall"  # every queue, the city-hall queue, SLA configuration
    ADMIN = "admin"  # everything city hall may, plus users and keys


STAFF: frozenset[Role] = frozenset({Role.WORKER, Role.MANAGER, Role.CITY_HALL, Role.ADMIN})
EVERY_QUEUE: frozenset[Role] = frozenset({Role.CITY_HALL, Role.ADMIN})
OPEN311_WRITERS: frozenset[Role] = frozenset({Role.CIVIC_DEVELOPER, Role.CITY_HALL, Role.ADMIN})
POST_WRITERS: frozenset[Role] = frozenset({Role.BRIDGE, Role.ADMIN})


# Apps (civic_developer) and bridges call with an API key; only staff log in as users.
USER_ROLES: frozenset[Role] = STAFF


class GrantError(ValueError):
    """A role with the wrong scopes: a manager without queues, a worker without a handle;
    `field` names the field of a key or user at fault (scopes, worker_handle, role, password)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class AccessConflict(Exception):
    """A name or a worker handle that another user or key holds (a 409), saying what to do
    instead."""


def manager_queues(city: City, routing: RoutingTable) -> dict[str, str | None]:
    """The queues a manager's scopes may name, each with its district's name (None for triage
    and the routing table's city-wide queues). Never the city-hall queue: city hall's alone."""
    return {
        **{code: district.name for code, district in city.districts.items()},
        TRIAGE_QUEUE: None,
        **dict.fromkeys(sorted(routing.queues)),
    }


def stored_handle(handle: str | None) -> str | None:
    """A worker's handle as managers' assignments store it ("jordi" is "@jordi"), so that the
    worker's key finds what is assigned to them; GrantError for what is no handle."""
    if handle is None:
        return None
    try:
        return worker_handle(handle)
    except ValueError as exc:
        raise GrantError(f"worker handle {exc}", "worker_handle") from None


def check_grant(
    role: Role,
    scopes: Iterable[str],
    worker_handle: str | None,
    queues: Mapping[str, str | None] | None = None,
) -> list[str]:
    """The scopes as they are stored (sorted, once each), or GrantError saying what is wrong.
    With `queues` (manager_queues), each scope must be one of them; a number that is one
    district's code but for its leading zeros is read as that code ("6" as "06")."""
    scopes = list(scopes)
    if role is Role.MANAGER and not scopes:
        allowed = _listing(queues) if queues else "a district code, triage, ..."
        raise GrantError(f"a manager needs at least one scope, one of: {allowed}", "scopes")
    if role is Role.BRIDGE:
        return _platforms(scopes)
    if role is not Role.MANAGER and scopes:
        raise GrantError(
            f"only managers (queues) and bridges (platforms) have scopes; a {role} sees "
            f"{_what(role)}",
            "scopes",
        )
    if role is Role.WORKER and not worker_handle:
        raise GrantError(
            "a worker needs a worker handle (as managers assign it, e.g. @jordi)", "worker_handle"
        )
    if role is not Role.WORKER and worker_handle:
        raise GrantError("only workers have a worker handle", "worker_handle")
    stored_handle(worker_handle)
    if queues is None:
        return sorted(set(scopes))
    found = {scope: _queue_of(scope, queues) for scope in scopes}
    unknown = [scope for scope, queue in found.items() if queue is None]
    if CITY_HALL_QUEUE in unknown:
        raise GrantError(
            f"scope {CITY_HALL_QUEUE!r}: the escalated requests are city hall's (role "
            f"{Role.CITY_HALL}); a manager's scopes are: {_listing(queues)}",
            "scopes",
        )
    if unknown:
        named = ", ".join(repr(scope) for scope in unknown)
        what = (
            f"scope {named} is not a queue"
            if len(unknown) == 1
            else f"scopes {named} are not queues"
        )
        raise GrantError(
            f"{what} of the city; a manager's scopes are: {_listing(queues)}", "scopes"
        )
    return sorted({queue for queue in found.values() if queue is not None})


_PLATFORM = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # as a post's platform (ingest's PostIn)


def _platforms(scopes: Iterable[str]) -> list[str]:
    """A bridge's scopes: the platforms it may post for (none: any)."""
    found = sorted(set(scopes))
    wrong = [s for s in found if not _PLATFORM.fullmatch(s) or s == "open311"]
    if wrong:
        raise GrantError(
            f"a bridge's scopes are the platforms it posts for (mastodon, bluesky, x, ...; "
            f"open311 is Open311's own), not {', '.join(map(repr, wrong))}",
            "scopes",
        )
    return found


def check_user_role(role: Role) -> None:
    """GrantError for the roles that are API keys' alone."""
    if role not in USER_ROLES:
        allowed = ", ".join(r for r in Role if r in USER_ROLES)
        raise GrantError(
            f"role {role} is for API keys (apps and bridges), not users; a user is one of: "
            f"{allowed}",
            "role",
        )


def _queue_of(scope: str, queues: Mapping[str, str | None]) -> str | None:
    if scope in queues:
        return scope
    if scope.isascii() and scope.isdigit():
        same = [q for q in queues if q.isascii() and q.isdigit() and int(q) == int(scope)]
        if len(same) == 1:
            return same[0]
    return None


def _listing(queues: Mapping[str, str | None]) -> str:
    return ", ".join(f"{code} ({name})" if name else code for code, name in queues.items())


def _what(role: Role) -> str:
    return "every queue" if role in EVERY_QUEUE else "no queue"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key, a logged-in user, or nobody."""

    kind: Literal["key", "user", "anonymous"]
    id: int
    name: str
    role: Role | None
    scopes: frozenset[str] = frozenset()
    worker_handle: str | None = None

    @property
    def actor(self) -> str:
        """How the audit trail names them."""
        return f"{self.kind}:{self.name}"

    @property
    def sees_every_queue(self) -> bool:
        return self.role in EVERY_QUEUE

    def manages_queue(self, queue: str) -> bool:
        if self.sees_every_queue:
            return True
        return self.role is Role.MANAGER and queue != CITY_HALL_QUEUE and queue in self.scopes

    def manages(self, request: ServiceRequest) -> bool:
        """May act as a manager on it: its queue or its district is theirs. In triage, its
        district is only the classifier's unsure guess (a person decides): the queue alone
        counts."""
        if self.sees_every_queue:
            return True
        return self.role is Role.MANAGER and (
            request.queue in self.scopes
            or (request.queue != TRIAGE_QUEUE and (request.district_code or "") in self.scopes)
        )

    def works_on(self, request: ServiceRequest) -> bool:
        return (
            self.role is Role.WORKER
            and self.worker_handle is not None
            and request.assigned_worker == self.worker_handle
        )

    def may_read(self, request: ServiceRequest) -> bool:
        return self.manages(request) or self.works_on(request)


ANONYMOUS = Principal(kind="anonymous", id=0, name="anonymous", role=None)


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """Keys are 256 random bits, so a plain SHA-256 is enough (and lets us look them up)."""
    return hashlib.sha256(key.encode()).hexdigest()


# OWASP's Password Storage Cheat Sheet: scrypt with N=2^14, r=8, p=5 is as costly to guess as
# N=2^17, p=1, in 16 MiB instead of 128 (a login's hash stays out of the gateway's memory
# budget): about 150 ms of CPU a login, in a thread. A password hashed with other parameters
# (p=1 before) is hashed again with these at its user's next login.
_SCRYPT = {"n": 2**14, "r": 8, "p": 5}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def hashed_as_now(stored: str) -> bool:
    """Whether a stored password hash has the parameters hash_password uses now."""
    return stored.split("$")[1:4] == [str(_SCRYPT[k]) for k in ("n", "r", "p")]


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            dklen=32,
            n=int(n),
            r=int(r),
            p=int(p),
        )
    except ValueError:
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


def check_jwt_secret(secret: str | None, variable: str = "PLAZA_JWT_SECRET") -> str:
    """The secret, or ValueError naming the variable: missing, short or a well-known word."""
    if not secret:
        raise ValueError(
            f"{variable} is not set; make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    if (
        len(secret) < MIN_SECRET_LENGTH
        or secret.lower() in _WEAK_SECRETS
        or len(set(secret)) < 10  # "aaaa…", "abababab…"
    ):
        raise ValueError(
            f"{variable} is too weak: use at least {MIN_SECRET_LENGTH} random characters, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    return secret


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """How the gateway signs and checks bearer tokens. Without a secret (tests) a random one is
    made: tokens then live as long as the process."""

    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    token_ttl: timedelta = timedelta(hours=1)
    key_cache_seconds: float = 30.0


class InvalidCredentials(Exception):
    pass


class Authenticator:
    """Checks keys and tokens (each with a short cache, so the hot paths do no extra query and
    no extra decoding) and issues tokens. A revoked key stops working within
    `key_cache_seconds` (at once on the gateway that revoked it); a token is never taken past
    its expiry."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        config: AuthConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self.config = config
        self._clock = clock
        self._keys: dict[str, tuple[float, Principal | None]] = {}
        self._tokens: dict[str, tuple[float, Principal, int]] = {}  # -> (until, claims, gen)
        # user id -> (until, (the user as they are now, their token generation) or None if
        # disabled or gone)
        self._users: dict[int, tuple[float, tuple[Principal, int] | None]] = {}

    def issue_token(self, user: StaffUser, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        claims = {
            "iss": JWT_ISSUER,
            "sub": str(user.id),
            "name": user.username,
            "role": user.role,
            "scopes": list(user.scopes),
            "worker": user.worker_handle,
            "gen": user.token_generation or 0,
            "iat": now,
            "exp": now + self.config.token_ttl,
        }
        return jwt.encode(claims, self.config.jwt_secret, algorithm=JWT_ALGORITHM)

    def verify_token(self, token: str) -> Principal:
        """The user as the token names them (their grant as it was when it was issued)."""
        return self._claims(token)[0]

    def _claims(self, token: str) -> tuple[Principal, int]:
        """(the user as the token names them, the token generation it was issued in). A token
        checked once is remembered for `key_cache_seconds`, never past its expiry (a refused
        one is never remembered): a page of requests decodes it once."""
        now = self._clock()
        cached = self._tokens.get(token)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        try:
            claims = jwt.decode(
                token,
                self.config.jwt_secret,
                algorithms=[JWT_ALGORITHM],
                issuer=JWT_ISSUER,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
            principal = Principal(
                kind="user",
                id=int(claims["sub"]),
                name=str(claims["name"]),
                role=Role(claims["role"]),
                scopes=frozenset(claims.get("scopes") or ()),
                worker_handle=claims.get("worker"),
            )
            generation = int(claims.get("gen", 0))  # tokens made before generations: 0
            lifetime = float(claims["exp"]) - time.time()
        except (jwt.InvalidTokenError, KeyError, ValueError, TypeError) as exc:
            raise InvalidCredentials(f"invalid bearer token: {exc}") from None
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        until = now + min(self.config.key_cache_seconds, lifetime)
        self._tokens[token] = (until, principal, generation)
        return principal, generation

    async def verify_key(self, key: str) -> Principal:
        digest = hash_api_key(key)
        now = self._clock()
        cached = self._keys.get(digest)
        if cached is None or cached[0] < now:
            async with self._sessions() as session:
                row = (
                    await session.execute(
                        select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
                    )
                ).scalar_one_or_none()
            principal = None if row is None else key_principal(row)
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[digest] = (now + self.config.key_cache_seconds, principal)
            cached = self._keys[digest]
        if cached[1] is None:
            raise InvalidCredentials("unknown or revoked API key")
        return cached[1]

    def forget_keys(self) -> None:
        self._keys.clear()
        self._users.clear()

    async def _current(self, claimed: Principal, generation: int) -> Principal:
        """The token's user as they are now, not as the token says. Within `key_cache_seconds`
        (at once on the gateway that made the change), as a revoked key: a disabled user's
        tokens stop working; so do those issued before a password reset or a disable (an older
        generation: a re-enabled user's old tokens stay dead); a new role, scopes or worker
        handle apply to the tokens already issued, with no new login. One query per user that
        often."""
        now = self._clock()
        cached = self._users.get(claimed.id)
        if cached is None or cached[0] < now:
            async with self._sessions() as session:
                row = await session.get(StaffUser, claimed.id)
            if len(self._users) > 10_000:
                self._users.clear()
            cached = self._users[claimed.id] = (
                now + self.config.key_cache_seconds,
                None
                if row is None or row.disabled_at is not None
                else (user_principal(row), row.token_generation),
            )
        if cached[1] is None:
            raise InvalidCredentials(f"user {claimed.name!r} is disabled")
        principal, current = cached[1]
        if generation != current:
            raise InvalidCredentials(
                f"this token of user {claimed.name!r} was issued before their password was "
                "reset or they were disabled: log in again"
            )
        return principal

    async def login(self, session: AsyncSession, username: str, password: str) -> StaffUser:
        user = (
            await session.execute(select(StaffUser).where(StaffUser.username == username))
        ).scalar_one_or_none()
        # Hash even for an unknown user, so the answer's timing tells nothing; in a thread, as
        # scrypt takes ~30 ms of CPU that would otherwise stall every other request.
        ok = await asyncio.to_thread(
            verify_password, password, user.password_hash if user else _DUMMY_HASH
        )
        if user is None or not ok or user.disabled_at is not None:
            raise InvalidCredentials("wrong username or password")
        if not hashed_as_now(user.password_hash):
            user.password_hash = await asyncio.to_thread(hash_password, password)
            await session.commit()
            log.info("access: user %r's password hashed again with today's parameters", username)
        return user

    async def principal(self, credential: str | None) -> Principal:
        if not credential:
            return ANONYMOUS
        if credential.startswith(KEY_PREFIX):
            return await self.verify_key(credential)
        if credential.count(".") != 2:
            # pyjwt's own words ("Not enough segments") told a newcomer nothing
            raise InvalidCredentials(_not_a_credential(credential))
        return await self._current(*self._claims(credential))


def _not_a_credential(credential: str) -> str:
    """Why a bearer that is neither a key nor a token was refused, without repeating it. The
    usual one: the whole header put in again (`curl -H "Authorization: Bearer $KEY"` with $KEY
    holding `Authorization: Bearer plz_…` already)."""
    if credential.lower().startswith(("authorization:", "bearer ")):
        return (
            "invalid bearer token: it starts with 'Authorization:' or 'Bearer' again, so the "
            "header was written twice; send 'Authorization: Bearer plz_…' once"
        )
    return (
        "invalid bearer token: neither an API key (plz_…) nor a token of "
        "POST /api/v1/auth/token (three parts separated by dots)"
    )


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def key_principal(row: ApiKey) -> Principal:
    return Principal(
        kind="key",
        id=row.id,
        name=row.name,
        role=Role(row.role),
        scopes=frozenset(row.scopes or ()),
        worker_handle=row.worker_handle,
    )


def user_principal(row: StaffUser) -> Principal:
    return Principal(
        kind="user",
        id=row.id,
        name=row.username,
        role=Role(row.role),
        scopes=frozenset(row.scopes or ()),
        worker_handle=row.worker_handle,
    )


def record_admin_change(actor: str, did: str, whom: str, fields: Iterable[str] = ()) -> None:
    """One log line for each change to users and keys (Plaza keeps no table of them): who,
    what, to whom, and which fields; never a password or a key."""
    listed = ", ".join(fields)
    log.info("access: %s %s %s%s", actor, did, whom, f" ({listed})" if listed else "")


async def create_api_key(
    session: AsyncSession,
    *,
    name: str,
    role: Role,
    scopes: Iterable[str] = (),
    worker_handle: str | None = None,
    queues: Mapping[str, str | None] | None = None,
) -> tuple[ApiKey, str]:
    """A new key (row, key). The caller commits; the key is shown once and never stored.
    With `queues` (manager_queues), a manager's scopes are checked against them; a name that
    another key has, or had, is an AccessConflict."""
    scopes = check_grant(role, scopes, worker_handle, queues)
    worker_handle = stored_handle(worker_handle)
    await _check_key_name_free(session, name)
    key = new_api_key()
    row = ApiKey(
        name=name,
        key_hash=hash_api_key(key),
        prefix=key[: len(KEY_PREFIX) + 6],
        role=role.value,
        scopes=scopes,
        worker_handle=worker_handle,
    )
    session.add(row)
    await session.flush()
    return row, key


async def create_user(
    session: AsyncSession,
    *,
    username: str,
    password: str,
    role: Role,
    scopes: Iterable[str] = (),
    worker_handle: str | None = None,
    queues: Mapping[str, str | None] | None = None,
) -> StaffUser:
    """A new staff user (never one of the keys' roles). The caller commits. With `queues`
    (manager_queues), a manager's scopes are checked against them. A name that another user has
    (even a disabled one) or a worker handle that another user holds is an AccessConflict."""
    scopes, worker_handle = _user_grant(role, scopes, worker_handle, queues)
    password_hash = _password_hash(password)
    await _check_username_free(session, username)
    await _check_handle_free(session, worker_handle, None)
    user = StaffUser(
        username=username,
        password_hash=password_hash,
        role=role.value,
        scopes=scopes,
        worker_handle=worker_handle,
    )
    session.add(user)
    await session.flush()
    return user


@dataclass(frozen=True, slots=True)
class UserChanges:
    """What an admin changes in a user; None leaves a field as it is. A new role comes with a
    new grant: scopes and worker handle are then those given here (none if not given), as the
    old role's never fit another (a manager's queues, a worker's handle)."""

    role: Role | None = None
    scopes: list[str] | None = None
    worker_handle: str | None = None
    disabled: bool | None = None
    password: str | None = None


async def update_user(
    session: AsyncSession,
    user: StaffUser,
    changes: UserChanges,
    queues: Mapping[str, str | None] | None = None,
) -> list[str]:
    """Changes `user` as an admin asked, checked as create_user checks a new user (a grant
    only when it changes, so that a user whose queue the city no longer has can still be
    disabled). Returns the fields that changed. The caller commits, then tells its
    Authenticator (forget_keys). A password reset or a disable moves the user's token
    generation on: the tokens issued before stop working, and a re-enabled user logs in
    again."""
    grant_changes = (changes.role, changes.scopes, changes.worker_handle)
    role, scopes, handle = Role(user.role), list(user.scopes), user.worker_handle
    if any(change is not None for change in grant_changes):
        if changes.role is not None and changes.role != role:
            role, scopes, handle = changes.role, [], None
        scopes = changes.scopes if changes.scopes is not None else scopes
        handle = changes.worker_handle if changes.worker_handle is not None else handle
        scopes, handle = _user_grant(role, scopes, handle, queues)
    password_hash = None if changes.password is None else _password_hash(changes.password)
    disable = changes.disabled is True and user.disabled_at is None
    enable = changes.disabled is False and user.disabled_at is not None
    if handle is not None and (handle != user.worker_handle or enable):
        await _check_handle_free(session, handle, user.id)
    was_admin = user.role == Role.ADMIN.value and user.disabled_at is None
    if was_admin and (role is not Role.ADMIN or disable):
        await check_an_admin_remains(session, f"user {user.username!r}", user_id=user.id)

    changed = [
        name
        for name, now, before in (
            ("role", role.value, user.role),
            ("scopes", scopes, list(user.scopes)),
            ("worker_handle", handle, user.worker_handle),
        )
        if now != before
    ]
    user.role, user.scopes, user.worker_handle = role.value, scopes, handle
    if password_hash is not None:
        user.password_hash = password_hash
        changed.append("password")
    if disable:
        user.disabled_at = datetime.now(UTC)
        changed.append("disabled")
    if enable:
        user.disabled_at = None
        changed.append("enabled")
    if password_hash is not None or disable:
        user.token_generation += 1
    await session.flush()
    return changed


async def check_an_admin_remains(
    session: AsyncSession, who: str, *, user_id: int | None = None, key_id: int | None = None
) -> None:
    """AccessConflict if, without this user or key, no admin could manage users and keys: no
    enabled admin user and no admin key not revoked. Serialised, so that two admins disabling
    each other at once do not both succeed."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('plaza:admins'))"))
    users = select(StaffUser.id).where(
        StaffUser.role == Role.ADMIN.value, StaffUser.disabled_at.is_(None)
    )
    keys = select(ApiKey.id).where(ApiKey.role == Role.ADMIN.value, ApiKey.revoked_at.is_(None))
    if user_id is not None:
        users = users.where(StaffUser.id != user_id)
    if key_id is not None:
        keys = keys.where(ApiKey.id != key_id)
    if not (await session.execute(select(users.exists() | keys.exists()))).scalar_one():
        raise AccessConflict(
            f"{who} is the last admin: without it nobody could manage users and keys; make "
            "another admin first (a user with role admin, or `plaza keys create --role admin`)"
        )


def _user_grant(
    role: Role,
    scopes: Iterable[str],
    worker_handle: str | None,
    queues: Mapping[str, str | None] | None,
) -> tuple[list[str], str | None]:
    """A user's grant as it is stored (scopes, worker handle), or GrantError: a new user's and
    a changed one's alike."""
    check_user_role(role)
    return check_grant(role, scopes, worker_handle, queues), stored_handle(worker_handle)


def _password_hash(password: str) -> str:
    """A new or reset password's hash, or GrantError for one too short or too long."""
    shortest, longest = PASSWORD_LENGTH
    if len(password) < shortest:
        raise GrantError(f"a password needs at least {shortest} characters", "password")
    if len(password) > longest:
        raise GrantError(f"a password has at most {longest} characters", "password")
    return hash_password(password)


async def _check_username_free(session: AsyncSession, username: str) -> None:
    """AccessConflict for a name another user has. A disabled user keeps theirs, as the audit
    trail names users by it (user:maria): they are re-enabled, not made again."""
    found = (
        await session.execute(select(StaffUser).where(StaffUser.username == username))
    ).scalar_one_or_none()
    if found is None:
        return
    if found.disabled_at is not None:
        raise AccessConflict(
            f"user {username!r} exists (id {found.id}) and is disabled: re-enable them rather "
            f"than make them again (PATCH /api/v1/admin/users/{found.id} with "
            f'{{"disabled": false}}, and a "password" if they need a new one; or plaza users '
            f"update {username} --enable --reset-password)"
        )
    raise AccessConflict(
        f"user {username!r} exists (id {found.id}): change them with PATCH "
        f"/api/v1/admin/users/{found.id} (or plaza users update {username})"
    )


async def _check_key_name_free(session: AsyncSession, name: str) -> None:
    """AccessConflict for a name another key has or had: a name stays with its key, as the
    audit trail names keys by it (key:bcn-app), and a key's grant never changes."""
    found = (await session.execute(select(ApiKey).where(ApiKey.name == name))).scalar_one_or_none()
    if found is None:
        return
    if found.revoked_at is not None:
        raise AccessConflict(
            f"a key named {name!r} existed (id {found.id}, revoked): a name stays with its key, "
            f"as the audit trail names keys by it (key:{name}); choose another name"
        )
    raise AccessConflict(
        f"a key named {name!r} exists (id {found.id}); a key's grant never changes: for "
        f"another, make a key with another name and revoke this one (DELETE "
        f"/api/v1/admin/keys/{found.id}, or plaza keys revoke {found.id})"
    )


async def _check_handle_free(
    session: AsyncSession, handle: str | None, user_id: int | None
) -> None:
    """AccessConflict if a user other than `user_id` holds the worker handle: two users with one
    handle would each see, start and resolve the other's assignments (and in any case, as the
    platforms compare handles, @Jordi is @jordi). A disabled user keeps
    theirs: what is still assigned to it is theirs, and they may be re-enabled; handing it to
    someone else is an admin's explicit act (give the disabled user another handle first).
    API keys may carry a user's handle (that worker's tablet). A lock on the handle, held until
    the caller commits, keeps two admins from giving it away at once."""
    if handle is None:
        return
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
        {"k": f"worker-handle:{handle.lower()}"},
    )
    holder = (
        (
            await session.execute(
                select(StaffUser)
                .where(
                    func.lower(StaffUser.worker_handle) == handle.lower(),
                    StaffUser.id != (user_id or 0),
                )
                .order_by(StaffUser.id)
            )
        )
        .scalars()
        .first()
    )
    if holder is None:
        return
    patch = f"PATCH /api/v1/admin/users/{holder.id}"
    named = repr(handle)
    if holder.worker_handle != handle:
        named += f" ({holder.worker_handle!r}: platforms ignore case)"
    if holder.disabled_at is None:
        raise AccessConflict(
            f"worker handle {named} is user {holder.username!r}'s (id {holder.id}): two "
            f"users with one handle would see each other's assignments; give {holder.username!r} "
            f'another handle first ({patch} with {{"worker_handle": "@..."}}), or choose another'
        )
    raise AccessConflict(
        f"worker handle {named} is user {holder.username!r}'s (id {holder.id}, disabled), who "
        f"keeps it for what is still assigned to it: if this is them, re-enable them ({patch} "
        f'with {{"disabled": false}}, or plaza users update {holder.username} --enable); if not, '
        f'give them another handle first ({patch} with {{"worker_handle": "@..."}}), or choose '
        "another"
    )


# The security schemes the OpenAPI docs show (their "Authorize" button); both optional here,
# the routes decide who they need.
bearer_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    auto_error=False,
    description="A staff user's token from POST /api/v1/auth/token, or an API key (plz_…)",
)
key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (plz_…)")


def authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


async def current_principal(
    request: Request,
    bearer: Annotated[str | None, Depends(bearer_scheme)],
    header_key: Annotated[str | None, Depends(key_scheme)],
) -> Principal:
    """The caller (ANONYMOUS without credentials), after the rate limit of their key or address.
    Wrong credentials are a 401, never a silent downgrade to anonymous."""
    from plaza_api.limits import enforce_rate_limit

    query = request.query_params
    in_query = query.get("api_key") or query.get("access_token")
    if in_query and not request.url.path.endswith(EVENTS_SUFFIX):
        # A URL is logged by proxies and kept in browsers' history: a key rides in one only
        # where nothing else can carry it, a browser's EventSource, which sends no headers.
        raise HTTPException(
            401,
            "credentials in the query string (api_key, access_token) are only for live updates "
            "(.../queue/events, which a browser's EventSource opens without headers); send "
            "them as 'Authorization: Bearer …'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    credential = bearer or header_key or in_query
    if not credential and "authorization" in request.headers:
        raise HTTPException(
            401,
            f"Authorization must be 'Bearer <key or token>'; it had "
            f"{_scheme_of(request.headers['authorization'])}",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        principal = await authenticator(request).principal(credential)
    except InvalidCredentials as exc:
        # guessing keys or tokens costs the address its budget, as guessing passwords does
        enforce_rate_limit(request, ANONYMOUS)
        detail = str(exc)
        if not bearer and header_key and not header_key.startswith(KEY_PREFIX):
            # told "invalid bearer token" when no bearer was sent, a newcomer looked there
            detail = (
                f"X-API-Key is not an API key: a Plaza API key starts with {KEY_PREFIX!r} (a "
                "token of POST /api/v1/auth/token goes in 'Authorization: Bearer …')"
            )
        raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"}) from None
    enforce_rate_limit(request, principal)
    return principal


def _scheme_of(authorization: str) -> str:
    """What an Authorization header that is not Bearer had, without repeating the credential."""
    scheme, _, credential = authorization.strip().partition(" ")
    if not scheme:
        return "nothing"
    if not credential.strip():
        return "no credential" if scheme.lower() == "bearer" else "no scheme (a bare key or token)"
    return f"the scheme {scheme[:20]!r}"


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the caller, who must hold one of `roles` (401 without credentials, 403 with
    the wrong role)."""
    allowed = frozenset(roles)

    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role is None:
            raise HTTPException(
                401,
                "this needs credentials: an API key or a bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if principal.role not in allowed:
            names = ", ".join(sorted(allowed))
            raise HTTPException(403, f"a {principal.role} may not do this; it needs: {names}")
        return principal

    return check


StaffPrincipal = Annotated[Principal, Depends(require(*STAFF))]
AdminPrincipal = Annotated[Principal, Depends(require(Role.ADMIN))]
