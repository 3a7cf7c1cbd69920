"""IMAP bindings as an admin sets them up: validation, sealed passwords."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from feed.bindings import ImapBinding
from feed.credentials import SealedValueError, seal, unseal
from feed.db import Database
from feed.errors import AlreadyExistsError, InvalidInputError, NotFoundError
from feed.mailboxes import (
    AfterImport,
    ImapSpec,
    add_imap_binding,
    is_loopback,
    list_imap_bindings,
    parse_after,
)
from tests.conftest import Factory

KEY = "a-secret-key-for-the-tests"


def spec(**changes: object) -> ImapSpec:
    values: dict[str, object] = {
        "name": "support",
        "group_slug": "help",
        "host": "imap.company.example",
        "port": 993,
        "username": "support@company.example",
        "password": "s3cret pass",
    }
    values.update(changes)
    return ImapSpec(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def help_group(make: Factory) -> None:
    make.group("help")


def test_the_password_is_sealed_at_rest_and_opens_with_the_same_key(db: Database) -> None:
    with db.transaction() as session:
        add_imap_binding(session, KEY, spec())
    with db.reader() as session:
        row = session.scalars(select(ImapBinding)).one()
        assert "s3cret" not in row.password_sealed
        assert unseal(KEY, row.password_sealed) == "s3cret pass"
        with pytest.raises(SealedValueError, match="secret key"):
            unseal("another-key", row.password_sealed)
        [info] = list_imap_bindings(session)
    assert (info.name, info.group_slug, info.after_import, info.state) == (
        "support",
        "help",
        "seen",
        "new",
    )
    assert "s3cret" not in repr(info)


def test_a_tampered_sealed_value_is_an_error_not_garbage() -> None:
    sealed = seal(KEY, "pw")
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(SealedValueError):
        unseal(KEY, tampered)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Bad Name"}, "invalid IMAP binding name"),
        ({"port": 0}, "invalid IMAP port"),
        ({"tls": "starttls"}, "unknown TLS mode"),
        ({"tls": "none"}, "plain IMAP to imap.company.example"),
        ({"password": ""}, "needs a password"),
        ({"folder": 'In"box'}, "invalid folder name"),
        ({"after": "archive"}, "unknown after-import action"),
        ({"after": "move:"}, "invalid folder name"),
        ({"senders": "friends"}, "unknown sender policy"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(
    db: Database, changes: dict[str, object], message: str
) -> None:
    with db.transaction() as session, pytest.raises(InvalidInputError, match=message):
        add_imap_binding(session, KEY, spec(**changes))


def test_plain_imap_is_allowed_on_loopback_or_when_asked(db: Database) -> None:
    with db.transaction() as session:
        add_imap_binding(session, KEY, spec(name="local", host="127.0.0.1", tls="none"))
        add_imap_binding(
            session, KEY, spec(name="lan", host="10.1.2.3", tls="none", allow_plaintext=True)
        )
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("imap.company.example")


def test_duplicates_and_unknown_groups_are_refused(db: Database) -> None:
    with db.transaction() as session:
        add_imap_binding(session, KEY, spec())
    with db.transaction() as session, pytest.raises(AlreadyExistsError):
        add_imap_binding(session, KEY, spec())
    with db.transaction() as session, pytest.raises(NotFoundError):
        add_imap_binding(session, KEY, spec(name="other", group_slug="nope"))


def test_after_import_actions_parse() -> None:
    assert parse_after("Seen") == AfterImport("seen")
    assert parse_after("delete") == AfterImport("delete")
    assert parse_after("move:Archive/MailBridge") == AfterImport("move", "Archive/MailBridge")
    assert str(parse_after("move:Done")) == "move:Done"
