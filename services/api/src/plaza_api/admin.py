"""Access management over HTTP: staff log in for bearer tokens (OAuth2 password flow), and admins
create, change, disable and revoke users and API keys; and erase a post at its author's request
to the city (`plaza withdraw` over HTTP)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from plaza.db.models import ApiKey, StaffUser
from plaza.posts import Token
from plaza.requests import ID_MAX
from plaza.web import InvalidField
from plaza.withdrawals import Withdrawal, withdraw
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StringConstraints,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from plaza_api.auth import (
    ANONYMOUS,
    USER_ROLES,
    AccessConflict,
    AdminPrincipal,
    GrantError,
    InvalidCredentials,
    Principal,
    Role,
    UserChanges,
    authenticator,
    check_an_admin_remains,
    create_api_key,
    create_user,
    manager_queues,
    record_admin_change,
    update_user,
)
from plaza_api.deps import CityDep, RoutingDep, SessionDep
from plaza_api.limits import LoginFailures, enforce_login_budget, enforce_rate_limit

# A key's or user's id in a path: a bigint (a larger number is a 422, not a database error).
RowId = Annotated[int, Path(ge=1, le=ID_MAX)]

router = APIRouter(prefix="/api/v1", tags=["Access"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds the token is valid")


class GrantIn(BaseModel):
    role: Role
    scopes: list[str] = Field(
        default_factory=list,
        description="A manager's queues: district codes (6 is read as 06), triage, the city-wide "
        "queues; another is a 422 that lists them. A bridge's: the platforms it posts for "
        "(none: any)",
        examples=[["06"]],
    )
    worker_handle: str | None = Field(
        default=None, max_length=256, description="A worker's handle", examples=[None]
    )


class KeyIn(GrantIn):
    name: str = Field(min_length=1, max_length=128, examples=["bcn-open-data-app"])


class KeyOut(BaseModel):
    id: int
    name: str
    role: str
    scopes: list[str]
    worker_handle: str | None
    prefix: str
    created_at: str | None
    revoked: bool


class NewKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown once, stored only as its hash")


class UserIn(GrantIn):
    role: Role = Field(
        description=f"{', '.join(r for r in Role if r in USER_ROLES)}; "
        f"{' and '.join(r for r in Role if r not in USER_ROLES)} are for API keys only"
    )
    username: str = Field(min_length=1, max_length=64, pattern=r"^[\w.@-]+$", examples=["maria"])
    password: str = Field(min_length=10, max_length=256)


class UserPatch(BaseModel):
    """A JSON merge patch of a user (RFC 7396): the fields given change, the others stay. Each
    is checked as on creation. A field is left out to keep it, never null."""

    # The documented example is one a caller can send as it is (each field's own would be null).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"scopes": ["06", "triage"]}, {"disabled": True}]},
    )

    role: Role | None = Field(
        default=None,
        description="A new role comes with a new grant: scopes and worker_handle are then those "
        "of this patch (none if left out)",
        examples=["manager"],
    )
    scopes: list[str] | None = Field(
        default=None,
        description="A manager's queues, all of them (they replace those the user had)",
        examples=[["06", "triage"]],
    )
    worker_handle: str | None = Field(
        default=None, max_length=256, description="A worker's handle", examples=["@jordi"]
    )
    disabled: StrictBool | None = Field(
        default=None,
        description="true disables the user, false re-enables them (they log in again)",
        examples=[False],
    )
    password: SecretStr | None = Field(
        default=None,
        description="A new password (never shown again): the tokens issued before stop working",
        examples=["una contrasenya nova i llarga"],
    )

    @model_validator(mode="after")
    def _no_nulls(self) -> UserPatch:
        """A field left out stays as it is; null would say the same less clearly, or, for a
        worker's handle, ask for what a role allows only by changing the role."""
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(
                f"{', '.join(nulls)}: null is no value here; leave a field out to keep it "
                "(a worker's handle goes with their role: change the role to drop it)"
            )
        return self

    def changes(self) -> UserChanges:
        return UserChanges(
            role=self.role,
            scopes=self.scopes,
            worker_handle=self.worker_handle,
            disabled=self.disabled,
            password=None if self.password is None else self.password.get_secret_value(),
        )


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    scopes: list[str]
    worker_handle: str | None
    disabled: bool


def _key_out(row: ApiKey) -> KeyOut:
    return KeyOut(
        id=row.id,
        name=row.name,
        role=row.role,
        scopes=list(row.scopes),
        worker_handle=row.worker_handle,
        prefix=row.prefix,
        created_at=row.created_at.isoformat() if row.created_at else None,
        revoked=row.revoked_at is not None,
    )


def _user_out(row: StaffUser) -> UserOut:
    return UserOut(
        id=row.id,
        username=row.username,
        role=row.role,
        scopes=list(row.scopes),
        worker_handle=row.worker_handle,
        disabled=row.disabled_at is not None,
    )


async def _form_encoded(request: Request) -> None:
    """A JSON body is told what the endpoint takes (FastAPI would only say a field is missing)."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        raise HTTPException(
            415,
            "this endpoint takes username and password form-encoded, not JSON: "
            "application/x-www-form-urlencoded, as `curl -d username=… -d password=…` sends them",
        )


@router.post("/auth/token", response_model=TokenOut, dependencies=[Depends(_form_encoded)])
async def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
) -> TokenOut:
    """OAuth2 password flow: a staff user's username and password (form-encoded) for a bearer
    token (a JWT). Send it as `Authorization: Bearer <token>`."""
    enforce_rate_limit(request, ANONYMOUS)  # guessing passwords costs the address its budget
    enforce_login_budget(request, form.username)  # and the user name its own, from anywhere
    auth = authenticator(request)
    try:
        user = await auth.login(session, form.username, form.password)
    except InvalidCredentials as exc:
        failures: LoginFailures = request.app.state.login_failures
        failures.failed(form.username)
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    return TokenOut(
        access_token=auth.issue_token(user),
        expires_in=int(auth.config.token_ttl.total_seconds()),
    )


class ErasureIn(BaseModel):
    """A post its author asked the city to erase, as Plaza has it (a report's platform and
    post_id; an Open311 request's token with platform open311)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    platform: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = Field(
        examples=["open311"]
    )
    post_id: Token = Field(examples=["e5f1c0d2a9b84f6c"])
    location_only: StrictBool = Field(
        default=False, description="Only its point goes (the author removed the location)"
    )


class ErasureOut(BaseModel):
    platform: str
    post_id: str
    location_only: bool
    outcome: Literal["withdrawn", "already", "unknown"] = Field(
        description="withdrawn; already (nothing changed twice); unknown: no report of that id "
        "(remembered, so the post opens nothing if it comes: check the id)"
    )


@router.post("/admin/withdrawals", response_model=ErasureOut, tags=["Privacy"])
async def erase_post(body: ErasureIn, session: SessionDep, admin: AdminPrincipal) -> ErasureOut:
    """A post taken out of Plaza's records at its author's request to the city (GDPR's right
    to erasure), or an Open311 request, which no platform deletes: its words, photos, handle,
    point and an Open311 reporter's contact details go, as when its author deletes it on its
    platform; the request stays. The city vouches for who asked: check first."""
    w = Withdrawal.by_the_city(body.platform, body.post_id, location_only=body.location_only)
    async with session.begin():
        outcome = await withdraw(session, w)
    what = "withdrew the location of" if body.location_only else "withdrew"
    record_admin_change(admin.actor, what, f"post {body.platform}:{body.post_id} ({outcome})")
    return ErasureOut(
        platform=body.platform,
        post_id=body.post_id,
        location_only=body.location_only,
        outcome=outcome.value,
    )


@router.post("/admin/keys", response_model=NewKeyOut, status_code=201)
async def new_key(
    body: KeyIn, session: SessionDep, city: CityDep, routing: RoutingDep, admin: AdminPrincipal
) -> NewKeyOut:
    """A new API key. The answer carries the key once; Plaza keeps only its hash."""
    try:
        async with session.begin():
            row, key = await create_api_key(
                session,
                name=body.name,
                role=body.role,
                scopes=body.scopes,
                worker_handle=body.worker_handle,
                queues=manager_queues(city, routing),
            )
    except GrantError as exc:
        raise InvalidField(exc.field, str(exc)) from None
    except AccessConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except IntegrityError:  # made at the same moment by another admin
        raise HTTPException(409, f"a key named {body.name!r} exists") from None
    record_admin_change(admin.actor, "created key", _key_named(row))
    return NewKeyOut(**_key_out(row).model_dump(), key=key)


@router.get("/admin/keys", response_model=list[KeyOut])
async def list_keys(session: SessionDep, _: AdminPrincipal) -> list[KeyOut]:
    rows = (await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars()
    return [_key_out(r) for r in rows]


@router.delete("/admin/keys/{key_id}", status_code=204)
async def revoke_key(
    key_id: RowId, request: Request, session: SessionDep, admin: AdminPrincipal
) -> Response:
    """Revokes a key: at once on this gateway, within 30 s on the others (their key cache). A
    key's grant never changes: for another, make a new key and revoke the old one."""
    try:
        async with session.begin():
            row = await session.get(ApiKey, key_id)
            if row is None:
                raise HTTPException(404, f"no key {key_id}")
            revoking = row.revoked_at is None
            if revoking and row.role == Role.ADMIN.value:
                await check_an_admin_remains(session, f"key {row.name!r}", key_id=row.id)
            row.revoked_at = row.revoked_at or datetime.now(UTC)
    except AccessConflict as exc:
        raise HTTPException(409, str(exc)) from None
    authenticator(request).forget_keys()
    if revoking:
        record_admin_change(admin.actor, "revoked key", _key_named(row))
    return Response(status_code=204)


@router.post("/admin/users", response_model=UserOut, status_code=201)
async def new_user(
    body: UserIn, session: SessionDep, city: CityDep, routing: RoutingDep, admin: AdminPrincipal
) -> UserOut:
    """A staff user, who logs in at /api/v1/auth/token. A name another user has (a disabled one
    too: re-enable them instead) or a worker handle another user holds is a 409 saying what to
    do."""
    try:
        async with session.begin():
            user = await create_user(
                session,
                username=body.username,
                password=body.password,
                role=body.role,
                scopes=body.scopes,
                worker_handle=body.worker_handle,
                queues=manager_queues(city, routing),
            )
    except GrantError as exc:
        raise InvalidField(exc.field, str(exc)) from None
    except AccessConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except IntegrityError:  # made at the same moment by another admin
        raise HTTPException(409, f"a user named {body.username!r} exists") from None
    record_admin_change(admin.actor, "created user", _user_named(user))
    return _user_out(user)


@router.get("/admin/users", response_model=list[UserOut])
async def list_users(session: SessionDep, _: AdminPrincipal) -> list[UserOut]:
    rows = (await session.execute(select(StaffUser).order_by(StaffUser.id))).scalars()
    return [_user_out(r) for r in rows]


@router.patch(
    "/admin/users/{user_id}",
    response_model=UserOut,
    responses={
        404: {"description": "No such user"},
        409: {"description": "The worker handle is another user's (the detail says whose)"},
    },
)
async def change_user(
    request: Request,
    user_id: RowId,
    body: UserPatch,
    session: SessionDep,
    city: CityDep,
    routing: RoutingDep,
    admin: AdminPrincipal,
) -> UserOut:
    """Changes a user (a JSON merge patch): role, scopes, worker handle, a new password, disabled
    or re-enabled; each checked as on creation (422), a worker handle another user holds is a
    409. The tokens already issued follow at once on this gateway, within 30 s on others: a new
    grant applies to them; after a password reset or a disable they stop working (a re-enabled
    user logs in again)."""
    queues = manager_queues(city, routing)
    return _user_out(await _change_user(request, user_id, body.changes(), session, admin, queues))


@router.delete("/admin/users/{user_id}", status_code=204)
async def disable_user(
    request: Request, user_id: RowId, session: SessionDep, admin: AdminPrincipal
) -> Response:
    """Disables a user: no new tokens, and the tokens already issued stop working (at once on
    this gateway, within 30 s on others). PATCH with {"disabled": false} re-enables them."""
    await _change_user(request, user_id, UserChanges(disabled=True), session, admin)
    return Response(status_code=204)


async def _change_user(
    request: Request,
    user_id: int,
    changes: UserChanges,
    session: SessionDep,
    admin: Principal,
    queues: Mapping[str, str | None] | None = None,
) -> StaffUser:
    try:
        async with session.begin():
            row = await session.get(StaffUser, user_id)
            if row is None:
                raise HTTPException(404, f"no user {user_id}")
            changed = await update_user(session, row, changes, queues)
    except GrantError as exc:
        raise InvalidField(exc.field, str(exc)) from None
    except AccessConflict as exc:
        raise HTTPException(409, str(exc)) from None
    authenticator(request).forget_keys()
    if changed:
        record_admin_change(admin.actor, "changed user", _user_named(row), changed)
    return row


def _user_named(row: StaffUser) -> str:
    return f"{row.username!r} (id {row.id})"


def _key_named(row: ApiKey) -> str:
    return f"{row.name!r} (id {row.id})"
