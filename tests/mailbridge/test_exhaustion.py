"""`mailbridge serve` under a 1,024-descriptor limit against hostile clients.

Many idle SMTP connections from many addresses, or many HTTP requests left
half-sent, must not stop the other doors nor flood the log: the connection
limits keep descriptors in reserve, an idle session gives way to a newcomer
when a listener is full, and a failing accept is logged once per interval.
"""

from __future__ import annotations

import contextlib
import os
import resource
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailbridge.limits import DESCRIPTOR_RESERVE
from tests.cli import free_port, run, wait_for_port

DESCRIPTOR_LIMIT = 1024
# What the log may hold after the flood: start-up lines and a few throttled
# warnings (before the limits: 488,000 "Too many open files" lines in 30 s).
MAX_LOG_LINES = 200

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Serving:
    process: subprocess.Popen[bytes]
    smtp_port: int
    http_port: int
    log: Path


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """This test process opens well over 1,024 sockets of its own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard descriptor limit ({hard}) is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTOR_LIMIT, DESCRIPTOR_LIMIT))


@pytest.fixture
def overrides() -> dict[str, str]:
    """Settings for `serve` beyond the defaults (none unless a test says)."""
    return {}


@pytest.fixture
def serving(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    many_descriptors: None,
    overrides: dict[str, str],
) -> Iterator[Serving]:
    """`mailbridge serve` with at most 1,024 descriptors, its log in a file."""
    run(capsys, "user", "add", "alice@company.example", "--name", "Alice")
    run(capsys, "group", "add", "eng", "--name", "Engineering")
    run(capsys, "member", "add", "eng", "alice@company.example")
    run(capsys, "binding", "add", "eng@company.example", "--group", "eng")
    smtp_port, lmtp_port, http_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        **cli_env,
        "MAILBRIDGE_SMTP_LISTEN": f"127.0.0.1:{smtp_port}",
        "MAILBRIDGE_LMTP_LISTEN": f"127.0.0.1:{lmtp_port}",
        "MAILBRIDGE_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "MAILBRIDGE_WORKERS": "1",
        **overrides,
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailbridge.cli", "serve"],
            env=env,
            stderr=sink,
            preexec_fn=_limit_descriptors,
        )
    try:
        wait_for_port(smtp_port, process)
        wait_for_port(http_port, process)
        yield Serving(process, smtp_port, http_port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def open_idle(port: int, count: int, per_address: int) -> list[socket.socket]:
    """`count` connections that never say a word, `per_address` from each of
    127.0.1.1, 127.0.1.2, ...: a crowd of clients, not one."""
    sockets = []
    for index in range(count):
        source = f"127.0.1.{1 + index // per_address}"
        with contextlib.suppress(OSError):
            sockets.append(socket.create_connection(("127.0.0.1", port), 2, (source, 0)))
    return sockets


def healthz(port: int) -> int:
    url = f"http://127.0.0.1:{port}/healthz"
    with urllib.request.urlopen(url, timeout=15) as response:
        return int(response.status)


def member_mail() -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"] = "alice@company.example", "eng@company.example"
    message["Subject"] = "Still there?"
    message.set_content("The doors hold.\n")
    return message


def still_open(sock: socket.socket) -> bool:
    """Whether the server has kept this connection (read what it said)."""
    sock.setblocking(False)
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def log_lines(log: Path) -> int:
    return len(log.read_bytes().splitlines())


def test_idle_smtp_crowd_leaves_the_web_and_a_members_mail_answered(serving: Serving) -> None:
    crowd = open_idle(serving.smtp_port, 1100, per_address=20)
    try:
        time.sleep(2)  # the crowd is now idle; the server has seen all of it
        assert healthz(serving.http_port) == 200
        with smtplib.SMTP("127.0.0.1", serving.smtp_port, timeout=15) as client:
            assert client.send_message(member_mail()) == {}
        time.sleep(3)
        assert log_lines(serving.log) < MAX_LOG_LINES
        held = sum(still_open(sock) for sock in crowd)
        assert 0 < held <= (DESCRIPTOR_LIMIT - DESCRIPTOR_RESERVE) // 2
    finally:
        for sock in crowd:
            sock.close()
    assert serving.process.poll() is None


def test_half_sent_http_requests_leave_healthz_answered(serving: Serving) -> None:
    partial = open_idle(serving.http_port, 300, per_address=300)
    try:
        for sock in partial:
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        time.sleep(2)
        assert healthz(serving.http_port) == 200
        time.sleep(1)
        assert log_lines(serving.log) < MAX_LOG_LINES
    finally:
        for sock in partial:
            sock.close()
    assert serving.process.poll() is None


@pytest.mark.parametrize(
    "overrides",
    [
        {
            "MAILBRIDGE_MAIL_MAX_CONNECTIONS": "5000",
            "MAILBRIDGE_MAIL_MAX_CONNECTIONS_PER_CLIENT": "5000",
        }
    ],
)
def test_with_limits_set_too_high_the_log_holds_and_the_doors_recover(
    serving: Serving,
) -> None:
    crowd = open_idle(serving.smtp_port, 1100, per_address=1100)
    time.sleep(3)  # descriptors run out: every accept fails for a while
    flooded_lines = log_lines(serving.log)
    for sock in crowd:
        sock.close()
    assert flooded_lines < MAX_LOG_LINES
    assert b"Too many open files" in serving.log.read_bytes()  # it did run out
    deadline = time.monotonic() + 30
    while True:
        try:
            assert healthz(serving.http_port) == 200
            with smtplib.SMTP("127.0.0.1", serving.smtp_port, timeout=15) as client:
                assert client.send_message(member_mail()) == {}
            break
        except (OSError, smtplib.SMTPException):
            assert time.monotonic() < deadline, "the doors did not recover"
            time.sleep(0.5)
    assert serving.process.poll() is None
