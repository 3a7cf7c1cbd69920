"""GET /api/v1/inbound: the inbound log, for administrators only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask.testing import FlaskClient

from feed.base import utcnow
from feed.blobs import BlobStore
from feed.db import Database
from feed.retention import expire_raw
from mailbridge.config import Settings
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


POSTMASTER = (
    b"From: someone@elsewhere.example\r\nTo: postmaster@mb.example.com\r\n"
    b"Subject: Your server\r\nMessage-ID: <pm-1@elsewhere.example>\r\n\r\n"
    b"Your server sends odd bounces.\r\n"
)


def test_admins_read_the_mail_for_the_postmaster(
    client: FlaskClient, pipeline: Pipeline, root: str
) -> None:
    envelope = Envelope("someone@elsewhere.example", ("postmaster@mb.example.com",))
    pipeline.deliver(RawMessage(POSTMASTER, envelope, Source.SMTP))
    (entry,) = api_get(client, "/api/v1/inbound?status=postmaster", root).get_json()["inbound"]
    assert entry["subject"] == "Your server"
    assert entry["size"] == len(POSTMASTER)
    assert entry["raw_url"] == f"/api/v1/inbound/{entry['id']}/raw"
    response = api_get(client, entry["raw_url"], root)
    assert response.status_code == 200
    assert response.data == POSTMASTER
    assert response.headers["Content-Type"] == "message/rfc822"
    assert f'filename="inbound-{entry["id"]}.eml"' in response.headers["Content-Disposition"]


def test_the_kept_part_of_refused_mail_can_be_read(
    client: FlaskClient, pipeline: Pipeline, root: str
) -> None:
    refuse(pipeline)
    (entry,) = api_get(client, "/api/v1/inbound", root).get_json()["inbound"]
    response = api_get(client, entry["raw_url"], root)
    assert response.status_code == 200
    assert response.data.startswith(b"From: x@elsewhere.example\r\n")


def test_raw_mail_is_forbidden_to_non_admins(
    client: FlaskClient, mailer: Mailer, make: Factory, root: str
) -> None:
    mailer.post("eng", "Hello")
    (entry,) = api_get(client, "/api/v1/inbound", root).get_json()["inbound"]
    response = api_get(client, entry["raw_url"], make.token("bob@company.example"))
    assert response.status_code == 403


def test_refused_mail_past_its_retention_has_no_raw(
    client: FlaskClient, pipeline: Pipeline, db: Database, settings: Settings, root: str
) -> None:
    refuse(pipeline)
    (entry,) = api_get(client, "/api/v1/inbound", root).get_json()["inbound"]
    expire_raw(db, BlobStore(settings.blob_dir), utcnow() + timedelta(seconds=1))
    (expired,) = api_get(client, "/api/v1/inbound", root).get_json()["inbound"]
    assert expired["raw_url"] is None
    assert api_get(client, entry["raw_url"], root).status_code == 404


@pytest.mark.parametrize("entry_id", ["999999", "99999999999999999999999", "x"])
def test_raw_of_a_missing_entry_is_a_404(client: FlaskClient, root: str, entry_id: str) -> None:
    response = api_get(client, f"/api/v1/inbound/{entry_id}/raw", root)
    assert response.status_code == 404
    assert "error" in response.get_json()
