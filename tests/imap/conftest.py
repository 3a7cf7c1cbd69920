"""Fixtures for the IMAP tests: a real Dovecot per test.

An instance starts in about 50 ms, so each test gets its own server, users
and mail (function scope): no state leaks between tests, and a test may stop,
kill or restart its server freely. Without Debian's dovecot-imapd the tests
skip, naming the package; in CI (the CI variable set) they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import Factory
from tests.imap.dovecot import DOVEADM, DOVECOT, Dovecot
from tests.requirements import require

USERS = {"alice": "alice-secret", "bob": "bob-secret"}


def require_dovecot() -> None:
    """Skip without Debian's dovecot-imapd (fail in CI)."""
    for tool in (DOVECOT, DOVEADM):
        require(tool.is_file() and os.access(tool, os.X_OK), str(tool), "dovecot-imapd")


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A started Dovecot on an ephemeral 127.0.0.1 port with the users in USERS."""
    yield from _serve()


@pytest.fixture
def tls_dovecot() -> Iterator[Dovecot]:
    """The same, serving implicit TLS only (IMAPS) with a certificate from its own CA."""
    yield from _serve(tls=True)


@pytest.fixture
def polled_dovecot() -> Iterator[Dovecot]:
    """The same as `dovecot`, without IDLE in its capabilities: clients must poll."""
    yield from _serve(idle=False)


@pytest.fixture
def penalizing_dovecot() -> Iterator[Dovecot]:
    """The same, with Dovecot's default penalty for failed logins from one address."""
    yield from _serve(auth_penalty=True)


@pytest.fixture
def support_group(make: Factory) -> None:
    """The group the importer's tests bind their folders to."""
    make.group("support")


def _serve(
    *, tls: bool = False, idle: bool = True, auth_penalty: bool = False
) -> Iterator[Dovecot]:
    require_dovecot()
    server = Dovecot(USERS, tls=tls, idle=idle, auth_penalty=auth_penalty)
    try:
        server.start()
        yield server
    finally:
        server.close()
