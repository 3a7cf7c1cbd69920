"""IMAP bindings: an existing mailbox feeds a group (admin services).

An admin names the binding, the server, the account, the folder and what
to do with a message once it is posted; the password is sealed at rest
(feed.credentials) and never shown back.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from feed.admin import get_group, sender_policy
from feed.base import utcnow
from feed.bindings import ImapBinding
from feed.credentials import seal
from feed.errors import AlreadyExistsError, InvalidInputError, NotFoundError

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
TLS_MODES = ("implicit", "none")
# RFC 3501 §9: mailbox names are astrings; we refuse the few characters that
# would need quoting tricks in our commands rather than guess at them.
_BAD_FOLDER_CHARS = frozenset('\r\n"\\\0')


@dataclass(frozen=True)
class AfterImport:
    """What happens to a message in the mailbox once its post is committed."""

    action: str  # seen | move | delete
    folder: str = ""

    def __str__(self) -> str:
        return f"move:{self.folder}" if self.action == "move" else self.action


def parse_after(text: str) -> AfterImport:
    value = text.strip()
    if value.lower() in {"seen", "delete"}:
        return AfterImport(value.lower())
    if value.lower().startswith("move:"):
        folder = value[len("move:") :]
        _check_folder(folder, "--after move:")
        return AfterImport("move", folder)
    raise InvalidInputError(
        f"unknown after-import action {text!r}: use seen, move:FOLDER or delete"
    )


@dataclass(frozen=True)
class ImapSpec:
    """An IMAP binding as an admin describes it."""

    name: str
    group_slug: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    folder: str = "INBOX"
    tls: str = "implicit"
    after: str = "seen"
    senders: str = "members"
    allow_plaintext: bool = False


@dataclass(frozen=True)
class ImapBindingInfo:
    name: str
    group_slug: str
    host: str
    port: int
    tls: str
    username: str
    folder: str
    after_import: str
    sender_policy: str
    state: str
    last_error: str | None
    last_sync_at: datetime | None
    last_uid: int


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def add_imap_binding(session: Session, secret_key: str, spec: ImapSpec) -> ImapBinding:
    _validate(spec)
    group = get_group(session, spec.group_slug)
    policy = sender_policy(spec.senders)
    if session.scalar(select(ImapBinding.id).where(ImapBinding.name == spec.name)):
        raise AlreadyExistsError(f"an IMAP binding named {spec.name} already exists")
    binding = ImapBinding(
        name=spec.name,
        group_id=group.id,
        sender_policy=str(policy),
        host=spec.host,
        port=spec.port,
        tls=spec.tls,
        username=spec.username,
        password_sealed=seal(secret_key, spec.password),
        folder=spec.folder,
        after_import=str(parse_after(spec.after)),
    )
    session.add(binding)
    session.flush()
    return binding


def get_imap_binding(session: Session, name: str) -> ImapBinding:
    binding = session.scalar(select(ImapBinding).where(ImapBinding.name == name))
    if binding is None:
        raise NotFoundError(f"no IMAP binding named {name!r}")
    return binding


def remove_imap_binding(session: Session, name: str) -> None:
    """Stop importing from a mailbox; its posts and inbound log stay."""
    session.delete(get_imap_binding(session, name))
    session.flush()


def set_imap_password(session: Session, secret_key: str, name: str, password: str) -> None:
    """A new password (the binding's task reconnects with it at once, even
    if its old password was refused moments ago)."""
    if not password:
        raise InvalidInputError("an IMAP binding needs a password (read from standard input)")
    binding = get_imap_binding(session, name)
    binding.password_sealed = seal(secret_key, password)
    session.flush()
    record_state(session, binding.id, "new")


def list_imap_bindings(session: Session) -> list[ImapBindingInfo]:
    rows = session.scalars(select(ImapBinding).order_by(ImapBinding.name))
    return [
        ImapBindingInfo(
            row.name,
            row.group.slug,
            row.host,
            row.port,
            row.tls,
            row.username,
            row.folder,
            row.after_import,
            row.sender_policy,
            row.state,
            row.last_error,
            row.last_sync_at,
            row.last_uid,
        )
        for row in rows
    ]


def _validate(spec: ImapSpec) -> None:
    if not NAME_RE.match(spec.name):
        raise InvalidInputError(
            f"invalid IMAP binding name {spec.name!r}: use 1-64 lower-case letters, "
            "digits, dots, hyphens and underscores"
        )
    if not spec.host or any(c.isspace() for c in spec.host):
        raise InvalidInputError(f"invalid IMAP host {spec.host!r}")
    if not 0 < spec.port < 65536:
        raise InvalidInputError(f"invalid IMAP port {spec.port}: use 1-65535")
    if spec.tls not in TLS_MODES:
        raise InvalidInputError(f"unknown TLS mode {spec.tls!r}: use implicit or none")
    if spec.tls == "none" and not is_loopback(spec.host) and not spec.allow_plaintext:
        raise InvalidInputError(
            f"plain IMAP to {spec.host} would send the password in clear: use --tls implicit, "
            "or --allow-plaintext if the network is trusted"
        )
    if not spec.username:
        raise InvalidInputError("an IMAP binding needs a user name")
    if not spec.password:
        raise InvalidInputError("an IMAP binding needs a password (read from standard input)")
    _check_folder(spec.folder, "--folder")
    after = parse_after(spec.after)
    if after.action == "move" and _same_folder(after.folder, spec.folder):
        raise InvalidInputError(
            f"--after move:{after.folder} would move imported mail back into the bound "
            "folder, to be imported again: name another folder"
        )


def _same_folder(a: str, b: str) -> bool:
    # INBOX is case-insensitive (RFC 3501 §5.1); other names are not.
    return a == b or (a.upper() == "INBOX" and b.upper() == "INBOX")


def _check_folder(folder: str, option: str) -> None:
    if not folder or len(folder) > 255 or _BAD_FOLDER_CHARS & set(folder):
        raise InvalidInputError(f"invalid folder name {folder!r} for {option}")


# Sync state, read and written by the IMAP door (mailbridge.imap).


@dataclass(frozen=True)
class SyncCursor:
    uidvalidity: int | None
    last_uid: int
    stuck_uid: int | None
    stuck_attempts: int


def read_cursor(session: Session, binding_id: int) -> SyncCursor | None:
    row = session.execute(
        select(
            ImapBinding.uidvalidity,
            ImapBinding.last_uid,
            ImapBinding.stuck_uid,
            ImapBinding.stuck_attempts,
        ).where(ImapBinding.id == binding_id)
    ).first()
    return SyncCursor(*row) if row else None


def restart_cursor(session: Session, binding_id: int, uidvalidity: int) -> None:
    """A new UIDVALIDITY (or the first sync): the folder is read from the start."""
    session.execute(
        update(ImapBinding)
        .where(ImapBinding.id == binding_id)
        .values(uidvalidity=uidvalidity, last_uid=0, stuck_uid=None, stuck_attempts=0)
    )


def record_state(
    session: Session,
    binding_id: int,
    state: str,
    error: str | None = None,
    *,
    synced: bool = False,
) -> None:
    values: dict[str, object] = {"state": state, "last_error": error, "state_changed_at": utcnow()}
    if synced:
        values["last_sync_at"] = values["state_changed_at"]
    session.execute(update(ImapBinding).where(ImapBinding.id == binding_id).values(**values))
