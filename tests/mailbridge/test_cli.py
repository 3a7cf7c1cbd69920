"""The `mailbridge` command: admin commands, their errors, and a real `serve`."""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.cli import free_port, run, wait_for_port


def test_admin_commands_set_up_a_group(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "user", "add", "Alice@Company.example", "--name", "Alice")[0] == 0
    assert run(capsys, "group", "add", "eng", "--name", "Engineering", "--private")[0] == 0
    assert run(capsys, "member", "add", "eng", "alice@company.example")[0] == 0
    code, out, _ = run(capsys, "user", "alias", "alice@company.example", "a.martin@company.example")
    assert (code, out.strip()) == (0, "a.martin@company.example -> alice@company.example")
    code, out, _ = run(
        capsys,
        "binding",
        "add",
        "eng@company.example",
        "--group",
        "eng",
        "--senders",
        "domain:company.example",
    )
    assert code == 0
    code, out, _ = run(capsys, "binding", "list")
    assert out.split() == ["eng@company.example", "eng", "domain:company.example"]
    code, out, _ = run(capsys, "token", "create", "alice@company.example")
    assert code == 0
    assert out.split()[-1].startswith("mb_")


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("member", "add", "nope", "alice@company.example"), "no group 'nope'"),
        (("member", "add", "eng", "carol@company.example"), "no user with address"),
        (("user", "add", "alice@company.example", "--name", "A"), "already exists"),
        (("group", "add", "eng", "--name", "Again"), "group eng already exists"),
        (("group", "add", "Bad Slug", "--name", "x"), "invalid group slug"),
        (("binding", "add", "eng@company.example", "--group", "eng"), "already bound"),
        (
            ("binding", "add", "x@company.example", "--group", "eng", "--senders", "all"),
            "unknown sender policy",
        ),
        (("user", "add", "not-an-address", "--name", "X"), "invalid address"),
    ],
)
def test_bad_admin_input_exits_2_with_one_clear_line(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    complaint: str,
) -> None:
    run(capsys, "user", "add", "alice@company.example", "--name", "Alice")
    run(capsys, "group", "add", "eng", "--name", "Engineering")
    run(capsys, "binding", "add", "eng@company.example", "--group", "eng")
    code, _, err = run(capsys, *args)
    assert code == 2
    assert err.startswith("mailbridge: error: ")
    assert complaint in err
    assert err.count("\n") == 1


def test_a_bad_setting_stops_the_command_with_its_name(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILBRIDGE_SMTP_LISTEN", "port-25")
    code, _, err = run(capsys, "binding", "list")
    assert code == 2
    assert "MAILBRIDGE_SMTP_LISTEN" in err


def test_commands_refuse_an_unmigrated_database(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILBRIDGE_DATA_DIR", str(tmp_path / "fresh"))
    monkeypatch.delenv("MAILBRIDGE_DATABASE_URL", raising=False)
    code, _, err = run(capsys, "binding", "list")
    assert code == 2
    assert "mailbridge db upgrade" in err
    assert run(capsys, "db", "upgrade")[0] == 0
    assert run(capsys, "binding", "list")[0] == 0


@pytest.mark.slow
def test_serve_accepts_mail_and_serves_it_over_the_api(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "user", "add", "alice@company.example", "--name", "Alice")
    run(capsys, "group", "add", "eng", "--name", "Engineering")
    run(capsys, "member", "add", "eng", "alice@company.example")
    run(capsys, "binding", "add", "eng@company.example", "--group", "eng")
    token = run(capsys, "token", "create", "alice@company.example")[1].split()[-1]
    smtp_port, lmtp_port, http_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        **cli_env,
        "MAILBRIDGE_SMTP_LISTEN": f"127.0.0.1:{smtp_port}",
        "MAILBRIDGE_LMTP_LISTEN": f"127.0.0.1:{lmtp_port}",
        "MAILBRIDGE_HTTP_LISTEN": f"127.0.0.1:{http_port}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "mailbridge.cli", "serve"], env=env, stderr=subprocess.PIPE
    )
    try:
        wait_for_port(smtp_port, process)
        wait_for_port(http_port, process)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = (
            "alice@company.example",
            "eng@company.example",
            "Hello from serve",
        )
        message.set_content("It works.\n")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            assert client.send_message(message) == {}
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/api/v1/groups/eng/threads",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            threads = json.load(response)["threads"]
        assert [t["subject"] for t in threads] == ["Hello from serve"]
    finally:
        process.terminate()
        process.wait(timeout=20)
        assert process.stderr is not None
        process.stderr.close()


def test_binding_remove_unbinds_an_address(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "group", "add", "eng", "--name", "Engineering")
    run(capsys, "binding", "add", "eng@company.example", "--group", "eng")
    code, out, _ = run(capsys, "binding", "remove", "Eng@Company.example")
    assert (code, out.strip()) == (0, "Eng@Company.example removed (its posts stay)")
    code, out, err = run(capsys, "binding", "list")
    assert (out, err.strip()) == ("", "no bindings")
    code, _, err = run(capsys, "binding", "remove", "eng@company.example")
    assert (code, err.strip()) == (2, "mailbridge: error: address eng@company.example is not bound")
