"""Route: which groups a message is for, by its envelope recipients.

As an MTA delivers, we go by RCPT TO, never by the To header (a Bcc to a
bound address must work; a To naming it without RCPT must not). Several bound
addresses of one group make one route, so one post. The IMAP door's
recipient is its binding, named `imap:NAME`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select

from feed.addresses import domain_of
from feed.bindings import Binding, ImapBinding
from feed.errors import InvalidInputError
from feed.groups import Group
from feed.policy import SenderPolicy, parse_policy
from mailbridge import replies
from mailbridge.pipeline.types import Reply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """A group the message goes to, and which recipients brought it there."""

    group_id: int
    group_slug: str
    recipients: tuple[str, ...]
    policy: SenderPolicy


@dataclass(frozen=True)
class RecipientCheck:
    """The RCPT-time answer for one address."""

    address: str
    reply: Reply
    binding_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.binding_id is not None


def normalize_recipient(address: str) -> str:
    """Lower-case, without angle brackets or surrounding space."""
    return address.strip().strip("<>").strip().lower()


# Built once: every RCPT and every delivery batch runs these.
_BINDING_BY_ADDRESS = select(Binding.id).where(Binding.address == bindparam("address"))
_BINDING_IN_DOMAIN = select(Binding.id).where(Binding.domain == bindparam("domain")).limit(1)
_BINDINGS = (
    select(Binding.address, Binding.sender_policy, Group.id, Group.slug)
    .join(Group)
    .where(Binding.address.in_(bindparam("addresses", expanding=True)))
)


_IMAP_BINDINGS = (
    select(ImapBinding.name, ImapBinding.sender_policy, Group.id, Group.slug)
    .join(Group)
    .where(ImapBinding.name.in_(bindparam("names", expanding=True)))
)
IMAP_RECIPIENT_PREFIX = "imap:"


def imap_recipient(binding_name: str) -> str:
    """The envelope recipient of a message imported through an IMAP binding."""
    return f"{IMAP_RECIPIENT_PREFIX}{binding_name}"


def check_recipient(conn: Connection, address: str, local_domains: Iterable[str]) -> RecipientCheck:
    """550 5.1.1 for an unknown local address, 550 5.7.1 for any other domain."""
    normalized = normalize_recipient(address)
    if "@" not in normalized:
        return RecipientCheck(normalized, replies.BAD_RECIPIENT_SYNTAX)
    binding_id = conn.execute(_BINDING_BY_ADDRESS, {"address": normalized}).scalar()
    if binding_id is not None:
        return RecipientCheck(normalized, replies.OK_RECIPIENT, binding_id)
    domain = domain_of(normalized)
    if domain in set(local_domains) or _is_bound_domain(conn, domain):
        return RecipientCheck(normalized, replies.UNKNOWN_RECIPIENT)
    return RecipientCheck(normalized, replies.RELAY_DENIED)


def _is_bound_domain(conn: Connection, domain: str) -> bool:
    return conn.execute(_BINDING_IN_DOMAIN, {"domain": domain}).first() is not None


def route_messages(
    conn: Connection, envelopes: Sequence[Sequence[str]]
) -> list[list[Route] | None]:
    """For each envelope, one `Route` per group in the order its recipients
    first name them; one query for a whole delivery batch. None for an
    envelope to defer (the rest of the batch goes on): one that reaches a
    binding whose row cannot be read (logged), or an IMAP binding removed
    while its message was on the way (the message stays in its mailbox)."""
    wanted = [list(dict.fromkeys(normalize_recipient(r) for r in rcpts)) for rcpts in envelopes]
    every = {address for addresses in wanted for address in addresses}
    mailboxes = {a for a in every if a.startswith(IMAP_RECIPIENT_PREFIX)}
    by_address: dict[str, _Bound] = {}
    if every - mailboxes:
        rows = conn.execute(_BINDINGS, {"addresses": sorted(every - mailboxes)}).all()
        by_address.update((r.address, _Bound(r.id, r.slug, r.sender_policy)) for r in rows)
    if mailboxes:
        names = sorted(a.removeprefix(IMAP_RECIPIENT_PREFIX) for a in mailboxes)
        rows = conn.execute(_IMAP_BINDINGS, {"names": names}).all()
        by_address.update(
            (imap_recipient(r.name), _Bound(r.id, r.slug, r.sender_policy)) for r in rows
        )
    return [_routes_or_none(addresses, by_address) for addresses in wanted]


def _routes_or_none(addresses: list[str], by_address: Mapping[str, _Bound]) -> list[Route] | None:
    try:
        routes = _routes(addresses, by_address)
    except InvalidInputError:
        log.exception("cannot route a message to %s", ", ".join(addresses))
        return None
    if not routes and any(a.startswith(IMAP_RECIPIENT_PREFIX) for a in addresses):
        return None
    return routes


@dataclass(frozen=True)
class _Bound:
    group_id: int
    group_slug: str
    policy: str


def _routes(addresses: list[str], by_address: Mapping[str, _Bound]) -> list[Route]:
    routes: dict[int, Route] = {}
    for address in addresses:
        bound = by_address.get(address)
        if bound is None:
            continue
        existing = routes.get(bound.group_id)
        if existing is not None:
            recipients = (*existing.recipients, address)
            routes[bound.group_id] = Route(
                bound.group_id, bound.group_slug, recipients, existing.policy
            )
        else:
            policy = _policy(bound.policy)
            routes[bound.group_id] = Route(bound.group_id, bound.group_slug, (address,), policy)
    return list(routes.values())


def _policy(text: str) -> SenderPolicy:
    try:
        return parse_policy(text)
    except ValueError as exc:  # a bad row must not let everyone in
        raise InvalidInputError(f"binding has an invalid sender policy: {exc}") from exc
