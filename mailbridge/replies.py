"""SMTP replies, named, with RFC 3463 enhanced status codes."""

from __future__ import annotations

from mailbridge.pipeline.types import Reply

OK_RECIPIENT = Reply(250, "2.1.5", "Recipient OK")
OK_QUEUED = Reply(250, "2.0.0", "Message accepted")
OK_IGNORED = Reply(250, "2.0.0", "Message received")  # bounce, auto-reply, duplicate
UNKNOWN_RECIPIENT = Reply(550, "5.1.1", "No such recipient here")
RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied")
SENDER_REFUSED = Reply(550, "5.7.1", "Sender not allowed to post here")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
TOO_BIG = Reply(552, "5.3.4", "Message too big for this system")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
TEMPORARY_FAILURE = Reply(451, "4.3.0", "Temporary local problem, please try again later")
OK_SENDER = Reply(250, "2.1.0", "Sender OK")
# RFC 5321 §4.5.3.1.4: command lines stay limited (512 octets) where data lines do not.
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
# RFC 3463 4.3.1, mail system full: the budget of bytes in flight.
NO_ROOM_NOW = Reply(452, "4.3.1", "Too much mail in progress, please try again later")
NO_ROOM_FOR_DATA = Reply(451, "4.3.1", "Too much mail in progress, please try again later")

# Connection limits (mailbridge/limits.py, mailbridge/sessions.py): 421 and
# the connection is closed (RFC 5321 §3.8).
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_FROM_CLIENT = Reply(421, "4.7.0", "Too many connections from your address")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing the connection")
IDLE_WHILE_FULL = Reply(421, "4.4.2", "Idle while the server is full, closing the connection")
SESSION_EXPIRED = Reply(421, "4.4.2", "Session time limit reached, closing the connection")
DATA_TOO_SLOW = Reply(421, "4.4.2", "Message data arriving too slowly, closing the connection")
