"""A small, typed IMAP client for the importer, on aioimaplib.

Every command has a deadline (aioimaplib can wait forever on a server that
says BYE during IDLE, or on a dead connection), and every failure becomes an
`ImapError` whose message says what went wrong in words an admin can act
on. Only what the importer needs: UIDs, whole messages, flags, MOVE and
EXPUNGE (RFC 3501, RFC 6851 MOVE, RFC 4315 UIDPLUS, RFC 2177 IDLE).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aioimaplib

from mailbridge.imap.names import quote_mailbox

T = TypeVar("T")
COMMAND_TIMEOUT = 30.0
# Keywords (RFC 3501 §2.3.2 atoms): on every message we imported, and on
# one we gave up, left in the folder for a person to look at.
IMPORTED_KEYWORD = "$MailBridge"
FAILED_KEYWORD = "$MailBridgeFailed"

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_EXISTS = re.compile(rb"^(\d+) EXISTS")
_FETCH_HEAD = re.compile(rb"^\d+ FETCH \(")
_FETCH_UID = re.compile(rb"UID (\d+)")
_LITERAL = re.compile(rb"\{(\d+)\}$")
_PUSH_WORTH_A_SYNC = re.compile(rb"^\d+ (EXISTS|EXPUNGE)|^BYE", re.IGNORECASE)


def _without_login(record: logging.LogRecord) -> bool:
    """aioimaplib logs each command it sends at DEBUG, masking the password
    as given, not as quoted on the wire (a \" or \\ in it escapes the mask):
    its LOGIN lines are dropped whole."""
    message = record.msg if isinstance(record.msg, str) else ""
    return not (message.startswith("Sending") and " LOGIN " in message)


logging.getLogger("aioimaplib.aioimaplib").addFilter(_without_login)


class ImapError(Exception):
    """An IMAP failure, with a message fit for `mailbridge binding list`."""


class ImapAuthenticationError(ImapError):
    """The server refused the login: the credentials, unless `temporary`
    (`[UNAVAILABLE]`, RFC 5530 §3: its authentication is down for a while)."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


class ImapFolderError(ImapError):
    pass


@dataclass(frozen=True)
class Mailbox:
    """How to reach one IMAP folder."""

    host: str
    port: int
    tls: bool
    username: str
    password: str = field(repr=False)  # never in a log line or a traceback
    folder: str = "INBOX"


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    exists: int
    read_only: bool = False  # no flag, move or delete possible (RFC 3501 §6.3.1)


def uid_set(uids: Sequence[int]) -> str:
    """A compact UID set, e.g. 1:3,7 (RFC 3501 §9 sequence-set)."""
    ordered = sorted(set(uids))
    ranges: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid != prev + 1:
            ranges.append(f"{start}:{prev}" if prev != start else str(start))
            start = uid
        prev = uid
    ranges.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(ranges)


class ImapClient:
    """One logged-in connection with one folder selected."""

    folder: FolderState  # as the last SELECT found it

    def __init__(self, mailbox: Mailbox, timeout: float = COMMAND_TIMEOUT) -> None:
        self.mailbox = mailbox
        self.timeout = timeout
        self.lost = asyncio.Event()
        context = ssl.create_default_context() if mailbox.tls else None
        self._imap = aioimaplib.IMAP4(
            host=mailbox.host,
            port=mailbox.port,
            timeout=timeout,
            conn_lost_cb=lambda _exc: self.lost.set(),
            ssl_context=context,
        )
        # A server reports new mail (`* N EXISTS`) inside the answer to
        # whatever command is running (RFC 3501 §7); aioimaplib drops it
        # unless IDLE is on. Seeing every untagged line keeps the news.
        self.news = False
        protocol = self._imap.protocol
        route_untagged = protocol._untagged_response

        def untagged(line: bytes) -> Any:
            if _PUSH_WORTH_A_SYNC.search(line.replace(b"* ", b"", 1)):
                self.news = True
            return route_untagged(line)

        protocol._untagged_response = untagged

    @classmethod
    async def open(cls, mailbox: Mailbox, timeout: float = COMMAND_TIMEOUT) -> ImapClient:
        """Connect, log in and select the folder; ImapError says which step failed."""
        client = cls(mailbox, timeout)
        try:
            await client._log_in()
        except BaseException:
            await client.close()
            raise
        return client

    async def _log_in(self) -> None:
        where = f"{self.mailbox.host}:{self.mailbox.port}"
        try:
            await self._imap.wait_hello_from_server()
        except ssl.SSLCertVerificationError as exc:
            raise ImapError(
                f"cannot connect to {where}: certificate verify failed "
                f"({exc.verify_message}); trust the CA that signed it in the system's "
                "store or in SSL_CERT_FILE"
            ) from exc
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            raise ImapError(f"cannot connect to {where}: {_describe(exc)}") from exc
        user = aioimaplib.quoted(self.mailbox.username)
        response = await self._command("LOGIN", self._imap.login(user, self.mailbox.password))
        if response.result != "OK":
            text = _text(response)
            raise ImapAuthenticationError(
                f"login as {self.mailbox.username} at {where} refused: {text}",
                temporary="[UNAVAILABLE]" in text.upper(),
            )
        # Capabilities grow after login (RFC 3501 §7.2.1): MOVE, UIDPLUS...
        await self._command("CAPABILITY", self._imap.protocol.capability())
        self.folder = await self.select()

    async def select(self) -> FolderState:
        folder = self.mailbox.folder
        response = await self._command("SELECT", self._imap.select(quote_mailbox(folder)))
        if response.result != "OK":
            raise ImapFolderError(f"cannot select folder {folder!r}: {_text(response)}")
        validity = None
        exists = 0
        for line in _lines(response):
            if match := _UIDVALIDITY.search(line):
                validity = int(match.group(1))
            if match := _EXISTS.match(line):
                exists = int(match.group(1))
        if validity is None:  # RFC 3501 §6.3.1: the server MUST send it
            raise ImapError(f"the server sent no UIDVALIDITY for folder {folder!r}")
        return FolderState(validity, exists, b"[READ-ONLY]" in _lines(response)[-1])

    async def folder_exists(self, folder: str) -> bool:
        """Whether another folder exists (STATUS, RFC 3501 §6.3.10)."""
        response = await self._command(
            "STATUS", self._imap.status(quote_mailbox(folder), "(MESSAGES)")
        )
        return bool(response.result == "OK")

    def has(self, capability: str) -> bool:
        return bool(self._imap.has_capability(capability))

    async def uids_after(self, uid: int, *, unmarked: bool = False) -> list[int]:
        """UIDs above `uid`, oldest first (without our keyword if `unmarked`).
        (`n:*` always matches the highest UID, even below n: RFC 3501 §6.4.8,
        hence the filter.)"""
        marked = f" NOT KEYWORD {IMPORTED_KEYWORD}" if unmarked else ""
        found = await self._search(f"UID {uid + 1}:*{marked}")
        return [u for u in found if u > uid]

    async def uids_up_to(self, uid: int, *, unmarked: bool = False) -> list[int]:
        """UIDs up to `uid` still in the folder (without our keyword if `unmarked`)."""
        if uid < 1:
            return []
        criteria = f"UID 1:{uid} NOT KEYWORD {FAILED_KEYWORD}"
        if unmarked:
            criteria += f" NOT KEYWORD {IMPORTED_KEYWORD}"
        return [u for u in await self._search(criteria) if u <= uid]

    async def present(self, uids: Sequence[int]) -> list[int]:
        """Which of `uids` are still in the folder."""
        if not uids:
            return []
        return await self._search(f"UID {uid_set(uids)}")

    async def fetch(self, uids: Sequence[int]) -> dict[int, bytes]:
        """Whole messages by UID, without setting \\Seen (BODY.PEEK[])."""
        if not uids:
            return {}
        response = await self._command(
            "FETCH", self._imap.uid("fetch", uid_set(uids), "(UID BODY.PEEK[])")
        )
        self._check(response, "FETCH")
        return _parse_fetch(_lines(response))

    async def mark_imported(self, uids: Sequence[int]) -> None:
        flags = f"(\\Seen {IMPORTED_KEYWORD})"
        response = await self._command(
            "STORE", self._imap.uid("store", uid_set(uids), "+FLAGS.SILENT", flags)
        )
        if response.result != "OK":  # a server without keywords: \Seen alone
            response = await self._command(
                "STORE", self._imap.uid("store", uid_set(uids), "+FLAGS.SILENT", "(\\Seen)")
            )
        self._check(response, "STORE")

    async def mark_failed(self, uids: Sequence[int]) -> None:
        """Flag messages we gave up (a server without keywords: left as they are)."""
        await self._command(
            "STORE", self._imap.uid("store", uid_set(uids), "+FLAGS.SILENT", f"({FAILED_KEYWORD})")
        )

    async def move(self, uids: Sequence[int], folder: str) -> None:
        target = quote_mailbox(folder)
        if self.has("MOVE"):
            response = await self._command("MOVE", self._imap.uid("move", uid_set(uids), target))
            self._check(response, f"MOVE to {folder!r}")
            return
        response = await self._command("COPY", self._imap.uid("copy", uid_set(uids), target))
        self._check(response, f"COPY to {folder!r}")
        await self.delete(uids)

    async def delete(self, uids: Sequence[int]) -> None:
        response = await self._command(
            "STORE", self._imap.uid("store", uid_set(uids), "+FLAGS.SILENT", "(\\Deleted)")
        )
        self._check(response, "STORE \\Deleted")
        if self.has("UIDPLUS"):  # only ours (RFC 4315 §2.1)
            response = await self._command("EXPUNGE", self._imap.uid("expunge", uid_set(uids)))
        else:
            response = await self._command("EXPUNGE", self._imap.expunge())
        self._check(response, "EXPUNGE")

    async def noop(self) -> None:
        self._check(await self._command("NOOP", self._imap.noop()), "NOOP")

    async def wait_for_news(self, seconds: float) -> None:
        """Return when the folder may have changed, or after `seconds` at most.

        With IDLE (RFC 2177), at the first push that reports a change
        (EXISTS, EXPUNGE); keep-alive pushes such as `* OK Still here` only
        renew the wait. Without IDLE, a NOOP after the wait. News that came
        during earlier commands returns at once.
        """
        deadline = asyncio.get_running_loop().time() + seconds
        while not self.news:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            if not self.has("IDLE"):
                await self._sleep_unless_lost(left)
                await self.noop()
                return
            await self._idle(left)

    async def _idle(self, seconds: float) -> None:
        """One IDLE command until the first push or `seconds`."""
        idle = await self._command("IDLE", self._imap.idle_start(timeout=seconds))
        try:
            await self._first_of(self._imap.wait_server_push(seconds + 5), seconds + 10)
        finally:
            if self._imap.has_pending_idle():
                self._imap.idle_done()
            await self._first_of(idle, self.timeout)

    async def close(self) -> None:
        """Log out if we can; never raises, never waits long."""
        try:
            if not self.lost.is_set() and self._imap.protocol is not None:
                await asyncio.wait_for(self._imap.logout(), 5)
        except Exception:  # closing a connection that may be broken
            pass
        transport = getattr(self._imap.protocol, "transport", None)
        if transport is not None:
            transport.close()

    async def _search(self, criteria: str) -> list[int]:
        response = await self._command("SEARCH", self._imap.uid_search(criteria, charset=None))
        self._check(response, "SEARCH")
        # aioimaplib hands the data of `* SEARCH 1 2 3` as `1 2 3`, then the
        # tagged response's text.
        uids: list[int] = []
        for line in _lines(response)[:-1]:
            words = line.removeprefix(b"SEARCH").split()
            if all(word.isdigit() for word in words):
                uids.extend(int(word) for word in words)
        return sorted(uids)

    async def _command(self, name: str, awaitable: Awaitable[T]) -> T:
        """Await an aioimaplib call with a deadline; the connection's loss ends it."""
        return await self._first_of(awaitable, self.timeout, name)

    async def _first_of(self, awaitable: Awaitable[T], timeout: float, name: str = "IDLE") -> T:
        task = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            lost.cancel()
        if task in done:
            try:
                return task.result()
            except (TimeoutError, aioimaplib.AioImapException, OSError) as exc:
                raise ImapError(f"{name} failed: {_describe(exc)}") from exc
        task.cancel()
        if self.lost.is_set():
            raise ImapError(f"the server closed the connection during {name}")
        raise ImapError(f"no answer to {name} within {timeout:.0f} s")

    async def _sleep_unless_lost(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.lost.wait(), seconds)
        except TimeoutError:
            return
        raise ImapError("the server closed the connection")

    def _check(self, response: Any, what: str) -> None:
        if response.result != "OK":
            raise ImapError(f"{what} refused: {_text(response)}")


def _lines(response: Any) -> list[bytes]:
    return [bytes(line) for line in response.lines]


def _text(response: Any) -> str:
    last = response.lines[-1] if response.lines else b""
    return bytes(last).decode("utf-8", "replace").strip() or str(response.result)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _parse_fetch(lines: list[bytes]) -> dict[int, bytes]:
    """UID → message from a UID FETCH (UID BODY.PEEK[]) answer.

    aioimaplib hands each response as its head line (`N FETCH (UID u BODY[] {size}`),
    the literal, then the rest (`)` or ` UID u)` when the server names the UID last).
    """
    messages: dict[int, bytes] = {}
    index = 0
    while index < len(lines):
        head = lines[index]
        if not (_FETCH_HEAD.match(head) and _LITERAL.search(head)) or index + 1 >= len(lines):
            index += 1
            continue
        body = lines[index + 1]
        tail = lines[index + 2] if index + 2 < len(lines) else b""
        match = _FETCH_UID.search(head) or _FETCH_UID.search(tail)
        if match:
            messages[int(match.group(1))] = body
        index += 3
    return messages
