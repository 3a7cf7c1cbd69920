"""IMAP bindings over implicit TLS (IMAPS), against a Dovecot with its own CA.

The importer's client verifies the server with `ssl.create_default_context()`,
that is OpenSSL's default trust, which the SSL_CERT_FILE variable replaces:
the tests trust the throwaway CA that way, as an admin with a private CA
would, and the product needs no test hook. Without that CA the binding must
not import, and its state must say why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from feed.db import Database
from mailbridge.config import Settings
from mailbridge.imap.client import IMPORTED_KEYWORD
from mailbridge.pipeline.deliver import Pipeline
from tests.cli import run as run_command
from tests.imap.certificates import make_authority, write_certificate
from tests.imap.conftest import USERS
from tests.imap.dovecot import Dovecot
from tests.imap.dovecot_config import HOST
from tests.imap.harness import (
    add_imap,
    bind,
    distinct_posted,
    importing,
    mail,
    posts,
    run,
    state,
    until,
)

pytestmark = pytest.mark.usefixtures("support_group")


def test_a_binding_over_implicit_tls_imports_the_folder(
    pipeline: Pipeline,
    db: Database,
    settings: Settings,
    tls_dovecot: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_dovecot.ca_path))
    for number in (1, 2):
        tls_dovecot.append("alice", "INBOX", mail(number))
    bind(db, settings, tls_dovecot)

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(lambda: posts(db) == 2, "the first two posts")
            await until(lambda: state(db, "desk")[0] == "idle", "the binding to go idle")
            await until(lambda: _imported(tls_dovecot) == 2, "both messages flagged")

    run(scenario)
    assert distinct_posted(db) == posts(db) == 2


@pytest.mark.parametrize("trust", ["system", "unrelated-ca"])
def test_an_untrusted_certificate_stops_the_binding_and_says_why(
    pipeline: Pipeline,
    db: Database,
    settings: Settings,
    tls_dovecot: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    trust: str,
) -> None:
    if trust == "system":
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    else:
        unrelated = tmp_path / "unrelated-ca.pem"
        write_certificate(unrelated, make_authority("Some other CA").certificate)
        monkeypatch.setenv("SSL_CERT_FILE", str(unrelated))
    tls_dovecot.append("alice", "INBOX", mail(1))
    bind(db, settings, tls_dovecot)

    seen: list[tuple[str, str | None]] = []

    def backing_off() -> bool:  # one read: the state and its error together
        seen[:] = [state(db, "desk")]
        return seen[0][0] == "backing off"

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(lambda: _failures(caplog) >= 3, "three attempts, failing alike")
            # Between attempts (not while it connects again) the state says why.
            await until(backing_off, "the binding to back off")

    with caplog.at_level(logging.WARNING, "mailbridge.imap.runner"):
        run(scenario)
    status, error = seen[0]
    assert status == "backing off"
    assert error is not None
    assert error.startswith(f"cannot connect to {HOST}:{tls_dovecot.port}: ")
    assert "certificate verify failed" in error
    assert "unable to get local issuer certificate" in error
    assert USERS["alice"] not in error
    assert posts(db) == 0
    assert _imported(tls_dovecot) == 0


def test_binding_test_over_implicit_tls_trusts_what_ssl_cert_file_names(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tls_dovecot: Dovecot,
) -> None:
    tls_dovecot.append("alice", "INBOX", mail(1))
    code, _, err = add_imap(capsys, monkeypatch, tls_dovecot, USERS["alice"])
    assert code == 0, err
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the system's CAs alone
    code, _, err = run_command(capsys, "binding", "test", "desk")
    assert code == 2
    assert err.startswith(f"mailbridge: error: imap:desk: cannot connect to {HOST}:")
    assert "certificate verify failed" in err
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_dovecot.ca_path))
    code, out, err = run_command(capsys, "binding", "test", "desk")
    validity = tls_dovecot.uidvalidity("alice", "INBOX")
    assert code == 0, err
    assert out.strip() == (
        f"imap:desk: logged in as alice at {HOST}:{tls_dovecot.port}; folder INBOX: "
        f"1 message(s), UIDVALIDITY {validity}; IDLE"
    )
    code, out, _ = run_command(capsys, "binding", "list")
    assert f"alice@{HOST}:{tls_dovecot.port}/INBOX (implicit TLS)" in out.split("\t")


def _imported(dovecot: Dovecot) -> int:
    return sum(IMPORTED_KEYWORD in f for f in dovecot.flags("alice", "INBOX").values())


def _failures(caplog: pytest.LogCaptureFixture) -> int:
    """Failed attempts the runner logged, each with the certificate error."""
    return sum("certificate verify failed" in r.getMessage() for r in caplog.records)
