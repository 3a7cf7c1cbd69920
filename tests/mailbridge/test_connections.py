"""The limits of the mail listeners over real sockets: connections per client
and in all, the session deadline, the DATA rate and the error count.

Every limit is set tiny here; the deadlines below only catch a hang.
"""

from __future__ import annotations

import asyncio
import dataclasses
import smtplib
import socket
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from sqlalchemy import select

from feed.db import Database
from feed.inbound import InboundLog
from mailbridge.config import Settings
from mailbridge.pipeline.deliver import DeliveryReport, Pipeline
from mailbridge.replies import DATA_TOO_SLOW
from mailbridge.spool import Delivery
from mailbridge.workers import Deliverer, deliver_items
from tests.conftest import Factory
from tests.mailbridge.conftest import Served, serving
from tests.mailbridge.test_smtp import make_mail

HANG = 20.0  # seconds: only a hang takes this long


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Tiny limits; a test may change some with indirect parametrization."""
    tiny = dataclasses.replace(
        settings,
        mail_max_connections=4,
        mail_max_connections_per_client=3,
        mail_session_seconds=4.0,
        mail_data_min_rate=1000,
        mail_data_grace_seconds=1.0,
        mail_max_errors=3,
    )
    return dataclasses.replace(tiny, **getattr(request, "param", {}))


@pytest.fixture
def eng(make: Factory) -> Factory:
    make.user("alice@company.example", "Alice Martin")
    make.group("eng")
    make.member("eng", "alice@company.example")
    make.binding("eng@company.example", "eng")
    return make


@pytest.fixture
def connect(served: Served) -> Iterator[Callable[..., socket.socket]]:
    """Raw connections to the SMTP door, from 127.0.0.1 or another address."""
    opened: list[socket.socket] = []

    def open_one(source: str = "127.0.0.1", port: int = served.smtp_port) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), HANG, (source, 0))
        opened.append(sock)
        return sock

    yield open_one
    for sock in opened:
        sock.close()


def read_reply(sock: socket.socket) -> str:
    """One reply (all its lines), or '' once the server has closed."""
    data = b""
    while not data.endswith(b"\r\n") or data.splitlines()[-1][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("ascii")


def closed_by_server(sock: socket.socket) -> bool:
    return read_reply(sock) == ""


def send(sock: socket.socket, line: str) -> str:
    sock.sendall(line.encode("ascii") + b"\r\n")
    return read_reply(sock)


def start_data(sock: socket.socket) -> None:
    """Greeting read, envelope given, DATA begun: the session is at work."""
    assert read_reply(sock).startswith("220")
    assert send(sock, "EHLO client.example").startswith("250")
    assert send(sock, "MAIL FROM:<alice@company.example>").startswith("250")
    assert send(sock, "RCPT TO:<eng@company.example>").startswith("250")
    assert send(sock, "DATA").startswith("354")


def test_one_client_gets_421_beyond_its_share(
    eng: Factory, served: Served, connect: Callable[..., socket.socket]
) -> None:
    mine = [connect() for _ in range(3)]
    assert all(read_reply(sock).startswith("220") for sock in mine)
    extra = connect()
    assert read_reply(extra).startswith("421 4.7.0 ")
    assert closed_by_server(extra)
    assert read_reply(connect("127.0.0.2")).startswith("220")  # another client
    mine[0].close()
    deadline = time.monotonic() + HANG
    while not read_reply(again := connect()).startswith("220"):
        assert time.monotonic() < deadline, "a closed session kept its place"
        again.close()


def test_the_lmtp_door_has_its_own_limits(
    served: Served, connect: Callable[..., socket.socket]
) -> None:
    smtp_sessions = [connect() for _ in range(3)]
    assert all(read_reply(sock).startswith("220") for sock in smtp_sessions)
    lmtp_sessions = [connect(port=served.lmtp_port) for _ in range(3)]
    assert all(read_reply(sock).startswith("220") for sock in lmtp_sessions)
    assert read_reply(connect(port=served.lmtp_port)).startswith("421 4.7.0 ")


@pytest.mark.parametrize("settings", [{"mail_data_min_rate": 0}], indirect=True)
def test_a_full_listener_refuses_when_every_session_is_at_work(
    eng: Factory, served: Served, connect: Callable[..., socket.socket]
) -> None:
    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
        start_data(connect(source))
    newcomer = connect("127.0.0.6")
    assert read_reply(newcomer).startswith("421 4.7.0 ")
    assert closed_by_server(newcomer)


def test_a_full_listener_closes_its_longest_idle_session_for_a_newcomer(
    eng: Factory, served: Served, connect: Callable[..., socket.socket]
) -> None:
    idle, *others = (connect(f"127.0.0.{n}") for n in range(2, 6))
    assert all(read_reply(sock).startswith("220") for sock in (idle, *others))
    time.sleep(1.5)  # silent long enough to give way
    assert all(send(sock, "NOOP").startswith("250") for sock in others)
    newcomer = connect("127.0.0.6")
    assert read_reply(newcomer).startswith("220")
    assert read_reply(idle).startswith("421 4.4.2 ")
    assert closed_by_server(idle)


def test_noop_and_rset_do_not_outlive_the_session_deadline(eng: Factory, served: Served) -> None:
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=HANG) as client:
        answers: list[int] = []
        while time.monotonic() - started < HANG:
            code, text = client.noop() if len(answers) % 2 else client.rset()
            answers.append(code)
            if code != 250:
                break
            time.sleep(0.3)
        assert answers[-1] == 421, "the session outlived its deadline"
        assert text.startswith(b"4.4.2 ")
        assert answers.count(250) >= 3  # it was answered until the deadline
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_a_dripped_data_is_cut_and_recorded(
    eng: Factory, served: Served, db: Database, connect: Callable[..., socket.socket]
) -> None:
    sock = connect()
    start_data(sock)
    sock.settimeout(0.3)
    reply = ""
    deadline = time.monotonic() + HANG
    while not reply and time.monotonic() < deadline:
        try:
            sock.sendall(b"x")
            reply = read_reply(sock)
        except TimeoutError:
            continue
    assert reply.startswith("421 4.4.2 ")
    with db.reader() as session:
        row = session.scalars(select(InboundLog)).one()
        assert (row.status, row.rcpt_to) == ("rejected", "eng@company.example")
        assert row.reason.startswith("DATA cut after ")
        assert row.reason.endswith("bytes/s: 421 4.4.2 " + DATA_TOO_SLOW.text)


def test_a_data_at_a_fair_rate_is_not_cut(eng: Factory, served: Served) -> None:
    body = "A line of a slowly sent message.\n" * 200
    with smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=HANG) as client:
        client.ehlo()
        client.mail("alice@company.example")
        client.rcpt("eng@company.example")
        client.putcmd("data")
        assert client.getreply()[0] == 354
        message = make_mail(body=body).as_bytes().replace(b"\n", b"\r\n")
        for start in range(0, len(message), 2000):  # 2,000 bytes per 0.5 s
            client.send(message[start : start + 2000])
            time.sleep(0.5)
        client.send(b"\r\n.\r\n")
        assert client.getreply()[0] == 250


def test_a_data_at_a_fair_rate_still_ends_at_the_session_deadline(
    eng: Factory, served: Served, db: Database, connect: Callable[..., socket.socket]
) -> None:
    sock = connect()
    start_data(sock)
    sock.settimeout(0.5)
    reply = ""
    deadline = time.monotonic() + HANG
    while not reply and time.monotonic() < deadline:
        try:
            sock.sendall(b"A line of a message that never ends.\r\n" * 40)  # 3 KB/s
            reply = read_reply(sock)
        except TimeoutError:
            continue
    assert reply.startswith("421 4.4.2 ")
    with db.reader() as session:
        reason = session.scalars(select(InboundLog.reason)).one()
    assert reason.startswith("DATA cut at the session deadline, after ")


def test_refused_recipients_close_the_session_with_421(eng: Factory, served: Served) -> None:
    with smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=HANG) as client:
        client.ehlo()
        client.mail("mallory@evil.example")
        codes = [client.rcpt(f"nobody{n}@mb.example.com")[0] for n in range(3)]
        assert codes == [550, 550, 550]
        code, text = client.noop()
        assert (code, text[:6]) == (421, b"4.7.0 ")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_unknown_commands_count_as_errors(served: Served) -> None:
    with smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=HANG) as client:
        assert [client.docmd("XYZZY")[0] for _ in range(3)] == [500, 500, 500]
        assert client.noop()[0] == 421


def test_recipients_past_the_limit_are_not_errors(eng: Factory, served: Served) -> None:
    with smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=HANG) as client:
        client.ehlo()
        client.mail("alice@company.example")
        codes = [client.rcpt("eng@company.example")[0] for _ in range(55)]
        assert codes == [250] * 50 + [452] * 5
        assert client.noop()[0] == 250


def test_delivered_mail_starts_the_error_count_again(eng: Factory, served: Served) -> None:
    with smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=HANG) as client:
        assert [client.rcpt("nobody@mb.example.com")[0] for _ in range(2)] == [503, 503]
        assert client.send_message(make_mail()) == {}
        assert [client.rcpt("nobody@mb.example.com")[0] for _ in range(2)] == [503, 503]
        assert client.noop()[0] == 250


def test_a_slow_delivery_is_not_taken_for_a_slow_data(
    eng: Factory, settings: Settings, pipeline: Pipeline, db: Database
) -> None:
    """Once the final dot is read, the DATA rate no longer applies: a small
    message whose delivery outlasts the grace period gets its 250, not a cut."""

    async def slow_batch(items: Sequence[Delivery]) -> list[DeliveryReport]:
        await asyncio.sleep(3 * settings.mail_data_grace_seconds)
        return await asyncio.to_thread(deliver_items, pipeline, items)

    patient = dataclasses.replace(settings, mail_session_seconds=HANG)
    with (
        serving(patient, pipeline, Deliverer(slow_batch, lanes=1)) as served,
        smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=HANG) as client,
    ):
        client.sendmail("alice@company.example", ["eng@company.example"], make_mail().as_bytes())
    with db.reader() as session:
        assert session.scalars(select(InboundLog.status)).all() == ["accepted"]
