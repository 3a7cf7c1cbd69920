"""The `mailbridge` command: serve, migrate and administer.

Every failure a person can fix prints one line naming the problem and exits
with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session

from feed import admin, mailboxes
from feed.blobs import BlobStore
from feed.db import Database
from feed.errors import FeedError
from feed.retention import purge_inbound
from mailbridge.config import Settings, SettingsError, load_settings, retention_days
from mailbridge.migrate import alembic_config, current_revision, upgrade_database

EXIT_USAGE = 2


class CliError(Exception):
    """A problem the user can fix; str() is the message."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        result: int = args.func(settings, args)
        return result
    except (SettingsError, FeedError, CliError) as exc:
        print(f"mailbridge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailbridge", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the mail listeners and the web app")
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(func=cmd_serve)

    db = commands.add_parser("db", help="database schema").add_subparsers(required=True)
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    user = commands.add_parser("user", help="users").add_subparsers(required=True)
    user_add = user.add_parser("add", help="add a user")
    user_add.add_argument("email")
    user_add.add_argument("--name", required=True)
    user_add.add_argument("--admin", action="store_true")
    user_add.set_defaults(func=cmd_user_add)
    user_alias = user.add_parser("alias", help="let a user also post from another address")
    user_alias.add_argument("email")
    user_alias.add_argument("alias")
    user_alias.set_defaults(func=cmd_user_alias)

    group = commands.add_parser("group", help="groups").add_subparsers(required=True)
    group_add = group.add_parser("add", help="add a group")
    group_add.add_argument("slug")
    group_add.add_argument("--name", required=True)
    group_add.add_argument("--private", action="store_true")
    group_add.set_defaults(func=cmd_group_add)

    member = commands.add_parser("member", help="memberships").add_subparsers(required=True)
    member_add = member.add_parser("add", help="add a user to a group")
    member_add.add_argument("slug")
    member_add.add_argument("email")
    member_add.set_defaults(func=cmd_member_add)

    binding = commands.add_parser("binding", help="address bindings").add_subparsers(required=True)
    binding_add = binding.add_parser("add", help="bind an address to a group")
    binding_add.add_argument("address")
    binding_add.add_argument("--group", required=True)
    binding_add.add_argument(
        "--senders", default="members", help="members, anyone or domain:DOMAIN"
    )
    binding_add.set_defaults(func=cmd_binding_add)
    imap = binding.add_parser("add-imap", help="bind an IMAP mailbox to a group")
    imap.add_argument("name", help="a name for the binding, e.g. support")
    imap.add_argument("--group", required=True)
    imap.add_argument("--host", required=True)
    imap.add_argument("--port", type=int, default=None, help="default 993, or 143 with --tls none")
    imap.add_argument("--user", required=True)
    imap.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    imap.add_argument("--folder", default="INBOX")
    imap.add_argument("--tls", default="implicit", help="implicit (default) or none")
    imap.add_argument("--after", default="seen", help="seen (default), move:FOLDER or delete")
    imap.add_argument("--senders", default="members", help="members, anyone or domain:DOMAIN")
    imap.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="allow --tls none to a host other than this machine",
    )
    imap.set_defaults(func=cmd_binding_add_imap)
    remove = binding.add_parser("remove", help="remove an address or IMAP binding")
    remove.add_argument("binding", help="a bound address, or imap:NAME")
    remove.set_defaults(func=cmd_binding_remove)
    password = binding.add_parser("set-password", help="change an IMAP binding's password")
    password.add_argument("name")
    password.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    password.set_defaults(func=cmd_binding_set_password)
    imap_test = binding.add_parser("test", help="log in to an IMAP binding's mailbox")
    imap_test.add_argument("name")
    imap_test.set_defaults(func=cmd_binding_test)
    binding.add_parser("list", help="list bindings").set_defaults(func=cmd_binding_list)

    inbound = commands.add_parser("inbound", help="the inbound log").add_subparsers(required=True)
    purge = inbound.add_parser(
        "purge", help="delete old raw bytes of refused and ignored mail, and unreferenced blobs"
    )
    purge.add_argument(
        "--older-than",
        type=int,
        metavar="DAYS",
        help="default: the raw_retention_days setting (0 in it: keep them, sweep only)",
    )
    purge.set_defaults(func=cmd_inbound_purge)

    token = commands.add_parser("token", help="API tokens").add_subparsers(required=True)
    token_create = token.add_parser("create", help="create an API token for a user")
    token_create.add_argument("email")
    token_create.set_defaults(func=cmd_token_create)
    return parser


def open_database(settings: Settings) -> Database:
    """The database, refusing to run against a schema that is not at head."""
    head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
    try:
        current = current_revision(settings.database_url)
    except Exception as exc:  # the driver's own error names the problem
        raise CliError(f"cannot open the database {settings.database_url}: {exc}") from exc
    if current != head:
        raise CliError(
            f"the database schema is at {current or 'nothing'}, not {head}: "
            "run `mailbridge db upgrade` first"
        )
    return Database(settings.database_url)


def _in_transaction(settings: Settings, work: Callable[[Session], str]) -> int:
    db = open_database(settings)
    try:
        with db.transaction() as session:
            print(work(session))
    finally:
        db.dispose()
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from mailbridge.server import serve

    level = logging.getLevelName(args.log_level.upper())
    if not isinstance(level, int):
        raise CliError(f"unknown log level {args.log_level!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every SMTP command at INFO: only worth it when debugging.
    logging.getLogger("mail.log").setLevel(max(level, logging.WARNING))
    open_database(settings).dispose()
    serve(settings)
    return 0


def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.database_url)
    print(f"database upgraded: {current_revision(settings.database_url)}")
    return 0


def cmd_user_add(settings: Settings, args: argparse.Namespace) -> int:
    return _in_transaction(
        settings,
        lambda s: f"user {admin.add_user(s, args.email, args.name, is_admin=args.admin).email}",
    )


def cmd_user_alias(settings: Settings, args: argparse.Namespace) -> int:
    return _in_transaction(
        settings,
        lambda s: f"{admin.add_user_alias(s, args.email, args.alias).email} -> {args.email}",
    )


def cmd_group_add(settings: Settings, args: argparse.Namespace) -> int:
    return _in_transaction(
        settings,
        lambda s: f"group {admin.add_group(s, args.slug, args.name, private=args.private).slug}",
    )


def cmd_member_add(settings: Settings, args: argparse.Namespace) -> int:
    def work(session: Session) -> str:
        admin.add_member(session, args.slug, args.email)
        return f"{args.email} added to {args.slug}"

    return _in_transaction(settings, work)


def cmd_binding_add(settings: Settings, args: argparse.Namespace) -> int:
    def work(session: Session) -> str:
        binding = admin.add_binding(session, args.address, args.group, args.senders)
        return f"{binding.address} -> {args.group} (senders: {binding.sender_policy})"

    return _in_transaction(settings, work)


def cmd_binding_add_imap(settings: Settings, args: argparse.Namespace) -> int:
    password = _password_from_stdin(args)
    port = args.port if args.port is not None else (993 if args.tls == "implicit" else 143)
    spec = mailboxes.ImapSpec(
        args.name,
        args.group,
        args.host,
        port,
        args.user,
        password,
        folder=args.folder,
        tls=args.tls,
        after=args.after,
        senders=args.senders,
        allow_plaintext=args.allow_plaintext,
    )

    def work(session: Session) -> str:
        row = mailboxes.add_imap_binding(session, settings.secret_key, spec)
        where = f"{row.username}@{row.host}:{row.port}/{row.folder}"
        return f"imap:{row.name} ({where}) -> {args.group} (senders: {row.sender_policy})"

    return _in_transaction(settings, work)


def cmd_binding_remove(settings: Settings, args: argparse.Namespace) -> int:
    def work(session: Session) -> str:
        if args.binding.startswith("imap:"):
            mailboxes.remove_imap_binding(session, args.binding.removeprefix("imap:"))
        else:
            admin.remove_binding(session, args.binding)
        return f"{args.binding} removed (its posts stay)"

    return _in_transaction(settings, work)


def cmd_binding_set_password(settings: Settings, args: argparse.Namespace) -> int:
    password = _password_from_stdin(args)

    def work(session: Session) -> str:
        mailboxes.set_imap_password(session, settings.secret_key, args.name, password)
        return f"imap:{args.name}: password changed"

    return _in_transaction(settings, work)


def _password_from_stdin(args: argparse.Namespace) -> str:
    if not args.password_stdin:
        raise CliError("give the password on standard input with --password-stdin")
    return sys.stdin.readline().rstrip("\r\n")


def cmd_binding_test(settings: Settings, args: argparse.Namespace) -> int:
    from mailbridge.imap.probe import probe_binding

    db = open_database(settings)
    try:
        print(probe_binding(db, settings.secret_key, args.name))
    finally:
        db.dispose()
    return 0


def cmd_binding_list(settings: Settings, args: argparse.Namespace) -> int:
    db = open_database(settings)
    try:
        with db.reader() as session:
            rows = admin.list_bindings(session)
            imap_rows = mailboxes.list_imap_bindings(session)
    finally:
        db.dispose()
    for row in rows:
        print(f"{row.address}\t{row.group_slug}\t{row.sender_policy}")
    for imap in imap_rows:
        synced = imap.last_sync_at.isoformat(timespec="seconds") if imap.last_sync_at else "never"
        fields = [
            f"imap:{imap.name}",
            imap.group_slug,
            imap.sender_policy,
            f"{imap.username}@{imap.host}:{imap.port}/{imap.folder} ({imap.tls} TLS)",
            f"after {imap.after_import}",
            imap.state,
            f"last sync {synced}",
            f"last UID {imap.last_uid}",
        ]
        if imap.last_error:
            fields.append(f"error: {imap.last_error}")
        print("\t".join(fields))
    if not rows and not imap_rows:
        print("no bindings", file=sys.stderr)
    return 0


def cmd_inbound_purge(settings: Settings, args: argparse.Namespace) -> int:
    days = args.older_than if args.older_than is not None else retention_days(settings)
    if days is not None and days < 0:
        raise CliError(f"--older-than: expected a number of days, got {days}")
    db = open_database(settings)
    try:
        print(purge_inbound(db, BlobStore(settings.blob_dir), days))
    finally:
        db.dispose()
    return 0


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    return _in_transaction(
        settings, lambda s: f"token for {args.email}: {admin.create_token(s, args.email)}"
    )


if __name__ == "__main__":
    sys.exit(main())
