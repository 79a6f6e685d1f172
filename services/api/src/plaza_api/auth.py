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
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

KEY_PREFIX = "plz_"
EVENTS_SUFFIX = "/queue/events"  # the live updates' paths: the only ones taking ?access_token=
JWT_ALGORITHM = "HS256"
JWT_ISSUER = "plaza"
MIN_SECRET_LENGTH = 32
_WEAK_SECRETS = frozenset({"secret", "changeme", "change-me", "changethis", "password", "plaza"})


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
    """A role with the wrong scopes: a manager without queues, a worker without a handle."""


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
        raise GrantError(f"worker handle {exc}") from None


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
        raise GrantError(f"a manager needs at least one scope, one of: {allowed}")
    if role is Role.BRIDGE:
        return _platforms(scopes)
    if role is not Role.MANAGER and scopes:
        raise GrantError(
            f"only managers (queues) and bridges (platforms) have scopes; a {role} sees "
            f"{_what(role)}"
        )
    if role is Role.WORKER and not worker_handle:
        raise GrantError("a worker needs a worker handle (as managers assign it, e.g. @jordi)")
    if role is not Role.WORKER and worker_handle:
        raise GrantError("only workers have a worker handle")
    stored_handle(worker_handle)
    if queues is None:
        return sorted(set(scopes))
    found = {scope: _queue_of(scope, queues) for scope in scopes}
    unknown = [scope for scope, queue in found.items() if queue is None]
    if CITY_HALL_QUEUE in unknown:
        raise GrantError(
            f"scope {CITY_HALL_QUEUE!r}: the escalated requests are city hall's (role "
            f"{Role.CITY_HALL}); a manager's scopes are: {_listing(queues)}"
        )
    if unknown:
        named = ", ".join(repr(scope) for scope in unknown)
        what = (
            f"scope {named} is not a queue"
            if len(unknown) == 1
            else f"scopes {named} are not queues"
        )
        raise GrantError(f"{what} of the city; a manager's scopes are: {_listing(queues)}")
    return sorted({queue for queue in found.values() if queue is not None})


_PLATFORM = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # as a post's platform (ingest's PostIn)


def _platforms(scopes: Iterable[str]) -> list[str]:
    """A bridge's scopes: the platforms it may post for (none: any)."""
    found = sorted(set(scopes))
    wrong = [s for s in found if not _PLATFORM.fullmatch(s) or s == "open311"]
    if wrong:
        raise GrantError(
            f"a bridge's scopes are the platforms it posts for (mastodon, bluesky, x, ...; "
            f"open311 is Open311's own), not {', '.join(map(repr, wrong))}"
        )
    return found


def check_user_role(role: Role) -> None:
    """GrantError for the roles that are API keys' alone."""
    if role not in USER_ROLES:
        allowed = ", ".join(r for r in Role if r in USER_ROLES)
        raise GrantError(
            f"role {role} is for API keys (apps and bridges), not users; a user is one of: "
            f"{allowed}"
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


_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


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
        self._tokens: dict[str, tuple[float, Principal]] = {}
        self._users: dict[int, tuple[float, bool]] = {}  # user id -> (until, still enabled)

    def issue_token(self, user: StaffUser, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        claims = {
            "iss": JWT_ISSUER,
            "sub": str(user.id),
            "name": user.username,
            "role": user.role,
            "scopes": list(user.scopes),
            "worker": user.worker_handle,
            "iat": now,
            "exp": now + self.config.token_ttl,
        }
        return jwt.encode(claims, self.config.jwt_secret, algorithm=JWT_ALGORITHM)

    def verify_token(self, token: str) -> Principal:
        """A token checked once is remembered for `key_cache_seconds`, never past its expiry
        (a refused one is never remembered): a page of requests decodes it once."""
        now = self._clock()
        cached = self._tokens.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
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
            lifetime = float(claims["exp"]) - time.time()
        except (jwt.InvalidTokenError, KeyError, ValueError) as exc:
            raise InvalidCredentials(f"invalid bearer token: {exc}") from None
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[token] = (now + min(self.config.key_cache_seconds, lifetime), principal)
        return principal

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

    async def _check_enabled(self, principal: Principal) -> None:
        """A disabled user's tokens stop working within `key_cache_seconds`, as a revoked key
        does (a token is otherwise good until it expires): one query per user that often."""
        now = self._clock()
        cached = self._users.get(principal.id)
        if cached is None or cached[0] < now:
            async with self._sessions() as session:
                row = (
                    await session.execute(
                        select(StaffUser.disabled_at).where(StaffUser.id == principal.id)
                    )
                ).first()
            if len(self._users) > 10_000:
                self._users.clear()
            cached = self._users[principal.id] = (
                now + self.config.key_cache_seconds,
                row is not None and row[0] is None,
            )
        if not cached[1]:
            raise InvalidCredentials(f"user {principal.name!r} is disabled")

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
        return user

    async def principal(self, credential: str | None) -> Principal:
        if not credential:
            return ANONYMOUS
        if credential.startswith(KEY_PREFIX):
            return await self.verify_key(credential)
        principal = self.verify_token(credential)
        await self._check_enabled(principal)
        return principal


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
    With `queues` (manager_queues), a manager's scopes are checked against them."""
    scopes = check_grant(role, scopes, worker_handle, queues)
    worker_handle = stored_handle(worker_handle)
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
    (manager_queues), a manager's scopes are checked against them."""
    check_user_role(role)
    scopes = check_grant(role, scopes, worker_handle, queues)
    worker_handle = stored_handle(worker_handle)
    if len(password) < 10:
        raise GrantError("a password needs at least 10 characters")
    user = StaffUser(
        username=username,
        password_hash=hash_password(password),
        role=role.value,
        scopes=scopes,
        worker_handle=worker_handle,
    )
    session.add(user)
    await session.flush()
    return user


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
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
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
