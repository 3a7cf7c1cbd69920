"""Settings: one typed object, from `mailbridge.toml` and `MAILBRIDGE_*` variables.

The environment wins over the file. A bad value stops start-up with one line
naming the setting and what is wrong (`SettingsError`); nothing here is a
module global, the loaded `Settings` is passed explicitly.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
ENV_PREFIX = "MAILBRIDGE_"
CONFIG_ENV = "MAILBRIDGE_CONFIG"
DEFAULT_CONFIG_FILE = "mailbridge.toml"


class SettingsError(Exception):
    """A setting is missing or malformed; str() is the one line to show."""


@dataclass(frozen=True)
class Listen:
    """A host and TCP port to listen on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Everything MailBridge needs to know about its installation."""

    data_dir: Path
    database_url: str
    mail_domain: str
    smtp_listen: Listen
    lmtp_listen: Listen
    http_listen: Listen
    max_message_size: int
    secret_key: str
    max_recipients: int = 50
    # Delivery worker processes; 0 runs deliveries in threads of the server.
    workers: int = 0
    # A refused message keeps its header and this many bytes of its body.
    refused_raw_bytes: int = 64 * 1024
    # Days the raw bytes of refused and ignored mail are kept (0: forever).
    raw_retention_days: int = 30
    # Bytes of mail received and not yet answered, across all SMTP/LMTP sessions.
    max_bytes_in_flight: int = 256 * MIB
    # Sessions on each mail listener (SMTP, LMTP); 0: derived from the
    # descriptor limit, keeping a reserve for the web, the database and IMAP.
    mail_max_connections: int = 0
    mail_max_connections_per_client: int = 20
    # A mail session ends after this long whatever it does (NOOP, RSET...).
    mail_session_seconds: float = 600.0
    # After the grace period a DATA must average at least this many bytes/s.
    mail_data_min_rate: int = 1024
    mail_data_grace_seconds: float = 30.0
    # Errors (4xx/5xx replies) a mail session may draw without delivering mail
    # before it is closed, as Postfix's smtpd_hard_error_limit.
    mail_max_errors: int = 20
    # Connections the embedded web server holds at once.
    http_max_connections: int = 200

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def spool_dir(self) -> Path:
        """Large messages being received (see mailbridge.spool)."""
        return self.data_dir / "spool"


def retention_days(settings: Settings) -> int | None:
    """Days refused and ignored raw mail is kept; None: forever."""
    return settings.raw_retention_days or None


def parse_listen(name: str, value: str) -> Listen:
    """`HOST:PORT` (IPv6 as `[::1]:2525`) to a `Listen`."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}: expected HOST:PORT, got {value!r}")
    return Listen(host, int(port))


def parse_size(name: str, value: str) -> int:
    """A positive byte count."""
    if not value.strip().isdigit() or int(value) <= 0:
        raise SettingsError(
            f"{ENV_PREFIX}{name.upper()}: expected a positive number of bytes, got {value!r}"
        )
    return int(value)


def parse_count(name: str, value: str) -> int:
    """A count of zero or more."""
    if not value.strip().isdigit():
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}: expected a whole number, got {value!r}")
    return int(value)


def parse_positive_count(name: str, value: str) -> int:
    """A count of one or more."""
    if not value.strip().isdigit() or int(value) <= 0:
        raise SettingsError(
            f"{ENV_PREFIX}{name.upper()}: expected a positive whole number, got {value!r}"
        )
    return int(value)


def parse_seconds(name: str, value: str) -> float:
    """A positive duration in seconds (fractions allowed)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise SettingsError(
            f"{ENV_PREFIX}{name.upper()}: expected a positive number of seconds, got {value!r}"
        )
    return seconds


def parse_domain(name: str, value: str) -> str:
    """A mail domain: letters, digits, dots and hyphens, at least one dot or 'localhost'."""
    domain = value.strip().lower().rstrip(".")
    labels = domain.split(".")
    if not domain or not all(label and _is_label(label) for label in labels):
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}: not a valid mail domain: {value!r}")
    return domain


def _is_label(label: str) -> bool:
    return len(label) <= 63 and all(c.isalnum() or c == "-" for c in label) and label[0] != "-"


def parse_database_url(name: str, value: str) -> str:
    if "://" not in value or not value.split("://", 1)[0]:
        raise SettingsError(
            f"{ENV_PREFIX}{name.upper()}: expected a SQLAlchemy URL such as "
            f"sqlite:///var/mailbridge.db or postgresql+psycopg://host/db, got {value!r}"
        )
    scheme = value.split("://", 1)[0]
    if scheme in {"postgres", "postgresql"}:
        # psycopg 3 is the driver we install; plain postgresql:// would ask for psycopg2.
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    return value


def _identity(name: str, value: str) -> str:
    return value


PARSERS: dict[str, Callable[[str, str], Any]] = {
    "data_dir": _identity,
    "database_url": parse_database_url,
    "mail_domain": parse_domain,
    "smtp_listen": parse_listen,
    "lmtp_listen": parse_listen,
    "http_listen": parse_listen,
    "max_message_size": parse_size,
    "max_recipients": parse_size,
    "workers": parse_count,
    "secret_key": _identity,
    "refused_raw_bytes": parse_size,
    "raw_retention_days": parse_count,
    "max_bytes_in_flight": parse_size,
    "mail_max_connections": parse_count,
    "mail_max_connections_per_client": parse_positive_count,
    "mail_session_seconds": parse_seconds,
    "mail_data_min_rate": parse_count,
    "mail_data_grace_seconds": parse_seconds,
    "mail_max_errors": parse_positive_count,
    "http_max_connections": parse_positive_count,
}

DEFAULTS: dict[str, str] = {
    "data_dir": "./var",
    "mail_domain": "localhost",
    "smtp_listen": "127.0.0.1:2525",
    "lmtp_listen": "127.0.0.1:2424",
    "http_listen": "127.0.0.1:8080",
    "max_message_size": str(25 * MIB),
    "max_recipients": "50",
    "workers": str(os.cpu_count() or 1),
    "refused_raw_bytes": str(64 * 1024),
    "raw_retention_days": "30",
    "max_bytes_in_flight": str(256 * MIB),
}


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: Path | None = None
) -> Settings:
    """Read the config file (optional) then the environment; validate everything."""
    env = os.environ if environ is None else environ
    raw: dict[str, str] = dict(DEFAULTS)
    raw.update(_read_config_file(config_file or Path(env.get(CONFIG_ENV, DEFAULT_CONFIG_FILE))))
    for key in PARSERS:
        if (ENV_PREFIX + key.upper()) in env:
            raw[key] = env[ENV_PREFIX + key.upper()]
    values = {key: PARSERS[key](key, raw[key]) for key in PARSERS if key in raw}
    data_dir = Path(values["data_dir"]).resolve()
    values["data_dir"] = data_dir
    values.setdefault("database_url", f"sqlite:///{data_dir / 'mailbridge.db'}")
    if not values.get("secret_key"):
        values["secret_key"] = _load_or_create_secret(data_dir)
    return Settings(**values)


def _read_config_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read the config file: {exc}") from exc
    unknown = sorted(set(data) - set(PARSERS))
    if unknown:
        raise SettingsError(f"{path}: unknown setting {unknown[0]!r}")
    return {key: str(value) for key, value in data.items()}


def _load_or_create_secret(data_dir: Path) -> str:
    """The secret key kept in the data folder, created (mode 0600) on first run."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise SettingsError(f"{ENV_PREFIX}SECRET_KEY: cannot create {path}: {exc}") from exc
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key
