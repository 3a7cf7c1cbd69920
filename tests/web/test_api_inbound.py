"""GET /api/v1/inbound: the inbound log, for administrators only."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from mailbridge.pipeline.deliver import Pipeline
from mailbridge.pipeline.types import Envelope, RawMessage, Source
from tests.conftest import Factory
from tests.web.conftest import Mailer, address, api_get

UNBOUND = b"From: x@elsewhere.example\r\nTo: nobody@mb.example.com\r\nSubject: Lost\r\n\r\nHi\r\n"


@pytest.fixture(autouse=True)
def setup(make: Factory) -> None:
    make.group("eng")
    make.binding(address("eng"), "eng", senders="anyone")
    make.user("root@company.example", is_admin=True)
    make.user("bob@company.example")


@pytest.fixture
def root(make: Factory) -> str:
    return make.token("root@company.example")


def refuse(pipeline: Pipeline) -> None:
    envelope = Envelope("x@elsewhere.example", ("nobody@mb.example.com",))
    pipeline.deliver(RawMessage(UNBOUND, envelope, Source.SMTP))


def test_it_lists_accepted_and_rejected_mail_newest_first(
    client: FlaskClient, mailer: Mailer, pipeline: Pipeline, root: str
) -> None:
    post_id = mailer.post("eng", "Hello")
    refuse(pipeline)
    response = api_get(client, "/api/v1/inbound", root)
    assert response.status_code == 200
    body = response.get_json()
    rejected, accepted = body["inbound"]
    assert body["next"] is None
    assert rejected["status"] == "rejected"
    assert rejected["group"] is None
    assert rejected["reason"] == "no envelope recipient is bound to a group"
    assert accepted["id"] < rejected["id"]
    assert accepted["status"] == "accepted"
    assert accepted["group"] == "eng"
    assert accepted["post_id"] == post_id
    assert accepted["subject"] == "Hello"
    assert accepted["source"] == "smtp"
    assert accepted["mail_from"] == "alice@company.example"
    assert accepted["rcpt_to"] == [address("eng")]
    assert accepted["message_id"].endswith("@company.example")
    assert accepted["received_at"]


def test_it_filters_by_status(
    client: FlaskClient, mailer: Mailer, pipeline: Pipeline, root: str
) -> None:
    mailer.post("eng", "Hello")
    refuse(pipeline)
    rejected = api_get(client, "/api/v1/inbound?status=rejected", root).get_json()["inbound"]
    held = api_get(client, "/api/v1/inbound?status=held", root).get_json()["inbound"]
    assert [entry["status"] for entry in rejected] == ["rejected"]
    assert held == []


def test_it_pages_by_id(client: FlaskClient, mailer: Mailer, root: str) -> None:
    for n in range(3):
        mailer.post("eng", f"Topic {n}")
    first = api_get(client, "/api/v1/inbound?limit=2", root).get_json()
    rest = api_get(client, f"/api/v1/inbound?limit=2&cursor={first['next']}", root).get_json()
    subjects = [entry["subject"] for entry in first["inbound"] + rest["inbound"]]
    assert subjects == ["Topic 2", "Topic 1", "Topic 0"]
    assert rest["next"] is None


def test_an_unknown_status_is_a_400(client: FlaskClient, root: str) -> None:
    response = api_get(client, "/api/v1/inbound?status=lost", root)
    assert response.status_code == 400
    assert response.get_json()["error"] == (
        "status must be one of accepted, rejected, held, ignored, postmaster, got 'lost'"
    )


def test_it_is_forbidden_to_non_admins(client: FlaskClient, make: Factory) -> None:
    response = api_get(client, "/api/v1/inbound", make.token("bob@company.example"))
    assert response.status_code == 403
    assert response.get_json() == {"error": "only administrators may read the inbound log"}
