"""IMAP bindings through the `mailbridge` command and a real `mailbridge serve`."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from feed.db import Database
from feed.posts import Post
from mailbridge.config import Settings
from mailbridge.imap.client import IMPORTED_KEYWORD
from mailbridge.pipeline.deliver import Pipeline
from tests.cli import free_port, run, wait_for_port
from tests.imap.conftest import USERS
from tests.imap.dovecot import Dovecot
from tests.imap.dovecot_config import HOST
from tests.imap.harness import FAST, add_imap, importing, posts, state, until


def mail(number: int) -> bytes:
    return (
        f"From: Carol <carol@customer.example>\r\nTo: support@company.example\r\n"
        f"Subject: Case {number}\r\nMessage-ID: <case-{number}@customer.example>\r\n"
        f"\r\nPlease look at case {number}.\r\n" + "Details of the problem.\r\n" * 40
    ).encode()


def test_binding_commands_add_test_and_list_an_imap_mailbox(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dovecot: Dovecot,
) -> None:
    dovecot.append("alice", "INBOX", mail(1))
    assert run(capsys, "group", "add", "support", "--name", "Support")[0] == 0
    code, out, err = add_imap(capsys, monkeypatch, dovecot, "wrong-password")
    assert code == 0, err
    assert (
        out.strip() == f"imap:desk (alice@{HOST}:{dovecot.port}/INBOX) -> support (senders: anyone)"
    )
    code, _, err = run(capsys, "binding", "test", "desk")
    assert code == 2
    assert err.startswith("mailbridge: error: imap:desk: login as alice")
    assert "AUTHENTICATIONFAILED" in err
    assert "wrong-password" not in err
    code, _, err = add_imap(capsys, monkeypatch, dovecot, USERS["alice"])
    assert (code, err.strip()) == (
        2,
        "mailbridge: error: an IMAP binding named desk already exists",
    )


def test_binding_test_reports_the_folder(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dovecot: Dovecot,
) -> None:
    for number in (1, 2):
        dovecot.append("alice", "INBOX", mail(number))
    run(capsys, "group", "add", "support", "--name", "Support")
    assert add_imap(capsys, monkeypatch, dovecot, USERS["alice"])[0] == 0
    code, out, _ = run(capsys, "binding", "test", "desk")
    validity = dovecot.uidvalidity("alice", "INBOX")
    assert code == 0
    assert out.strip() == (
        f"imap:desk: logged in as alice at {HOST}:{dovecot.port}; folder INBOX: 2 message(s), "
        f"UIDVALIDITY {validity}; IDLE"
    )
    code, out, _ = run(capsys, "binding", "list")
    fields = out.strip().split("\t")
    assert fields[:6] == [
        "imap:desk",
        "support",
        "anyone",
        f"alice@{HOST}:{dovecot.port}/INBOX (none TLS)",
        "after seen",
        "new",
    ]
    code, _, err = add_imap(capsys, monkeypatch, dovecot, "pw", "--after", "archive")
    assert (code, err.strip()) == (
        2,
        "mailbridge: error: unknown after-import action 'archive': use seen, move:FOLDER or delete",
    )


def test_binding_test_finds_a_missing_move_folder_before_any_mail_is_posted(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dovecot: Dovecot,
) -> None:
    run(capsys, "group", "add", "support", "--name", "Support")
    assert add_imap(capsys, monkeypatch, dovecot, USERS["alice"], "--after", "move:Done")[0] == 0
    code, _, err = run(capsys, "binding", "test", "desk")
    assert (code, err.strip()) == (
        2,
        "mailbridge: error: imap:desk: the folder to move imported mail to, 'Done', does not exist",
    )
    dovecot.create_folder("alice", "Done")
    code, out, _ = run(capsys, "binding", "test", "desk")
    assert code == 0
    assert "logged in as alice" in out


@contextmanager
def serving(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    smtp = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailbridge.cli", "serve", "--log-level=WARNING"],
        env={
            **env,
            "MAILBRIDGE_SMTP_LISTEN": f"127.0.0.1:{smtp}",
            "MAILBRIDGE_LMTP_LISTEN": f"127.0.0.1:{free_port()}",
            "MAILBRIDGE_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        },
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # so that a SIGKILL can take the workers too
    )
    try:
        wait_for_port(smtp, process)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


@pytest.mark.slow
def test_serve_killed_mid_import_and_restarted_posts_each_message_once(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dovecot: Dovecot,
) -> None:
    total = 300
    for number in range(total):
        dovecot.append("alice", "INBOX", mail(number))
    run(capsys, "group", "add", "support", "--name", "Support")
    assert add_imap(capsys, monkeypatch, dovecot, USERS["alice"])[0] == 0
    engine = create_engine(cli_env["MAILBRIDGE_DATABASE_URL"], poolclass=NullPool)

    def posts() -> int:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Post)) or 0

    def distinct() -> int:
        with engine.connect() as conn:
            return conn.scalar(select(func.count(func.distinct(Post.message_id)))) or 0

    env = {**os.environ, **cli_env}
    try:
        with serving(env) as process:
            wait_until(lambda: posts() >= 20, "the import to start")
            os.killpg(process.pid, signal.SIGKILL)  # the server and its workers, mid-import
            process.wait(timeout=30)
        killed_at = posts()
        assert killed_at < total, "the import ended before the kill: use more messages"
        with serving(env):
            wait_until(lambda: posts() >= total, "every message after the restart", 120)
            wait_until(lambda: flagged(dovecot) == total, "every message flagged", 30)
            time.sleep(1)  # a late duplicate would show up here
            assert posts() == distinct() == total
    finally:
        engine.dispose()


def flagged(dovecot: Dovecot) -> int:
    return sum(IMPORTED_KEYWORD in f for f in dovecot.flags("alice", "INBOX").values())


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_new_password_takes_effect_at_once_and_a_removed_binding_stops(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    pipeline: Pipeline,
    db: Database,
    dovecot: Dovecot,
) -> None:
    monkeypatch.setenv("MAILBRIDGE_SECRET_KEY", settings.secret_key)  # the importer's key
    dovecot.append("alice", "INBOX", mail(1))
    run(capsys, "group", "add", "support", "--name", "Support")
    assert add_imap(capsys, monkeypatch, dovecot, "an-old-password")[0] == 0

    def set_password(password: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
        return run(capsys, "binding", "set-password", "desk", "--password-stdin")

    async def scenario() -> None:
        async with importing(pipeline, settings):
            await until(lambda: state(db, "desk")[0] == "refused", "the old password to fail")
            assert await asyncio.to_thread(set_password, USERS["alice"]) == (
                0,
                "imap:desk: password changed\n",
                "",
            )
            await until(lambda: posts(db) == 1, "the import with the new password")
            removed = await asyncio.to_thread(run, capsys, "binding", "remove", "imap:desk")
            assert removed[:2] == (0, "imap:desk removed (its posts stay)\n")
            await asyncio.sleep(3 * FAST.refresh)  # the service notices the removal
            await asyncio.to_thread(dovecot.append, "alice", "INBOX", mail(2))
            await asyncio.sleep(2)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert posts(db) == 1
    assert dovecot.message_count("alice", "INBOX") == 2
    assert set_password("whatever")[2].strip() == (
        "mailbridge: error: no IMAP binding named 'desk'"
    )
