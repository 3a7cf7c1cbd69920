"""GET /api/v1/groups: public groups, private ones for members, all for admins."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.conftest import Factory
from tests.web.conftest import api_get


@pytest.fixture(autouse=True)
def groups(make: Factory) -> None:
    make.group("lobby")
    make.group("secret", private=True)
    make.group("board", private=True)
    make.user("member@company.example")
    make.user("outsider@company.example")
    make.user("root@company.example", is_admin=True)
    make.member("secret", "member@company.example")
    make.member("lobby", "member@company.example")


def listed(client: FlaskClient, token: str) -> dict[str, dict[str, object]]:
    response = api_get(client, "/api/v1/groups", token)
    assert response.status_code == 200
    return {group["slug"]: group for group in response.get_json()["groups"]}


def test_it_lists_public_groups_to_everyone(client: FlaskClient, make: Factory) -> None:
    groups = listed(client, make.token("outsider@company.example"))
    assert groups == {
        "lobby": {"slug": "lobby", "name": "Lobby", "private": False, "member": False}
    }


def test_it_hides_private_groups_from_non_members(client: FlaskClient, make: Factory) -> None:
    assert "secret" not in listed(client, make.token("outsider@company.example"))


def test_it_shows_members_their_private_groups(client: FlaskClient, make: Factory) -> None:
    groups = listed(client, make.token("member@company.example"))
    assert sorted(groups) == ["lobby", "secret"]
    assert groups["secret"] == {"slug": "secret", "name": "Secret", "private": True, "member": True}
    assert groups["lobby"]["member"] is True


def test_it_shows_admins_every_group(client: FlaskClient, make: Factory) -> None:
    groups = listed(client, make.token("root@company.example"))
    assert sorted(groups) == ["board", "lobby", "secret"]
    assert groups["board"]["member"] is False
