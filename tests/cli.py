"""Running the `mailbridge` command in tests: in-process, or `serve` as a process."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from mailbridge.cli import main


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> dict[str, str]:
    """MAILBRIDGE_* settings for a command run in this test's data folder and database."""
    env = {
        "MAILBRIDGE_DATA_DIR": str(tmp_path / "var"),
        "MAILBRIDGE_DATABASE_URL": database_url,
        "MAILBRIDGE_MAIL_DOMAIN": "mb.example.com",
    }
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`mailbridge ARGS...` in this process: exit code, stdout, stderr."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mailbridge serve exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")
