"""Route: which groups a message is for, by its envelope recipients.

As an MTA delivers, we go by RCPT TO, never by the To header (a Bcc to a
bound address must work; a To naming it without RCPT must not). Several bound
addresses of one group make one route, so one post, but each keeps its own
binding's sender policy. The IMAP door's recipient is its binding, named
`imap:NAME`. `postmaster` at any local domain (or unqualified) is accepted
for the administrators (RFC 5321 §4.5.1), never for a group.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
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
    """A group the message goes to, which recipients brought it there, and
    the sender policy of each recipient's binding (in the same order)."""

    group_id: int
    group_slug: str
    recipients: tuple[str, ...]
    policies: tuple[SenderPolicy, ...]

    def only(self, recipients: Collection[str]) -> Route:
        """The same route for some of its recipients."""
        kept = [
            (r, p) for r, p in zip(self.recipients, self.policies, strict=True) if r in recipients
        ]
        return Route(
            self.group_id, self.group_slug, tuple(r for r, _ in kept), tuple(p for _, p in kept)
        )


@dataclass(frozen=True)
class RecipientCheck:
    """The RCPT-time answer for one address."""

    address: str
    reply: Reply
    binding_id: int | None = None
    postmaster: bool = False

    @property
    def ok(self) -> bool:
        return self.binding_id is not None or self.postmaster


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
POSTMASTER = "postmaster"


def imap_recipient(binding_name: str) -> str:
    """The envelope recipient of a message imported through an IMAP binding."""
    return f"{IMAP_RECIPIENT_PREFIX}{binding_name}"


def check_recipient(conn: Connection, address: str, local_domains: Iterable[str]) -> RecipientCheck:
    """550 5.1.1 for an unknown local address, 550 5.7.1 for any other domain."""
    normalized = normalize_recipient(address)
    if normalized == POSTMASTER:  # RFC 5321 §4.5.1: accepted without a domain
        return RecipientCheck(normalized, replies.OK_RECIPIENT, postmaster=True)
    if "@" not in normalized:
        return RecipientCheck(normalized, replies.BAD_RECIPIENT_SYNTAX)
    binding_id = conn.execute(_BINDING_BY_ADDRESS, {"address": normalized}).scalar()
    if binding_id is not None:
        return RecipientCheck(normalized, replies.OK_RECIPIENT, binding_id)
    if not _is_local_domain(conn, domain_of(normalized), local_domains):
        return RecipientCheck(normalized, replies.RELAY_DENIED)
    if normalized.rpartition("@")[0] == POSTMASTER:
        return RecipientCheck(normalized, replies.OK_RECIPIENT, postmaster=True)
    return RecipientCheck(normalized, replies.UNKNOWN_RECIPIENT)


def postmaster_recipients(
    conn: Connection, rcpts: Iterable[str], local_domains: Iterable[str]
) -> tuple[str, ...]:
    """The envelope's recipients that are the postmaster of a local domain
    (with no binding of their own: a binding wins), normalised."""
    found = []
    for address in dict.fromkeys(normalize_recipient(r) for r in rcpts):
        local, _, domain = address.rpartition("@")
        if address == POSTMASTER or (
            local == POSTMASTER
            and _is_local_domain(conn, domain, local_domains)
            and conn.execute(_BINDING_BY_ADDRESS, {"address": address}).first() is None
        ):
            found.append(address)
    return tuple(found)


def _is_local_domain(conn: Connection, domain: str, local_domains: Iterable[str]) -> bool:
    """Ours: the mail domain or a domain some binding is in."""
    if domain in set(local_domains):
        return True
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
        policy = _policy(bound.policy)
        existing = routes.get(bound.group_id)
        recipients, policies = (existing.recipients, existing.policies) if existing else ((), ())
        routes[bound.group_id] = Route(
            bound.group_id, bound.group_slug, (*recipients, address), (*policies, policy)
        )
    return list(routes.values())


def _policy(text: str) -> SenderPolicy:
    try:
        return parse_policy(text)
    except ValueError as exc:  # a bad row must not let everyone in
        raise InvalidInputError(f"binding has an invalid sender policy: {exc}") from exc
