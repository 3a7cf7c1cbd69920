"""Settings: defaults, file, environment, and one clear line for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbridge.config import MIB, Listen, SettingsError, load_settings


def test_it_has_working_defaults(tmp_path: Path) -> None:
    settings = load_settings({"MAILBRIDGE_DATA_DIR": str(tmp_path)}, tmp_path / "none.toml")
    assert settings.smtp_listen == Listen("127.0.0.1", 2525)
    assert settings.lmtp_listen == Listen("127.0.0.1", 2424)
    assert settings.http_listen == Listen("127.0.0.1", 8080)
    assert settings.max_message_size == 25 * MIB
    assert settings.database_url == f"sqlite:///{tmp_path / 'mailbridge.db'}"


def test_it_generates_the_secret_key_once_into_the_data_dir(tmp_path: Path) -> None:
    env = {"MAILBRIDGE_DATA_DIR": str(tmp_path)}
    first = load_settings(env, tmp_path / "none.toml").secret_key
    second = load_settings(env, tmp_path / "none.toml").secret_key
    assert first == second
    assert len(first) >= 48
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "mailbridge.toml"
    config.write_text('mail_domain = "file.example"\nsmtp_listen = "127.0.0.1:2600"\n')
    env = {"MAILBRIDGE_DATA_DIR": str(tmp_path), "MAILBRIDGE_MAIL_DOMAIN": "env.example"}
    settings = load_settings(env, config)
    assert settings.mail_domain == "env.example"
    assert settings.smtp_listen == Listen("127.0.0.1", 2600)


def test_a_postgres_url_gets_the_psycopg_driver(tmp_path: Path) -> None:
    env = {
        "MAILBRIDGE_DATA_DIR": str(tmp_path),
        "MAILBRIDGE_DATABASE_URL": "postgresql://mb@db.example/mailbridge",
    }
    url = load_settings(env, tmp_path / "none.toml").database_url
    assert url == "postgresql+psycopg://mb@db.example/mailbridge"


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("MAILBRIDGE_SMTP_LISTEN", "nope", "MAILBRIDGE_SMTP_LISTEN: expected HOST:PORT"),
        ("MAILBRIDGE_HTTP_LISTEN", "127.0.0.1:99999", "MAILBRIDGE_HTTP_LISTEN: expected HOST:PORT"),
        ("MAILBRIDGE_MAX_MESSAGE_SIZE", "-5", "MAILBRIDGE_MAX_MESSAGE_SIZE: expected a positive"),
        (
            "MAILBRIDGE_MAIL_DOMAIN",
            "bad domain!",
            "MAILBRIDGE_MAIL_DOMAIN: not a valid mail domain",
        ),
        (
            "MAILBRIDGE_DATABASE_URL",
            "mailbridge.db",
            "MAILBRIDGE_DATABASE_URL: expected a SQLAlchemy",
        ),
    ],
)
def test_a_bad_setting_names_itself(
    tmp_path: Path, variable: str, value: str, complaint: str
) -> None:
    env = {"MAILBRIDGE_DATA_DIR": str(tmp_path), variable: value}
    with pytest.raises(SettingsError) as caught:
        load_settings(env, tmp_path / "none.toml")
    assert str(caught.value).startswith(complaint)
    assert "\n" not in str(caught.value)


def test_an_unknown_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "mailbridge.toml"
    config.write_text('smtp_lisen = "127.0.0.1:25"\n')
    with pytest.raises(SettingsError, match="unknown setting 'smtp_lisen'"):
        load_settings({"MAILBRIDGE_DATA_DIR": str(tmp_path)}, config)
