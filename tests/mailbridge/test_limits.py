"""The pieces of the connection limits: settings, who a client is, the
descriptor budget and the log throttle."""

from __future__ import annotations

import dataclasses
import errno
import logging
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge.config import Settings, SettingsError, load_settings
from mailbridge.limits import (
    DESCRIPTOR_RESERVE,
    MIN_CONNECTIONS,
    RepeatedLogFilter,
    Throttle,
    client_key,
    mail_connection_limit,
)


def test_the_limits_have_defaults_and_read_the_environment(tmp_path: Path) -> None:
    defaults = load_settings({"MAILBRIDGE_DATA_DIR": str(tmp_path)}, tmp_path / "none.toml")
    assert (defaults.mail_max_connections, defaults.mail_max_connections_per_client) == (0, 20)
    assert (defaults.mail_session_seconds, defaults.mail_max_errors) == (600.0, 20)
    env = {
        "MAILBRIDGE_DATA_DIR": str(tmp_path),
        "MAILBRIDGE_MAIL_SESSION_SECONDS": "2.5",
        "MAILBRIDGE_MAIL_DATA_MIN_RATE": "0",
        "MAILBRIDGE_HTTP_MAX_CONNECTIONS": "50",
    }
    settings = load_settings(env, tmp_path / "none.toml")
    assert settings.mail_session_seconds == 2.5
    assert settings.mail_data_min_rate == 0
    assert settings.http_max_connections == 50


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("MAILBRIDGE_MAIL_SESSION_SECONDS", "ten", "expected a positive number of seconds"),
        ("MAILBRIDGE_MAIL_DATA_GRACE_SECONDS", "nan", "expected a positive number of seconds"),
        ("MAILBRIDGE_MAIL_MAX_CONNECTIONS_PER_CLIENT", "0", "expected a positive whole number"),
        ("MAILBRIDGE_MAIL_MAX_ERRORS", "-1", "expected a positive whole number"),
    ],
)
def test_a_bad_limit_names_itself(
    tmp_path: Path, variable: str, value: str, complaint: str
) -> None:
    env = {"MAILBRIDGE_DATA_DIR": str(tmp_path), variable: value}
    with pytest.raises(SettingsError) as caught:
        load_settings(env, tmp_path / "none.toml")
    assert str(caught.value) == f"{variable}: {complaint}, got {value!r}"


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("/run/mailbridge.sock", "/run/mailbridge.sock"),
    ],
)
def test_an_ipv6_client_is_its_slash_64(host: str, key: str) -> None:
    assert client_key(host) == key


@pytest.fixture
def descriptors() -> Iterator[None]:
    """This process's soft descriptor limit at 1,024 for one test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard descriptor limit ({hard}) is below 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_mail_limit_leaves_descriptors_for_the_rest(
    settings: Settings, descriptors: None
) -> None:
    derived = mail_connection_limit(settings)
    assert 2 * derived + settings.http_max_connections + DESCRIPTOR_RESERVE <= 1024
    assert mail_connection_limit(dataclasses.replace(settings, mail_max_connections=7)) == 7
    crowded = dataclasses.replace(settings, http_max_connections=5000)
    assert mail_connection_limit(crowded) == MIN_CONNECTIONS


def test_the_throttle_lets_one_through_per_interval_and_counts_the_rest() -> None:
    now = [1000.0]
    throttle = Throttle(interval=60, clock=lambda: now[0])
    assert throttle.admit("accept") == 0
    now[0] += 59
    assert [throttle.admit("accept") for _ in range(3)] == [None, None, None]
    assert throttle.admit("other") == 0
    now[0] += 1
    assert throttle.admit("accept") == 3
    assert throttle.admit("accept") is None


def _record(
    msg: str, error: BaseException | None = None, name: str = "waitress"
) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, ("x",), exc_info)


def test_the_filter_holds_back_repeated_descriptor_failures_only() -> None:
    log_filter = RepeatedLogFilter(interval=3600)
    emfile = OSError(errno.EMFILE, "Too many open files")
    first = _record("server accept() threw an exception %s", emfile)
    assert log_filter.filter(first)
    assert log_filter.filter(first)  # the same record at a second handler
    assert not log_filter.filter(_record("server accept() threw an exception %s", emfile))
    ebadf = OSError(errno.EBADF, "Bad file descriptor")
    assert log_filter.filter(_record("server accept() threw an exception %s", ebadf))
    assert log_filter.filter(_record("an ordinary warning %s"))
    assert log_filter.filter(_record("an ordinary warning %s"))
    as_argument = [_record("accept failed: %s") for _ in range(2)]
    for record in as_argument:
        record.args = (emfile,)
    assert [log_filter.filter(record) for record in as_argument] == [True, False]


def test_the_filter_holds_back_aiosmtpds_warnings_about_client_commands() -> None:
    log_filter = RepeatedLogFilter(interval=3600)
    assert log_filter.filter(_record("%r unrecognised: %s", name="mail.log"))
    assert not log_filter.filter(_record("%r unrecognised: %s", name="mail.log"))
    assert log_filter.filter(_record("%r over limit for %s", name="mail.log"))
