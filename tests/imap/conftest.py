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
    require_dovecot()
    server = Dovecot(USERS)
    try:
        server.start()
        yield server
    finally:
        server.close()
