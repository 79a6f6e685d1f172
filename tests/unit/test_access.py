"""Access control without I/O: passwords, keys, tokens, the JWT secret's strength, grants, the
rate limiter and masking of public text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from plaza.db.models import ServiceRequest, StaffUser
from plaza_api.auth import (
    AuthConfig,
    Authenticator,
    GrantError,
    InvalidCredentials,
    Principal,
    Role,
    check_grant,
    check_jwt_secret,
    hash_api_key,
    hash_password,
    new_api_key,
    verify_password,
)
from plaza_api.limits import LoginFailures, RateLimiter
from plaza_api.privacy import mask, public_address
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


def test_passwords_are_salted_and_verified() -> None:
    stored = hash_password("a long passphrase")
    assert stored.startswith("scrypt$") and "a long passphrase" not in stored
    assert stored != hash_password("a long passphrase")
    assert verify_password("a long passphrase", stored)
    assert not verify_password("a long passphrasE", stored)
    assert not verify_password("x", "md5$garbage")


def test_keys_are_random_and_stored_as_their_hash() -> None:
    key = new_api_key()
    assert key.startswith("plz_") and len(key) > 40 and key != new_api_key()
    assert hash_api_key(key) == hash_api_key(key) and key not in hash_api_key(key)


@pytest.mark.parametrize(
    "secret", [None, "", "secret", "short-but-random-Xy1", "a" * 64, "ab" * 32]
)
def test_a_weak_or_missing_jwt_secret_is_refused(secret: str | None) -> None:
    with pytest.raises(ValueError, match="PLAZA_JWT_SECRET"):
        check_jwt_secret(secret)


def test_a_random_jwt_secret_is_accepted() -> None:
    secret = "Zq8vK2mN4pR7sT1uW3xY6zA9bC0dE5fG"
    assert check_jwt_secret(secret) == secret


def staff(role: Role, scopes: list[str] | None = None, worker: str | None = None) -> StaffUser:
    return StaffUser(
        id=7, username="maria", role=role.value, scopes=scopes or [], worker_handle=worker
    )


def test_tokens_carry_the_role_and_scopes_and_expire() -> None:
    sessions: async_sessionmaker[AsyncSession] = async_sessionmaker()
    auth = Authenticator(sessions, AuthConfig(token_ttl=timedelta(minutes=5)))
    token = auth.issue_token(staff(Role.MANAGER, ["06", "triage"]))
    principal = auth.verify_token(token)
    assert (principal.kind, principal.name, principal.role) == ("user", "maria", Role.MANAGER)
    assert principal.scopes == {"06", "triage"} and principal.actor == "user:maria"
    old = auth.issue_token(staff(Role.ADMIN), now=datetime.now(UTC) - timedelta(minutes=6))
    with pytest.raises(InvalidCredentials, match="expired"):
        auth.verify_token(old)
    other = Authenticator(sessions, AuthConfig())
    with pytest.raises(InvalidCredentials):
        other.verify_token(token)
    head, body, signature = token.split(".")
    with pytest.raises(InvalidCredentials):
        auth.verify_token(f"{head}.{body}.{signature[::-1]}")


@pytest.mark.parametrize(
    ("credential", "says"),
    [
        ("Authorization: Bearer plz_abc", "the header was written twice"),
        ("Bearer plz_abc", "the header was written twice"),
        ("wrong", "neither an API key (plz_…) nor a token of POST /api/v1/auth/token"),
    ],
)
async def test_a_bearer_that_is_neither_key_nor_token_says_what_it_should_be(
    credential: str, says: str
) -> None:
    """README's first curl sets KEY to the whole header; a newcomer who then wrote
    `-H "Authorization: Bearer $KEY"` was told "Not enough segments" (pyjwt's words)."""
    auth = Authenticator(async_sessionmaker(), AuthConfig())
    with pytest.raises(InvalidCredentials) as refused:
        await auth.principal(credential)
    assert says in str(refused.value) and "segments" not in str(refused.value)
    assert "plz_abc" not in str(refused.value)  # a credential is never repeated back


def test_a_token_carries_the_generation_it_was_issued_in() -> None:
    """A password reset or a disable moves a user's generation on; older tokens then stop."""
    secret = "Zq8vK2mN4pR7sT1uW3xY6zA9bC0dE5fG"
    auth = Authenticator(async_sessionmaker(), AuthConfig(jwt_secret=secret))
    user = staff(Role.CITY_HALL)
    user.token_generation = 3
    claims = jwt.decode(auth.issue_token(user), secret, algorithms=["HS256"], issuer="plaza")
    assert claims["gen"] == 3


def test_grants_need_the_scopes_of_their_role() -> None:
    check_grant(Role.MANAGER, ["06"], None)
    check_grant(Role.WORKER, [], "@jordi")
    check_grant(Role.CITY_HALL, [], None)
    for role, scopes, worker in [
        (Role.MANAGER, [], None),
        (Role.WORKER, [], None),
        (Role.CITY_HALL, ["06"], None),
        (Role.MANAGER, ["06"], "@x"),
    ]:
        with pytest.raises(GrantError):
            check_grant(role, scopes, worker)


def test_who_may_read_and_manage_a_request() -> None:
    gracia = ServiceRequest(queue="06", district_code="06", assigned_worker="@jordi")
    bicing = ServiceRequest(queue="city-mobility", district_code="06", assigned_worker=None)
    sarria = ServiceRequest(queue="05", district_code="05", assigned_worker=None)
    manager = Principal("user", 1, "m", Role.MANAGER, frozenset({"06"}))
    worker = Principal("key", 2, "w", Role.WORKER, worker_handle="@jordi")
    city_hall = Principal("key", 3, "c", Role.CITY_HALL)
    civic = Principal("key", 4, "d", Role.CIVIC_DEVELOPER)
    assert manager.manages(gracia) and manager.manages(bicing) and not manager.manages(sarria)
    assert manager.manages_queue("06") and not manager.manages_queue("city-hall")
    assert worker.may_read(gracia) and not worker.manages(gracia) and not worker.may_read(sarria)
    assert city_hall.manages(sarria) and city_hall.manages_queue("city-hall")
    assert not civic.may_read(gracia) and not civic.manages_queue("06")


def test_the_rate_limiter_allows_a_burst_then_refills_evenly() -> None:
    clock = [0.0]
    limiter = RateLimiter(clock=lambda: clock[0])
    assert [limiter.take("k", 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("k", 3)
    assert wait == pytest.approx(20.0)  # 3 a minute: one every 20 s
    assert limiter.take("other", 3) == 0.0
    clock[0] = 20.0
    assert limiter.take("k", 3) == 0.0
    assert limiter.take("k", 0) == 0.0  # 0 = no limit


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("escriviu a marta.puig@example.org", "escriviu a [email]"),
        ("truqueu al 612 345 678 si cal", "truqueu al [phone] si cal"),
        ("Llamad al +34 932-123-456.", "Llamad al [phone]."),
        ("cotxe 1234 BCD i moto B-1234-XY", "cotxe [plate] i moto [plate]"),
        ("el 4321BCD porta setmanes", "el [plate] porta setmanes"),
        (
            "El fanal 12 del carrer de Verdi, des de 2026",
            "El fanal 12 del carrer de Verdi, des de 2026",
        ),
        ("@marta avisa, CP 08012", "@marta avisa, CP 08012"),
        ("tel 612\u00a0345\u00a0678", "tel [phone]"),  # no-break spaces
        ("al 93/123.45.67 o al +34 (93) 123 45 67", "al [phone] o al [phone]"),
        ("(93) 123 45 67, 612  345  678", "[phone], [phone]"),
        ("DNI 12345678Z, NIE X1234567L, dni 12345678-z", "DNI [id], NIE [id], dni [id]"),
        ("IBAN ES91 2100 0418 4502 0005 1332 o ES9121000418450200051332", "IBAN [iban] o [iban]"),
        ("Revisió el 2026-05-04 10:00, 1000 pts", "Revisió el 2026-05-04 10:00, 1000 pts"),
        ("x" * 5000 + "@example.org i " + "y" * 5000, "[email] i " + "y" * 5000),
    ],
)
def test_public_text_masks_contacts_and_plates(text: str, masked: str) -> None:
    assert mask(text) == masked


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("Carrer de Verdi 12, 3r 2a", "Carrer de Verdi 12"),
        ("C/ Verdi, 12, 3º 2ª", "C/ Verdi, 12"),
        ("Calle Mayor 5 piso 3 puerta B, 08012 Barcelona", "Calle Mayor 5, 08012 Barcelona"),
        ("Carrer de Verdi 12 3-2", "Carrer de Verdi 12"),
        ("Av. Diagonal 640, 1er, 08017 Barcelona", "Av. Diagonal 640, 08017 Barcelona"),
        ("Carrer de Pujades 120 bis, àtic", "Carrer de Pujades 120 bis"),
        ("Carrer de Verdi 12, esc. B, 4t 1a", "Carrer de Verdi 12"),
        ("Passeig de Gràcia 43, Principal 1a", "Passeig de Gràcia 43"),
        ("Rambla de Catalunya 15, bajos", "Rambla de Catalunya 15"),
        ("Carrer del 15 de Maig 3, 2n", "Carrer del 15 de Maig 3"),
        # nothing after the house number that names a home: as it is
        ("Carrer de Verdi 12, 08012 Barcelona", "Carrer de Verdi 12, 08012 Barcelona"),
        ("Carrer de Verdi 12A", "Carrer de Verdi 12A"),
        ("Gran Via de les Corts Catalanes 585", "Gran Via de les Corts Catalanes 585"),
        ("Plaça del Sol, davant del bar", "Plaça del Sol, davant del bar"),
        ("Carrer de Verdi 12, truqueu al 612 345 678", "Carrer de Verdi 12, truqueu al [phone]"),
    ],
)
def test_a_public_address_keeps_the_street_and_number_not_the_home(
    address: str, public: str
) -> None:
    """The street and number place the problem; the floor and door say which home the citizen
    wrote from, which Open311 would publish to anyone."""
    assert public_address(address) == public


def test_failed_logins_refill_and_keep_no_name_as_it_was_sent() -> None:
    """A name's failures: 2 at once, then one a minute. A name as long as a body (1 MiB) is kept
    as a 16-byte digest: 50,000 of them would otherwise have held 50 GB."""
    now = [0.0]
    failures = LoginFailures(2, 60.0, clock=lambda: now[0])
    long_name = "m" * 1_000_000
    for _ in range(2):
        assert failures.wait(long_name) == 0
        failures.failed(long_name)
    assert failures.wait(long_name) == pytest.approx(60.0)
    assert failures.wait("anna") == 0
    now[0] = 30.0
    assert failures.wait(long_name) == pytest.approx(30.0)
    now[0] = 60.0
    assert failures.wait(long_name) == 0
    assert all(len(key) == 16 for key in failures._buckets)
