"""The configuration of a throwaway Dovecot: nothing is read from /etc/dovecot.

Choices, and why:
- Dovecot refuses mail access as uid 0, so as root the mail processes run as
  `nobody` and the internal and login processes as the package's own
  `dovecot` and `dovenull` users; as anyone else, everything runs as that user
  and nothing chroots (only root may).
- Plain IMAP on 127.0.0.1 only (`ssl = no`, `disable_plaintext_auth = no`: the
  Dovecot 2.3 names; 2.4 renamed the latter `auth_allow_cleartext`); or, with
  `tls`, implicit TLS only (`ssl = required`, the plain listener off, the
  imaps listener on the port; the certificate files from `certificates.py`).
- With `idle=False`, no IDLE: `imap_capability` replaces the whole list (a
  leading `+` could only add), so it is Dovecot 2.3's post-login list without
  IDLE. imap-login then advertises the same list before login too (plus
  AUTH=...), so neither capability list offers IDLE.
- No authentication penalty and no failure delay by default, so that tests
  of wrong passwords run fast; with `auth_penalty`, Dovecot's own defaults
  instead, as a production server has them: a refused login is answered
  after `auth_failure_delay` (2 s), and for 15 s after it every login from
  the same address waits 4 s or more (the anvil penalty, reset by a login
  that succeeds), whoever logs in.
- `mail_max_userip_connections` raised: dozens of bindings may share a user.
- `mailbox_idle_check_interval = 1 secs`: IDLE notices new mail within a
  second even where inotify is missing; `mail_fsync = never`: throwaway data.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

from tests.imap.certificates import ServerFiles

HOST = "127.0.0.1"
# What Dovecot 2.3 (Debian's 2.3.19) advertises after login, IDLE left out.
CAPABILITY_WITHOUT_IDLE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
    "STATUS=SIZE SAVEDATE LITERAL+ NOTIFY"
)
NO_FAILURE_DELAY = "auth_failure_delay = 0\n"
# The auth process finds no penalty socket, so it keeps no penalty at all.
NO_PENALTY = """\
service anvil {
  unix_listener anvil-auth-penalty {
    path = anvil-auth-penalty-disabled
  }
}
"""


def render_config(
    root: Path,
    port: int,
    *,
    tls: ServerFiles | None = None,
    idle: bool = True,
    auth_penalty: bool = False,
) -> str:
    """The whole configuration: nothing is read from /etc/dovecot."""
    mail_user = mail_account()
    if os.geteuid() == 0:
        internal_user, internal_group, login_user = "dovecot", "dovecot", "dovenull"
        chroots = ""
    else:
        internal_user = login_user = mail_user.pw_name
        internal_group = grp.getgrgid(mail_user.pw_gid).gr_name
        # Only root may chroot: the login processes and anvil stay in place.
        chroots = "".join(
            f"service {name} {{\n  chroot =\n}}\n" for name in ("imap-login", "anvil")
        )
    if tls is None:
        ssl = "ssl = no"
        plain_port, tls_port, tls_listener = port, 0, ""
    else:
        ssl = f"ssl = required\nssl_cert = <{tls.certificate}\nssl_key = <{tls.key}"
        plain_port, tls_port, tls_listener = 0, port, f"\n    address = {HOST}\n    ssl = yes"
    capability = "" if idle else f"imap_capability = {CAPABILITY_WITHOUT_IDLE}\n"
    failure_delay, penalty = ("", "") if auth_penalty else (NO_FAILURE_DELAY, NO_PENALTY)
    return f"""\
# Written by tests/imap/dovecot.py for one throwaway test server.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = mb-dovecot-{port}
protocols = imap
listen = {HOST}
{ssl}
{capability}disable_plaintext_auth = no
auth_mechanisms = plain login
{failure_delay}default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 1000
mailbox_idle_check_interval = 1 secs
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {plain_port}
  }}
  inet_listener imaps {{
    port = {tls_port}{tls_listener}
  }}
}}
{penalty}{chroots}"""


def mail_account() -> pwd.struct_passwd:
    """Who owns the mail: Dovecot refuses mail access as uid 0."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
