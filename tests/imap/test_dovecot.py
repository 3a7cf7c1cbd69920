"""The Dovecot fixture itself, proved with real clients: stdlib imaplib and aioimaplib.

These pin down what the importer's tests rely on: logins, APPEND, SEARCH and
FETCH, IDLE pushes, the exact failure of a wrong password, restarts that keep
mail and UIDVALIDITY, a UIDVALIDITY change that keeps mail, a folder that
disappears, implicit TLS verified by the server's own CA, and a server
without IDLE.
"""

from __future__ import annotations

import asyncio
import imaplib
import re
import socket
import ssl
import time

import aioimaplib
import pytest

from mailbridge.imap.names import quote_mailbox, unquote_mailbox
from tests.imap.conftest import USERS
from tests.imap.dovecot import Dovecot, DovecotError
from tests.imap.dovecot_config import HOST

TIMEOUT = 10.0


def mail(number: int) -> bytes:
    return (
        f"From: sender@example.org\r\nTo: alice@example.org\r\n"
        f"Subject: message {number}\r\nMessage-ID: <m{number}@example.org>\r\n"
        f"\r\nbody {number}\r\n"
    ).encode()


def login(dovecot: Dovecot, user: str = "alice") -> imaplib.IMAP4:
    client = imaplib.IMAP4(HOST, dovecot.port, timeout=TIMEOUT)
    client.login(user, USERS[user])
    return client


def test_it_serves_plain_imap_with_idle_on_loopback(dovecot: Dovecot) -> None:
    assert dovecot.address == (HOST, dovecot.port)
    client = imaplib.IMAP4(HOST, dovecot.port, timeout=TIMEOUT)
    assert "IDLE" in client.capabilities
    assert "AUTH=PLAIN" in client.capabilities
    assert "LOGINDISABLED" not in client.capabilities
    assert "STARTTLS" not in client.capabilities
    client.logout()


def test_appended_messages_are_searched_and_fetched_with_imaplib(dovecot: Dovecot) -> None:
    first = dovecot.append("alice", "INBOX", mail(1))
    second = dovecot.append("alice", "INBOX", mail(2), flags=["\\Seen"])
    client = login(dovecot)
    assert client.select("INBOX") == ("OK", [b"2"])
    assert client.uid("SEARCH", "ALL") == ("OK", [f"{first} {second}".encode()])
    assert client.uid("SEARCH", "UNSEEN") == ("OK", [str(first).encode()])
    kind, data = client.uid("FETCH", str(second), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    assert kind == "OK"
    assert isinstance(data[0], tuple)
    assert data[0][1].strip() == b"Message-ID: <m2@example.org>"
    client.logout()
    assert dovecot.uids("alice", "INBOX") == [first, second]
    assert dovecot.message("alice", "INBOX", first).replace(b"\r\n", b"\n") == mail(1).replace(
        b"\r\n", b"\n"
    )
    assert dovecot.message_count("bob", "INBOX") == 0  # users have their own mail


def test_flags_show_what_a_client_did(dovecot: Dovecot) -> None:
    uids = [dovecot.append("alice", "INBOX", mail(n)) for n in (1, 2, 3)]
    dovecot.create_folder("alice", "Imported")
    client = login(dovecot)
    client.select("INBOX")
    client.uid("STORE", str(uids[0]), "+FLAGS", "(\\Seen $MailBridge)")
    assert client.uid("MOVE", str(uids[1]), "Imported")[0] == "OK"
    client.uid("STORE", str(uids[2]), "+FLAGS", "(\\Deleted)")
    client.expunge()
    client.logout()
    assert dovecot.flags("alice", "INBOX") == {uids[0]: frozenset({"\\Seen", "$MailBridge"})}
    assert dovecot.flags("alice", "Imported") == {1: frozenset()}
    assert dovecot.message_count("alice", "Imported") == 1


def test_aioimaplib_logs_in_appends_searches_and_fetches(dovecot: Dovecot) -> None:
    async def scenario() -> None:
        client = aioimaplib.IMAP4(HOST, dovecot.port, timeout=TIMEOUT)
        await client.wait_hello_from_server()
        assert (await client.login("alice", USERS["alice"])).result == "OK"
        assert (await client.append(mail(1), mailbox="INBOX")).result == "OK"
        assert (await client.select("INBOX")).result == "OK"
        search = await client.uid_search("ALL")
        assert search.result == "OK"
        assert search.lines[0] == b"1"
        fetch = await client.uid("fetch", "1", "(FLAGS BODY.PEEK[])")
        assert fetch.result == "OK"
        assert any(b"<m1@example.org>" in bytes(line) for line in fetch.lines)
        await client.logout()

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))


def test_an_idle_session_is_pushed_exists_when_another_client_appends(
    dovecot: Dovecot,
) -> None:
    async def scenario() -> float:
        client = aioimaplib.IMAP4(HOST, dovecot.port, timeout=TIMEOUT)
        await client.wait_hello_from_server()
        await client.login("alice", USERS["alice"])
        assert client.has_capability("IDLE")
        await client.select("INBOX")
        idle = await client.idle_start(timeout=TIMEOUT)
        started = time.monotonic()
        await asyncio.to_thread(dovecot.append, "alice", "INBOX", mail(1))
        pushed: list[bytes] = []
        while not any(line.endswith(b"EXISTS") for line in pushed):
            pushed += await client.wait_server_push(timeout=5.0)
        delay = time.monotonic() - started
        client.idle_done()
        assert (await asyncio.wait_for(idle, 5.0)).result == "OK"
        assert b"1 EXISTS" in pushed
        await client.logout()
        return delay

    delay = asyncio.run(asyncio.wait_for(scenario(), TIMEOUT * 2))
    assert delay < 2.0


def test_a_wrong_password_fails_with_authenticationfailed(dovecot: Dovecot) -> None:
    client = imaplib.IMAP4(HOST, dovecot.port, timeout=TIMEOUT)
    with pytest.raises(imaplib.IMAP4.error, match=re.escape("[AUTHENTICATIONFAILED]")):
        client.login("alice", "not-her-password")

    async def scenario() -> aioimaplib.Response:
        client = aioimaplib.IMAP4(HOST, dovecot.port, timeout=TIMEOUT)
        await client.wait_hello_from_server()
        answer = await client.login("bob", "not-his-password")
        await client.logout()
        return answer

    answer = asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    assert answer.result == "NO"
    assert b"[AUTHENTICATIONFAILED]" in answer.lines[-1]
    login(dovecot, "alice").logout()  # no penalty for the others after a failure


def test_users_can_be_added_and_passwords_changed_while_it_runs(dovecot: Dovecot) -> None:
    dovecot.add_user("carol", "carol-secret")
    assert dovecot.message_count("carol", "INBOX") == 0
    dovecot.add_user("carol", "changed")
    client = imaplib.IMAP4(HOST, dovecot.port, timeout=TIMEOUT)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login("carol", "carol-secret")
    with pytest.raises(ValueError, match="':' or whitespace"):
        dovecot.add_user("dave", "with:colon")


@pytest.mark.parametrize("abrupt", [False, True], ids=["stop", "kill"])
def test_a_restart_keeps_port_messages_flags_and_uidvalidity(
    dovecot: Dovecot, abrupt: bool
) -> None:
    uid = dovecot.append("alice", "INBOX", mail(1), flags=["$MailBridge"])
    port, uidvalidity = dovecot.port, dovecot.uidvalidity("alice", "INBOX")
    dovecot.restart(abrupt=abrupt)
    assert dovecot.port == port
    assert dovecot.uidvalidity("alice", "INBOX") == uidvalidity
    assert dovecot.flags("alice", "INBOX") == {uid: frozenset({"$MailBridge"})}


def test_a_stopped_server_refuses_connections_and_drops_its_idle_sessions(
    dovecot: Dovecot,
) -> None:
    async def scenario() -> None:
        lost = asyncio.Event()
        client = aioimaplib.IMAP4(
            HOST, dovecot.port, timeout=TIMEOUT, conn_lost_cb=lambda _error: lost.set()
        )
        await client.wait_hello_from_server()
        await client.login("alice", USERS["alice"])
        await client.select("INBOX")
        await client.idle_start(timeout=TIMEOUT)
        await asyncio.to_thread(dovecot.stop)
        await asyncio.wait_for(lost.wait(), 5.0)

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    assert not dovecot.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(dovecot.address, timeout=TIMEOUT)
    dovecot.start()
    login(dovecot).logout()


def test_change_uidvalidity_gives_a_new_one_and_keeps_the_messages(dovecot: Dovecot) -> None:
    uids = [dovecot.append("alice", "INBOX", mail(n)) for n in (1, 2)]
    before = dovecot.uidvalidity("alice", "INBOX")
    selected = login(dovecot)
    selected.select("INBOX")

    after = dovecot.change_uidvalidity("alice", "INBOX")

    assert after != before
    client = login(dovecot)
    assert client.select("INBOX") == ("OK", [b"2"])
    assert client.response("UIDVALIDITY") == ("UIDVALIDITY", [str(after).encode()])
    client.logout()
    assert dovecot.uids("alice", "INBOX") == uids
    # A session that had the folder selected is cut off, as after a real change.
    with pytest.raises(imaplib.IMAP4.abort):
        selected.noop()


def test_a_deleted_folder_cannot_be_selected(dovecot: Dovecot) -> None:
    dovecot.create_folder("alice", "Projects")
    dovecot.append("alice", "Projects", mail(1))
    dovecot.delete_folder("alice", "Projects")
    assert "Projects" not in dovecot.folders("alice")
    client = login(dovecot)
    kind, data = client.select("Projects")
    assert kind == "NO"
    assert isinstance(data[0], bytes)
    assert b"doesn't exist" in data[0]
    client.logout()
    with pytest.raises(DovecotError, match="NO"):
        dovecot.uids("alice", "Projects")


def test_folder_names_travel_in_modified_utf7(dovecot: Dovecot) -> None:
    assert quote_mailbox('Archivé/2024 "Q1" & co') == '"Archiv&AOk-/2024 \\"Q1\\" &- co"'
    assert unquote_mailbox(b'"Archiv&AOk-/2024 \\"Q1\\" &- co"') == 'Archivé/2024 "Q1" & co'
    dovecot.create_folder("alice", "Archivé/2024 Q1")
    dovecot.append("alice", "Archivé/2024 Q1", mail(1))
    assert "Archivé/2024 Q1" in dovecot.folders("alice")
    assert dovecot.message_count("alice", "Archivé/2024 Q1") == 1


def test_a_start_failure_says_why_with_the_log(dovecot: Dovecot) -> None:
    dovecot.stop()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(dovecot.address)
        squatter.listen()
        with pytest.raises(DovecotError, match="Address already in use"):
            dovecot.start()
    assert not dovecot.running


def test_with_tls_it_serves_implicit_tls_only_with_a_certificate_its_ca_signed(
    tls_dovecot: Dovecot,
) -> None:
    context = ssl.create_default_context(cafile=tls_dovecot.ca_path)
    client = imaplib.IMAP4_SSL(HOST, tls_dovecot.port, ssl_context=context, timeout=TIMEOUT)
    assert isinstance(client.sock, ssl.SSLSocket)
    assert client.sock.version() in {"TLSv1.2", "TLSv1.3"}
    client.login("alice", USERS["alice"])
    client.logout()
    tls_dovecot.append("alice", "INBOX", mail(1))  # the helpers trust the CA
    assert tls_dovecot.message_count("alice", "INBOX") == 1
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        imaplib.IMAP4_SSL(HOST, tls_dovecot.port, ssl_context=ssl.create_default_context())
    with socket.create_connection(tls_dovecot.address, timeout=TIMEOUT) as plain:
        plain.settimeout(0.5)
        with pytest.raises(TimeoutError):  # no plain greeting: the server awaits a handshake
            plain.recv(64)
    ca = tls_dovecot.ca_path.read_bytes()
    tls_dovecot.restart()
    assert tls_dovecot.ca_path.read_bytes() == ca
    assert tls_dovecot.message_count("alice", "INBOX") == 1


def test_without_idle_neither_capability_list_offers_it(
    dovecot: Dovecot, polled_dovecot: Dovecot
) -> None:
    def capabilities(server: Dovecot) -> tuple[set[str], set[str], set[str]]:
        client = imaplib.IMAP4(HOST, server.port, timeout=TIMEOUT)
        greeting = set(client.welcome.decode().split("[CAPABILITY ")[1].split("]")[0].split())
        before = set(client.capabilities)
        client.login("alice", USERS["alice"])
        after = set(client.capability()[1][0].decode().split())
        client.logout()
        return greeting, before, after

    greeting, before, after = capabilities(polled_dovecot)
    assert "IDLE" not in greeting | before | after
    assert {"UIDPLUS", "MOVE"} <= after
    # The same list as a default server's, IDLE aside: nothing else is lost.
    assert after == capabilities(dovecot)[2] - {"IDLE"}
