"""A real, throwaway Dovecot IMAP server for the tests.

`Dovecot` writes its own configuration into a temporary folder (sockets, state,
log, a passwd-file of users and their Maildirs all live there) and runs
Debian's `/usr/sbin/dovecot -F -c CONFIG` on an ephemeral 127.0.0.1 port, with
plain IMAP and IDLE, so an importer can be tested against the server it will
meet in production. Options make it serve implicit TLS instead (`tls=True`:
a throwaway CA and a certificate for 127.0.0.1, the CA at `ca_path`) or
leave IDLE out of its capabilities (`idle=False`), as servers that must be
polled do, or keep Dovecot's own penalty for failed logins
(`auth_penalty=True`). The helpers (`append`, `uids`, `flags`, ...) go
through a real IMAP client (stdlib imaplib), never behind Dovecot's back,
except `change_uidvalidity` and `kick`, which ask `doveadm` as an
administrator would. The configuration, and what running as root needs,
is in `dovecot_config.py`.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from mailbridge.imap.names import quote_mailbox, unquote_mailbox
from tests.imap.certificates import ServerFiles, write_server_files
from tests.imap.dovecot_config import HOST, mail_account, render_config

DOVECOT = Path("/usr/sbin/dovecot")
DOVEADM = Path("/usr/bin/doveadm")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
CLIENT_TIMEOUT = 10.0
LOG_TAIL_LINES = 30
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
_FETCH_FLAGS = re.compile(rb"UID (\d+) FLAGS \(([^)]*)\)")  # Dovecot puts UID first
_STATUS_ITEM = re.compile(rb"([A-Z]+) (\d+)")
_LIST_LINE = re.compile(rb'^\([^)]*\) (?:NIL|"(?:[^"\\]|\\.)*") (.+)$')
_UNSAFE_CREDENTIAL = re.compile(r"[:\s]")


class DovecotError(RuntimeError):
    """Dovecot failed to start or stop, or an IMAP helper command failed."""


class Dovecot:
    """A throwaway Dovecot serving IMAP on 127.0.0.1, in a folder of its own.

    `users` maps names to passwords; `add_user` adds or changes one later, even
    while the server runs. The port is chosen free on the first `start()` and
    kept for every restart, as are the users and the mail. The folder is a new
    one in the system's temporary directory (a pytest `tmp_path` is closed to
    the unprivileged users Dovecot switches to under root); `close()` removes it.
    With `tls`, the port speaks implicit TLS only (IMAPS), with a certificate
    for 127.0.0.1 signed by a CA made for this server alone (`ca_path`); the
    helpers trust it. Without `idle`, no capability list offers IDLE. With
    `auth_penalty`, a failed login slows down later logins from 127.0.0.1 as
    Dovecot's defaults do (see `dovecot_config.py`).
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        tls: bool = False,
        idle: bool = True,
        auth_penalty: bool = False,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mb-dovecot-"))
        self.root.chmod(0o755)  # the mail and auth processes run as other users under root
        self.idle = idle
        self.auth_penalty = auth_penalty
        self._tls: ServerFiles | None = write_server_files(self.root / "tls", HOST) if tls else None
        self.config_path = self.root / "dovecot.conf"
        self.log_path = self.root / "dovecot.log"
        self.users_path = self.root / "users"
        self._users: dict[str, str] = {}
        self._port = 0
        self._process: subprocess.Popen[bytes] | None = None
        (self.root / "mail").mkdir(exist_ok=True)
        for name, password in (users or {}).items():
            self.add_user(name, password)

    # -- the server --------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise DovecotError("Dovecot has no port before its first start()")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    @property
    def tls(self) -> bool:
        return self._tls is not None

    @property
    def ca_path(self) -> Path:
        """The PEM certificate of the CA that signed this server's certificate."""
        if self._tls is None:
            raise DovecotError("this Dovecot serves plain IMAP: it has no CA")
        return self._tls.ca

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context that trusts this server's CA alone; None for plain IMAP."""
        return None if self._tls is None else ssl.create_default_context(cafile=self._tls.ca)

    @property
    def running(self) -> bool:
        return self._process is not None and not _exited(self._process.pid)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start Dovecot and return once it greets IMAP clients on its port."""
        if self.running:
            raise DovecotError("Dovecot is already running")
        first = not self._port
        for attempt in range(3):
            if first:
                self._port = _free_port()
            try:
                self._launch(timeout)
                return
            except DovecotError:
                # Another process may have taken the free port between our
                # probe and Dovecot's bind: a first start tries a new port.
                if not (first and attempt < 2 and "Address already in use" in self.log_tail()):
                    raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Shut Dovecot down (SIGTERM to it and its children): sessions get a BYE."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Stop Dovecot abruptly: SIGKILL to the master and every child, like a crash."""
        self._end(signal.SIGKILL, STOP_TIMEOUT)

    def restart(self, *, abrupt: bool = False) -> None:
        """Stop (or kill) and start again on the same port, with the same users and mail."""
        if abrupt:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        """Kill Dovecot and remove its folder."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of Dovecot's log and of its standard error."""
        text = ""
        for path in (self.log_path, self.root / "stderr.log"):
            if path.is_file():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def add_user(self, name: str, password: str) -> None:
        """Add a user or change a password; while Dovecot runs this takes up to a second."""
        if not name or _UNSAFE_CREDENTIAL.search(name) or _UNSAFE_CREDENTIAL.search(password):
            raise ValueError("user names and passwords may not contain ':' or whitespace")
        self._users[name] = password
        lines = "".join(f"{user}:{{PLAIN}}{secret}\n" for user, secret in self._users.items())
        temporary = self.users_path.with_suffix(".new")
        temporary.write_text(lines)
        temporary.chmod(0o644)  # read by the auth process, which runs as `dovecot` under root
        if self.users_path.exists():
            # Dovecot rereads the file when its mtime (in seconds) changes, and
            # looks at most once a second: make the change visible, then wait.
            stamp = max(int(time.time()), int(self.users_path.stat().st_mtime) + 1)
            os.utime(temporary, (stamp, stamp))
        temporary.replace(self.users_path)
        if self.running:
            time.sleep(1.01 - time.time() % 1)  # into the next second: Dovecot looks again

    @property
    def users(self) -> dict[str, str]:
        return dict(self._users)

    def _launch(self, timeout: float) -> None:
        self.config_path.write_text(
            render_config(
                self.root, self._port, tls=self._tls, idle=self.idle, auth_penalty=self.auth_penalty
            )
        )
        (self.root / "run" / "master.pid").unlink(missing_ok=True)  # stale after a kill()
        _give_mail_to(self.root / "mail", mail_account())
        with open(self.root / "stderr.log", "ab") as stderr:
            self._process = subprocess.Popen(
                [str(DOVECOT), "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _exited(self._process.pid):
                self.kill()  # reaps the master, and ends any child it left
                raise DovecotError(f"Dovecot exited on start-up:\n{self.log_tail()}")
            if _greets(self._port, self.ssl_context()):
                return
            time.sleep(0.01)
        self.kill()
        raise DovecotError(
            f"Dovecot did not greet on port {self._port} in {timeout}s:\n{self.log_tail()}"
        )

    def _end(self, signum: signal.Signals, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        # The master leads its own process group (start_new_session), and the
        # whole group is signalled, as systemd does at the end of a stop: the
        # master alone would wait a second for its children. The group is
        # signalled before the master is reaped, so its id cannot be reused.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        deadline = time.monotonic() + timeout
        while not _exited(process.pid):
            if time.monotonic() > deadline:
                signum = signal.SIGKILL
                os.killpg(process.pid, signum)
                deadline = time.monotonic() + timeout
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # children that outlived their master
        process.wait()
        self._process = None

    # -- IMAP helpers, through a real client ---------------------------------

    @contextlib.contextmanager
    def client(self, user: str) -> Iterator[imaplib.IMAP4]:
        """A logged-in imaplib client for `user`, logged out at the end."""
        context = self.ssl_context()
        connection = (
            imaplib.IMAP4(HOST, self.port, timeout=CLIENT_TIMEOUT)
            if context is None
            else imaplib.IMAP4_SSL(HOST, self.port, ssl_context=context, timeout=CLIENT_TIMEOUT)
        )
        try:
            connection.login(user, self._users[user])
            yield connection
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                connection.logout()

    def append(self, user: str, folder: str, raw: bytes, flags: Iterable[str] = ()) -> int:
        """Append a message and return its UID (from Dovecot's APPENDUID)."""
        flag_list = f"({' '.join(flags)})" if flags else None
        with self.client(user) as imap:
            answer = imap.append(quote_mailbox(folder), flag_list, None, raw)
        data = _lines(_ok(answer, "APPEND", folder))
        found = _APPENDUID.search(data[0] if data else b"")
        if found is None:
            raise DovecotError(f"APPEND to {folder!r} answered no APPENDUID: {data!r}")
        return int(found.group(2))

    def create_folder(self, user: str, folder: str) -> None:
        with self.client(user) as imap:
            _ok(imap.create(quote_mailbox(folder)), "CREATE", folder)

    def delete_folder(self, user: str, folder: str) -> None:
        """Delete a folder and the messages in it (other sessions on it are cut off)."""
        with self.client(user) as imap:
            _ok(imap.delete(quote_mailbox(folder)), "DELETE", folder)

    def folders(self, user: str) -> list[str]:
        with self.client(user) as imap:
            data = _lines(_ok(imap.list(), "LIST", ""))
        names = []
        for line in data:
            found = _LIST_LINE.match(line)
            if found is not None:
                names.append(unquote_mailbox(found.group(1)))
        return names

    def uids(self, user: str, folder: str) -> list[int]:
        """The UIDs in a folder, in ascending order (read-only: EXAMINE)."""
        with self._examined(user, folder) as imap:
            data = _lines(_ok(imap.uid("SEARCH", "ALL"), "UID SEARCH", folder))
        return sorted(int(uid) for line in data for uid in line.split())

    def flags(self, user: str, folder: str) -> dict[int, frozenset[str]]:
        """Each message's flags and keywords by UID, without the session-bound \\Recent."""
        with self._examined(user, folder) as imap:
            data = _lines(_ok(imap.uid("FETCH", "1:*", "(FLAGS)"), "UID FETCH", folder))
        found: dict[int, frozenset[str]] = {}
        for uid, names in (m.groups() for m in map(_FETCH_FLAGS.search, data) if m):
            found[int(uid)] = frozenset(n for n in names.decode().split() if n != "\\Recent")
        return found

    def message(self, user: str, folder: str, uid: int) -> bytes:
        """The raw bytes of one message, read without setting \\Seen."""
        with self._examined(user, folder) as imap:
            data = _ok(imap.uid("FETCH", str(uid), "(BODY.PEEK[])"), "UID FETCH", folder)
        for part in data:
            if isinstance(part, tuple) and isinstance(part[1], bytes):
                return part[1]
        raise DovecotError(f"no message with UID {uid} in {folder!r}")

    def message_count(self, user: str, folder: str) -> int:
        return self.status(user, folder)["MESSAGES"]

    def uidvalidity(self, user: str, folder: str) -> int:
        return self.status(user, folder)["UIDVALIDITY"]

    def status(self, user: str, folder: str) -> dict[str, int]:
        """STATUS (MESSAGES UIDNEXT UIDVALIDITY UNSEEN) of a folder."""
        with self.client(user) as imap:
            answer = imap.status(quote_mailbox(folder), "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
        data = _lines(_ok(answer, "STATUS", folder))
        items = data[0][data[0].rfind(b"(") :] if data else b""
        return {key.decode(): int(value) for key, value in _STATUS_ITEM.findall(items)}

    def change_uidvalidity(self, user: str, folder: str) -> int:
        """Give a folder a new UIDVALIDITY, its messages kept; return the new value.

        Done online with `doveadm mailbox update --uid-validity`, as an admin
        restoring a mailbox would: sessions that have the folder selected are
        told the state is inconsistent and disconnected (`* BYE`).
        """
        before = self.uidvalidity(user, folder)
        count = self.message_count(user, folder)
        wanted = before + 1 if before < 0xFFFFFFFF else 1
        self._doveadm("mailbox", "update", "-u", user, "--uid-validity", str(wanted), folder)
        after, kept = self.uidvalidity(user, folder), self.message_count(user, folder)
        if after != wanted or kept != count:
            raise DovecotError(
                f"UIDVALIDITY {before} -> {after} (wanted {wanted}), messages {count} -> {kept}"
            )
        return after

    def kick(self, user: str) -> None:
        """End every session of `user` (`doveadm kick`, as an administrator
        would): each gets `* BYE` and its connection is closed."""
        self._doveadm("kick", user)

    def refused_logins(self) -> int:
        """How many connections ended with a refused login, from Dovecot's log."""
        if not self.log_path.is_file():
            return 0
        return self.log_path.read_text(errors="replace").count("(auth failed,")

    def _doveadm(self, *arguments: str) -> None:
        command = [str(DOVEADM), "-c", str(self.config_path), *arguments]
        result = subprocess.run(command, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
        if result.returncode != 0:
            raise DovecotError(f"doveadm {arguments[0]} failed: {result.stderr.strip()}")

    @contextlib.contextmanager
    def _examined(self, user: str, folder: str) -> Iterator[imaplib.IMAP4]:
        with self.client(user) as imap:
            _ok(imap.select(quote_mailbox(folder), readonly=True), "EXAMINE", folder)
            yield imap


def _ok(answer: tuple[str, Sequence[object]], command: str, folder: str) -> Sequence[object]:
    """The data of a tagged OK; anything else raises, with the server's words."""
    kind, data = answer
    if kind != "OK":
        raise DovecotError(f"{command} {folder!r} answered {kind}: {data!r}")
    return data


def _lines(data: Sequence[object]) -> list[bytes]:
    return [item for item in data if isinstance(item, bytes)]


def _give_mail_to(folder: Path, owner: pwd.struct_passwd) -> None:
    if os.geteuid() == 0 and folder.stat().st_uid != owner.pw_uid:
        os.chown(folder, owner.pw_uid, owner.pw_gid)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _greets(port: int, context: ssl.SSLContext | None) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as connection:
            if context is None:
                return connection.recv(64).startswith(b"* OK")
            with context.wrap_socket(connection, server_hostname=HOST) as tls:
                return tls.recv(64).startswith(b"* OK")
    except OSError:  # ssl.SSLError too: not listening yet, or not handshaking yet
        return False


def _exited(pid: int) -> bool:
    """Whether a child has exited, without reaping it (its pid stays ours)."""
    try:
        status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return status is not None
