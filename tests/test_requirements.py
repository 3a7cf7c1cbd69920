"""The skip-here, fail-in-CI rule for tests that need a system package."""

from __future__ import annotations

import pytest

from tests.requirements import require


def test_a_missing_tool_skips_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install the dovecot-imapd package"):
        require(False, "/usr/sbin/dovecot", "dovecot-imapd")


def test_a_missing_tool_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run these tests"):
        require(False, "/usr/bin/chromium", "chromium")


def test_a_present_tool_neither_skips_nor_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require(True, "/usr/bin/true", "coreutils")
