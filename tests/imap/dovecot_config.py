"""The configuration of a throwaway Dovecot: nothing is read from /etc/dovecot.

Choices, and why:
- Dovecot refuses mail access as uid 0, so as root the mail processes run as
  `nobody` and the internal and login processes as the package's own
  `dovecot` and `dovenull` users; as anyone else, everything runs as that user
  and nothing chroots (only root may).
- Plain IMAP on 127.0.0.1 only (`ssl = no`, `disable_plaintext_auth = no`: the
  Dovecot 2.3 names; 2.4 renamed the latter `auth_allow_cleartext`).
- No authentication penalty and no failure delay: a binding with a wrong
  password must not slow down the others logging in from the same address.
- `mail_max_userip_connections` raised: dozens of bindings may share a user.
- `mailbox_idle_check_interval = 1 secs`: IDLE notices new mail within a
  second even where inotify is missing; `mail_fsync = never`: throwaway data.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

HOST = "127.0.0.1"


def render_config(root: Path, port: int) -> str:
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
    return f"""\
# Written by tests/imap/dovecot.py for one throwaway test server.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = mb-dovecot-{port}
protocols = imap
listen = {HOST}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal_user}
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
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
# No authentication penalty: a binding with a wrong password must not slow
# down the logins of the others from the same 127.0.0.1 (auth finds no socket).
service anvil {{
  unix_listener anvil-auth-penalty {{
    path = anvil-auth-penalty-disabled
  }}
}}
{chroots}"""


def mail_account() -> pwd.struct_passwd:
    """Who owns the mail: Dovecot refuses mail access as uid 0."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
