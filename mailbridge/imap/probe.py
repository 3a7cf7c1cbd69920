"""`mailbridge binding test NAME`: log in to a bound mailbox and say what is there."""

from __future__ import annotations

import asyncio

from feed.db import Database
from feed.errors import FeedError
from feed.mailboxes import AfterImport, get_imap_binding
from mailbridge.imap.client import ImapClient, ImapError, Mailbox
from mailbridge.imap.sync import sync_target


class ProbeError(FeedError):
    """The mailbox could not be reached; the message says at which step."""


def probe_binding(db: Database, secret_key: str, name: str) -> str:
    with db.reader() as session:
        target = sync_target(get_imap_binding(session, name), secret_key)
    try:
        return asyncio.run(_probe(name, target.mailbox, target.after))
    except ImapError as exc:
        raise ProbeError(f"imap:{name}: {exc}") from exc


async def _probe(name: str, mailbox: Mailbox, after: AfterImport) -> str:
    client = await ImapClient.open(mailbox)
    try:
        folder = client.folder
        # What the importer would only find out after posting the first message.
        if folder.read_only:
            raise ImapError(
                f"folder {mailbox.folder!r} is read-only for {mailbox.username}: "
                f"the after-import action ({after}) cannot be applied"
            )
        if after.action == "move" and not await client.folder_exists(after.folder):
            raise ImapError(
                f"the folder to move imported mail to, {after.folder!r}, does not exist"
            )
        push = "IDLE" if client.has("IDLE") else "polling (no IDLE)"
        return (
            f"imap:{name}: logged in as {mailbox.username} at {mailbox.host}:{mailbox.port}; "
            f"folder {mailbox.folder}: {folder.exists} message(s), "
            f"UIDVALIDITY {folder.uidvalidity}; {push}"
        )
    finally:
        await client.close()
