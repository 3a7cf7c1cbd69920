"""IMAP sync cursors, moved in the delivery's own transaction.

A binding's cursor is the highest UID (under one UIDVALIDITY) such that
every message up to it is settled: posted, refused, ignored or given up. It
moves in the transaction that commits those messages' rows, so a crash
either keeps both or neither, and no message is imported twice or lost
(RFC 3501 §2.3.1.1: UIDs only grow within a UIDVALIDITY).

The first message that fails (a temporary failure) stops the cursor; its
attempts are counted on the binding, and the IMAP door gives it up after a
bounded number (`give_up`), recording it in the inbound log with its raw
bytes, so one bad message never blocks the folder for good.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Connection, bindparam, case, or_, update

from feed.bindings import ImapBinding
from mailbridge.pipeline.types import MailboxOrigin, Outcome, RawMessage


class _Report(Protocol):
    @property
    def outcomes(self) -> dict[str, Outcome]: ...


def advance_cursors(
    conn: Connection, raws: Sequence[RawMessage], reports: Sequence[_Report]
) -> None:
    """Move each mailbox's cursor over the batch's settled messages, in UID order."""
    by_folder: dict[tuple[int, int], list[tuple[int, bool]]] = defaultdict(list)
    for raw, report in zip(raws, reports, strict=True):
        if raw.origin is not None:
            deferred = any(o.deferred for o in report.outcomes.values())
            by_folder[(raw.origin.binding_id, raw.origin.uidvalidity)].append(
                (raw.origin.uid, deferred)
            )
    for (binding_id, uidvalidity), uids in by_folder.items():
        ordered = sorted(uids)
        settled, failed = _settled_prefix(ordered)
        if settled is not None:
            settle(conn, MailboxOrigin(binding_id, uidvalidity, settled), ordered[0][0])
        if failed is not None:
            count_attempt(conn, MailboxOrigin(binding_id, uidvalidity, failed))


def count_attempts(conn: Connection, raws: Sequence[RawMessage]) -> None:
    """An attempt for each mailbox message of a batch whose transaction failed."""
    for raw in raws:
        if raw.origin is not None:
            count_attempt(conn, raw.origin)


def count_attempt(conn: Connection, failed: MailboxOrigin) -> None:
    """One more failed attempt at a message (unless a lower UID is failing)."""
    params = {"binding": failed.binding_id, "validity": failed.uidvalidity, "uid": failed.uid}
    conn.execute(_COUNT_ATTEMPT, params)


def settle(conn: Connection, upto: MailboxOrigin, first: int | None = None) -> None:
    """Every message of the folder from `first` (default: `upto.uid`) to
    `upto.uid` is settled: the cursor moves to `upto.uid`, unless a message
    below `first` is still failing (a later chunk of the same pass)."""
    params = {"binding": upto.binding_id, "validity": upto.uidvalidity, "uid": upto.uid}
    conn.execute(_ADVANCE, {**params, "first": upto.uid if first is None else first})


def _settled_prefix(uids: list[tuple[int, bool]]) -> tuple[int | None, int | None]:
    """The last UID before the first deferred one, and that deferred UID."""
    settled = None
    for uid, deferred in uids:
        if deferred:
            return settled, uid
        settled = uid
    return settled, None


_WHERE_FOLDER = (
    ImapBinding.id == bindparam("binding"),
    ImapBinding.uidvalidity == bindparam("validity"),
)
# Never backwards (a late batch cannot undo a later one), and never over a
# failing message: only a batch that starts at or before it moves past it.
# The failing mark is cleared only when the cursor passes it.
_PASSED = ImapBinding.stuck_uid <= bindparam("uid")
_ADVANCE = (
    update(ImapBinding)
    .where(
        *_WHERE_FOLDER,
        ImapBinding.last_uid < bindparam("uid"),
        or_(ImapBinding.stuck_uid.is_(None), ImapBinding.stuck_uid >= bindparam("first")),
    )
    .values(
        last_uid=bindparam("uid"),
        stuck_uid=case((_PASSED, None), else_=ImapBinding.stuck_uid),
        stuck_attempts=case((_PASSED, 0), else_=ImapBinding.stuck_attempts),
    )
)
# Only the lowest failing UID above the cursor is counted: the one that
# holds it (a late count for a UID the cursor has passed is void).
_COUNT_ATTEMPT = (
    update(ImapBinding)
    .where(
        *_WHERE_FOLDER,
        ImapBinding.last_uid < bindparam("uid"),
        or_(ImapBinding.stuck_uid.is_(None), ImapBinding.stuck_uid >= bindparam("uid")),
    )
    .values(
        stuck_attempts=case(
            (ImapBinding.stuck_uid == bindparam("uid"), ImapBinding.stuck_attempts + 1),
            else_=1,
        ),
        stuck_uid=bindparam("uid"),
    )
)
