"""A key's or user's grant without I/O: a manager's scopes against the city's queues, and the
roles users may have."""

from __future__ import annotations

import pytest
from plaza.city import City
from plaza.policy import RoutingTable
from plaza_api.auth import GrantError, Role, check_grant, check_user_role, manager_queues


def test_a_managers_queues_are_the_districts_triage_and_the_city_wide_queues() -> None:
    queues = manager_queues(City.barcelona(), RoutingTable.load())
    assert list(queues) == [f"{n:02}" for n in range(1, 11)] + ["triage", "city-mobility"]
    assert queues["06"] == "Gràcia" and queues["triage"] is None
    assert "city-hall" not in queues  # city hall's alone: no manager ever sees it


def test_scopes_are_checked_against_the_queues_and_stored_as_their_codes() -> None:
    queues = manager_queues(City.barcelona(), RoutingTable.load())
    assert check_grant(Role.MANAGER, ["triage", "6", "06", "006"], None, queues) == [
        "06",
        "triage",
    ]
    for scopes, said in (
        (["gracia"], "scope 'gracia' is not a queue of the city"),
        (["6", "Triage", "11"], "scopes 'Triage', '11' are not queues of the city"),
        (["city-hall"], "scope 'city-hall': the escalated requests are city hall's"),
        ([], "a manager needs at least one scope, one of: 01 (Ciutat Vella), "),
    ):
        with pytest.raises(GrantError) as refused:
            check_grant(Role.MANAGER, scopes, None, queues)
        assert str(refused.value).startswith(said), refused.value
        assert str(refused.value).endswith(
            "09 (Sant Andreu), 10 (Sant Martí), triage, city-mobility"
        )
    assert check_grant(Role.MANAGER, ["99"], None) == ["99"]  # without the queues, as given


def test_a_number_is_a_districts_code_only_when_just_one_district_has_it() -> None:
    queues: dict[str, str | None] = {"6": "Sis", "06": "Zero-sis", "7": "Set", "triage": None}
    assert check_grant(Role.MANAGER, ["6", "06", "07"], None, queues) == ["06", "6", "7"]
    with pytest.raises(GrantError, match="scope '006' is not a queue"):
        check_grant(Role.MANAGER, ["006"], None, queues)  # "6" or "06"? Neither is assumed
    with pytest.raises(GrantError, match="scope '٦' is not a queue"):
        check_grant(Role.MANAGER, ["٦"], None, queues)  # an Arabic-Indic six is no code here


@pytest.mark.parametrize("role", [Role.CIVIC_DEVELOPER, Role.BRIDGE])
def test_the_roles_of_apps_and_bridges_are_for_keys_only(role: Role) -> None:
    with pytest.raises(GrantError) as refused:
        check_user_role(role)
    assert str(refused.value) == (
        f"role {role} is for API keys (apps and bridges), not users; "
        "a user is one of: worker, manager, city_hall, admin"
    )


@pytest.mark.parametrize("role", [Role.WORKER, Role.MANAGER, Role.CITY_HALL, Role.ADMIN])
def test_staff_roles_are_for_users(role: Role) -> None:
    check_user_role(role)
